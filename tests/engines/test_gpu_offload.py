"""GPU detection and the layer-offload plan, on simulated device reports (no GPU is needed, or used).

The reports are the text ``nvidia-smi`` and ``vulkaninfo --summary`` print; the plans are checked against what
llama.cpp does with ``-ngl N``: the last N layers go to GPUs, the output layer counting as the last one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli.views import processor
from corral.engines import gpu
from corral.engines.gpu import MIB, Device, ModelLayers
from corral.store.gguf_info import read_gguf_info
from tests.conftest import SMOL_FILE, bundled_file

GIB = 1 << 30

NVIDIA_SMI = """\
0, GPU-8f2a61c4-1d2e-4c3b-9a7f-2b1f0e6c9d11, NVIDIA GeForce RTX 4090, 24564, 23012
1, GPU-11aa22bb-33cc-44dd-55ee-66ff77889900, NVIDIA RTX A2000 12GB, 12282, 11900
"""

VULKANINFO = """\
==========
VULKANINFO
==========

Devices:
========
GPU0:
\tapiVersion         = 1.3.255
\tdriverVersion      = 23.3.1
\tvendorID           = 0x1002
\tdeviceID           = 0x73bf
\tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
\tdeviceName         = AMD Radeon RX 6800 XT (RADV NAVI21)
GPU1:
\tapiVersion         = 1.3.255
\tdeviceType         = PHYSICAL_DEVICE_TYPE_CPU
\tdeviceName         = llvmpipe (LLVM 15.0.6, 256 bits)
"""


def model(blocks: int = 10, block: int = 100 * MIB, output: int = 50 * MIB, kv: int = 10 * MIB,
          graph: int = 200 * MIB) -> ModelLayers:
    return ModelLayers(tuple([block] * blocks), output, kv, graph)


def cuda(free_gib: float, index: int = 0, name: str = "GPU") -> Device:
    free = int(free_gib * GIB)
    return Device("cuda", index, name, f"GPU-{index}", total=free, free=free)


def test_nvidia_smi_report_is_read_in_mib() -> None:
    devices = gpu.parse_nvidia_smi(NVIDIA_SMI + "garbage line\n")
    assert [(d.index, d.name) for d in devices] == [(0, "NVIDIA GeForce RTX 4090"), (1, "NVIDIA RTX A2000 12GB")]
    assert devices[0].free == 23012 * MIB and devices[0].total == 24564 * MIB
    assert devices[1].id.startswith("GPU-11aa22bb")
    assert gpu.parse_nvidia_smi("0, GPU-x, Tesla T4, [N/A], [N/A]")[0].free is None


def test_cuda_visible_devices_selects_and_renumbers_as_the_runtime_does() -> None:
    devices = gpu.parse_nvidia_smi(NVIDIA_SMI)
    assert gpu.visible_cuda(devices, None) == devices
    only_second = gpu.visible_cuda(devices, "1")
    assert [(d.index, d.name) for d in only_second] == [(0, "NVIDIA RTX A2000 12GB")]
    swapped = gpu.visible_cuda(devices, "1,0")
    assert [d.name for d in swapped] == ["NVIDIA RTX A2000 12GB", "NVIDIA GeForce RTX 4090"]
    assert [d.index for d in swapped] == [0, 1]
    by_uuid_prefix = gpu.visible_cuda(devices, "GPU-8f2a")
    assert [d.name for d in by_uuid_prefix] == ["NVIDIA GeForce RTX 4090"]
    assert gpu.visible_cuda(devices, "") == []
    assert gpu.visible_cuda(devices, "-1") == []
    # the runtime stops at the first entry it cannot use
    assert [d.name for d in gpu.visible_cuda(devices, "0,7,1")] == ["NVIDIA GeForce RTX 4090"]


def test_vulkaninfo_summary_lists_real_gpus_only() -> None:
    devices = gpu.parse_vulkaninfo(VULKANINFO)
    assert [(d.backend, d.index, d.name) for d in devices] == [("vulkan", 0, "AMD Radeon RX 6800 XT (RADV NAVI21)")]
    assert devices[0].free is None  # vulkaninfo does not say: the engine fits the layers itself
    assert gpu.plan(devices, model()) is None


def test_everything_fits_on_a_big_gpu() -> None:
    m = model()
    plan = gpu.plan([cuda(24)], m)
    assert plan is not None
    assert plan.layers == plan.total_layers == 11 and plan.full
    assert plan.per_device == (11,)
    assert plan.size_vram == 10 * (100 + 10) * MIB + 50 * MIB + 200 * MIB == plan.size
    assert processor(plan.size, plan.size_vram) == "100% GPU"


def test_a_small_gpu_takes_the_last_layers_and_the_output_layer() -> None:
    m = model()
    # room for the graph, the output layer and four blocks with their KV cache: 512 reserve + 200 graph + 50 + 4*110
    free = (512 + 200 + 50 + 4 * 110 + 5) * MIB
    plan = gpu.plan([Device("cuda", 0, "small", free=free, total=free)], m)
    assert plan is not None
    assert plan.layers == 5 and not plan.full  # -ngl 5: blocks 6..9 and the output layer
    assert plan.size_vram == (4 * 110 + 50 + 200) * MIB
    assert plan.size == (10 * 110 + 50 + 200) * MIB
    assert processor(plan.size, plan.size_vram) == "49%/51% CPU/GPU"


def test_no_room_after_reserve_and_graph_means_cpu_only() -> None:
    plan = gpu.plan([cuda(0.6)], model())
    assert plan is not None and plan.layers == 0 and plan.size_vram == 0
    assert processor(plan.size, plan.size_vram) == "100% CPU"
    no_gpu = gpu.plan([], model())
    assert no_gpu is not None and no_gpu.layers == 0 and no_gpu.per_device == ()


def test_layers_spread_over_two_gpus_in_device_order() -> None:
    m = model(blocks=20)
    room = (512 + 200 + 8 * 110) * MIB  # eight blocks each
    devices = [Device("cuda", 0, "a", free=room, total=room), Device("cuda", 1, "b", free=room, total=room)]
    plan = gpu.plan(devices, m)
    assert plan is not None
    # 15 blocks and the output layer: eight blocks on the first, seven and the output layer on the last
    assert plan.per_device == (8, 8)
    assert plan.layers == 16 and plan.tensor_split == "8,8"
    assert plan.size_vram == (15 * 110 + 50 + 2 * 200) * MIB


def test_num_gpu_overrides_the_plan() -> None:
    m = model()
    plan = gpu.plan([cuda(1)], m, num_gpu=3)
    assert plan is not None and plan.layers == 3 and plan.per_device == (3,)
    assert plan.size_vram == (2 * 110 + 50 + 200) * MIB
    everything = gpu.plan([cuda(1)], m, num_gpu=999)
    assert everything is not None and everything.layers == 11 and everything.full
    split = gpu.plan([cuda(8, 0), cuda(24, 1)], m, num_gpu=8)
    assert split is not None and split.per_device == (2, 6)  # in proportion to the room on each
    zero = gpu.plan([cuda(24)], m, num_gpu=0)
    assert zero is not None and zero.layers == 0 and zero.size_vram == 0


def test_unknown_free_memory_leaves_the_fit_to_the_engine() -> None:
    assert gpu.plan([Device("cuda", 0, "NVIDIA GPU")], model()) is None


def test_layer_sizes_come_from_the_gguf_tensor_table() -> None:
    info = read_gguf_info(bundled_file(*SMOL_FILE))
    layers = gpu.model_layers(info, num_ctx_total=4096, num_batch=512, kv_bytes_per_block=1000)
    assert len(layers.blocks) == info.block_count == 30
    assert all(b > 0 for b in layers.blocks) and len(set(layers.blocks)) == 1  # identical blocks
    blocks_bytes = sum(t.n_bytes or 0 for t in info.tensor_infos if t.name.startswith("blk."))
    assert sum(layers.blocks) == blocks_bytes
    # SmolLM2 ties its output to the token embedding: the LM head costs the embedding's bytes on a GPU
    embd = next(t for t in info.tensor_infos if t.name == "token_embd.weight")
    assert layers.output >= (embd.n_bytes or 0)
    assert layers.kv_per_block == 1000 and layers.graph > 0


@pytest.mark.e2e
@pytest.mark.parametrize(("value", "names"), [(None, ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A2000 12GB"]),
                                              ("1", ["NVIDIA RTX A2000 12GB"])])
def test_detection_runs_nvidia_smi_and_honours_cuda_visible_devices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, names: list[str]) -> None:
    """The detection path end to end, with ``nvidia-smi`` a script on PATH that prints a recorded report."""
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\ncat <<'EOF'\n" + NVIDIA_SMI + "EOF\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    gpu._cache.clear()
    devices = gpu.detect("cuda")
    assert [d.name for d in devices] == names
    assert devices[0].index == 0 and devices[0].free is not None
