"""GPUs: which are present, how much of their memory is free, and how many of a model's layers to put there.

Detection asks the driver's own tools (``nvidia-smi`` for NVIDIA, ``vulkaninfo`` for Vulkan) and honours
``CUDA_VISIBLE_DEVICES`` as the CUDA runtime does: only the listed devices, in the listed order. ``/proc/driver/nvidia``
alone says a GPU is there without saying how much memory is free; then the engine's own fitting decides.

The offload plan follows Ollama's rule: keep a reserve on each device for the driver, then the compute graph, then
put whole layers, each with its share of the KV cache, on the devices while they fit; everything else runs on the
CPU. llama.cpp's ``-ngl N`` puts the *last* N layers on GPUs, the output layer counting as the last one, so the plan
counts the same layers llama.cpp will place. ``num_gpu`` (a Modelfile parameter or request option) overrides it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from corral.store.gguf_info import GGUFInfo

MIB = 1 << 20
# What a device keeps for itself beyond the model: the CUDA context, cuBLAS workspaces, the driver's own allocations.
# Ollama reserves about 457 MiB per CUDA device; a round 512 MiB leaves the same margin for Vulkan drivers.
DEVICE_RESERVE = 512 * MIB


@dataclass(frozen=True)
class Device:
    """One GPU as the engine will number it (after ``CUDA_VISIBLE_DEVICES``)."""

    backend: str  # "cuda" or "vulkan"
    index: int
    name: str
    id: str = ""  # NVIDIA's UUID (GPU-...), a PCI address, or ""
    total: int | None = None  # bytes; None where the tool does not say
    free: int | None = None


# -- detection --------------------------------------------------------------------------------------------------------

_NVIDIA_QUERY = ["--query-gpu=index,uuid,name,memory.total,memory.free", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str) -> list[Device]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.free --format=csv,noheader,nounits`` (MiB)."""
    devices = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        index, uuid, *name_parts, total, free = parts
        devices.append(Device("cuda", int(index), ",".join(name_parts), uuid, _mib(total), _mib(free)))
    return devices


def _mib(text: str) -> int | None:
    try:
        return int(float(text) * MIB)
    except ValueError:  # "[N/A]"
        return None


def visible_cuda(devices: list[Device], value: str | None) -> list[Device]:
    """The devices ``CUDA_VISIBLE_DEVICES`` leaves, renumbered in its order as the CUDA runtime does.

    Unset: all. Empty or an invalid entry: the runtime stops at the first entry it cannot match, so the devices
    before it. Entries are indices or UUIDs (or a unique UUID prefix, ``GPU-8f2a``)."""
    if value is None:
        return devices
    chosen: list[Device] = []
    for raw in value.split(","):
        entry = raw.strip()
        match: Device | None = None
        if entry.isdigit():
            match = next((d for d in devices if d.index == int(entry)), None)
        elif entry:
            hits = [d for d in devices if d.id and (d.id == entry or d.id.startswith(entry))]
            match = hits[0] if len(hits) == 1 else None
        if match is None or match in chosen:
            break
        chosen.append(match)
    return [Device(d.backend, i, d.name, d.id, d.total, d.free) for i, d in enumerate(chosen)]


def nvidia_devices() -> list[Device]:
    """NVIDIA GPUs with their free memory (nvidia-smi), else bare presence (/proc/driver/nvidia/gpus)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    tool = shutil.which("nvidia-smi")
    if tool:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([tool, *_NVIDIA_QUERY], capture_output=True, text=True, timeout=10, check=True)
            return visible_cuda(parse_nvidia_smi(out.stdout), visible)
    proc = Path("/proc/driver/nvidia/gpus")
    with contextlib.suppress(OSError):
        found = [Device("cuda", i, "NVIDIA GPU", p.name) for i, p in enumerate(sorted(proc.iterdir()))]
        return visible_cuda(found, visible)
    return []


def parse_vulkaninfo(text: str) -> list[Device]:
    """``vulkaninfo --summary``: one device per ``GPUn:`` block; CPU implementations (llvmpipe) are left out."""
    devices: list[Device] = []
    name, kind = "", ""
    for line in [*text.splitlines(), "GPU_END:"]:
        stripped = line.strip()
        if re.match(r"^GPU(\d+|_END):$", stripped):
            if name and "CPU" not in kind:
                devices.append(Device("vulkan", len(devices), name))
            name, kind = "", ""
            continue
        key, _, value = stripped.partition("=")
        if key.strip() == "deviceName":
            name = value.strip()
        elif key.strip() == "deviceType":
            kind = value.strip()
    return devices


def vulkan_devices() -> list[Device]:
    tool = shutil.which("vulkaninfo")
    if not tool:
        return []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([tool, "--summary"], capture_output=True, text=True, timeout=10, check=True)
        return parse_vulkaninfo(out.stdout)
    return []


_cache: dict[str, tuple[float, list[Device]]] = {}


def detect(backend: str, max_age: float = 2.0) -> list[Device]:
    """The devices of ``backend`` (``cuda`` or ``vulkan``); asked of the driver at most every ``max_age`` seconds."""
    hit = _cache.get(backend)
    if hit is not None and time.monotonic() - hit[0] < max_age:
        return hit[1]
    found = nvidia_devices() if backend == "cuda" else vulkan_devices() if backend == "vulkan" else []
    _cache[backend] = (time.monotonic(), found)
    return found


# -- the offload plan -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLayers:
    """What placing a model costs, layer by layer."""

    blocks: tuple[int, ...]  # weight bytes of each repeating block, in order
    output: int  # the output layer: final norm and the LM head (the token embedding when they are tied)
    kv_per_block: int  # KV cache bytes per block, every slot together
    graph: int  # compute buffer on a device that holds layers


def model_layers(info: GGUFInfo, num_ctx_total: int, num_batch: int, kv_bytes_per_block: int) -> ModelLayers:
    """A GGUF's layer sizes from its tensor table, and a compute-graph estimate for this context and batch."""
    n_blocks = info.block_count
    blocks = [0] * n_blocks
    output = 0
    embedding = 0
    for t in info.tensor_infos:
        size = t.n_bytes or 0
        match = re.match(r"^blk\.(\d+)\.", t.name)
        if match and int(match.group(1)) < n_blocks:
            blocks[int(match.group(1))] += size
        elif t.name.startswith(("output", "output_norm")):
            output += size
        elif t.name == "token_embd.weight":
            embedding = size
    if not any(t.name == "output.weight" for t in info.tensor_infos):
        output += embedding  # tied embeddings: the engine copies the token embedding to the device as the LM head
    embd = info.embedding_length or 4096
    heads = info.head_count or 32
    vocab = info.array_length("tokenizer.ggml.tokens") or 32000
    ubatch = min(num_batch, 512)
    # Activations of one micro-batch (a few hidden-size vectors and the logits) and, without flash attention, the
    # attention scores of every head against the whole cache: the two terms that dominate llama.cpp's buffer.
    graph = 4 * ubatch * (4 * embd + vocab) + 4 * ubatch * num_ctx_total * heads
    return ModelLayers(tuple(blocks), output, kv_bytes_per_block, graph)


@dataclass(frozen=True)
class Offload:
    """How many layers go to GPUs (llama-server's ``-ngl``) and how they split across devices."""

    layers: int  # of total_layers; the output layer counts as one
    total_layers: int
    per_device: tuple[int, ...]  # layers on each device, in the engine's device order
    size_vram: int  # bytes placed on GPUs: weights, their KV cache, the compute graph of each used device
    size: int  # bytes in all, CPU and GPU

    @property
    def tensor_split(self) -> str:
        """``--tensor-split``: the layer counts per device (llama.cpp normalises them)."""
        return ",".join(str(n) for n in self.per_device)

    @property
    def full(self) -> bool:
        return self.layers == self.total_layers


def _costs(model: ModelLayers, k: int) -> list[int]:
    """The bytes of the last ``k`` layers in llama.cpp's device order: the last blocks ascending, then the output."""
    n = len(model.blocks)
    chosen = [b + model.kv_per_block for b in model.blocks[max(n - (k - 1), 0):]] if k > 1 else []
    return [*chosen, model.output] if k >= 1 else []


def _pack(costs: list[int], room: list[int]) -> list[int] | None:
    """Fill devices in order with consecutive layers; the count on each, or None when they do not all fit."""
    counts = [0] * len(room)
    device, left = 0, room[0] if room else 0
    for cost in costs:
        while device < len(room) and cost > left:
            device += 1
            left = room[device] if device < len(room) else 0
        if device >= len(room):
            return None
        counts[device] += 1
        left -= cost
    return counts


def plan(devices: list[Device], model: ModelLayers, num_gpu: int = -1, reserve: int = DEVICE_RESERVE,
         ) -> Offload | None:
    """The layers to offload. None when a device's free memory is unknown: the engine then fits them itself.

    ``num_gpu >= 0`` is the user's count, split over the devices in proportion to their free memory."""
    total_layers = len(model.blocks) + 1
    weights = sum(model.blocks) + model.output
    size = weights + model.kv_per_block * len(model.blocks) + model.graph
    if not devices:
        return Offload(0, total_layers, (), 0, size)
    if any(d.free is None for d in devices):
        return None
    room = [max((d.free or 0) - reserve - model.graph, 0) for d in devices]
    if num_gpu >= 0:
        k = min(num_gpu, total_layers)
        weights_of_room = room if sum(room) > 0 else [1] * len(devices)
        per_device = _proportional(k, weights_of_room)
    else:
        k, per_device = 0, [0] * len(devices)
        for candidate in range(total_layers, 0, -1):
            counts = _pack(_costs(model, candidate), room)
            if counts is not None:
                k, per_device = candidate, counts
                break
    used = sum(1 for n in per_device if n)
    size_vram = sum(_costs(model, k)) + used * model.graph if k else 0
    return Offload(k, total_layers, tuple(per_device), size_vram, size)


def _proportional(k: int, weights: list[int]) -> list[int]:
    """``k`` split in proportion to ``weights`` (largest remainders)."""
    total = sum(weights)
    exact = [k * w / total for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)[:k - sum(counts)]:
        counts[i] += 1
    return counts
