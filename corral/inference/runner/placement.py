"""Where a loaded model lives: the engine's own account of its buffers, and what Corral planned.

llama.cpp logs every buffer it allocates while loading (``load_tensors: CUDA0 model buffer size = 1234.56 MiB``,
``llama_kv_cache: RPC0[10.0.0.2:50052] KV buffer size = ...``, ``... compute buffer size = ...``). Summed per
device they say exactly what sits in GPU memory, on RPC workers and in RAM, whichever engine loaded the model, so
``/api/ps`` reports what happened rather than what was hoped for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BUFFER = re.compile(r"^\S*?:?\s*(\S+)\s+(?:\S+\s+)?(?:model|KV|compute|output|RS|LoRA|state) buffer size =\s*"
                     r"([\d.]+) MiB")
# Host-side buffers: RAM, even when a GPU backend allocated them (pinned staging memory)
_HOST = re.compile(r"^(CPU|CPU_\w+|\w+_Host)$")


def parse_buffer(line: str) -> tuple[str, int] | None:
    """(device, bytes) from one engine log line, or None."""
    if "buffer size =" not in line:
        return None
    text = line.split(": ", 1)[1] if ": " in line else line
    match = _BUFFER.match(text.strip()) or _BUFFER.match(line.strip())
    if match is None:
        return None
    return match.group(1), int(float(match.group(2)) * (1 << 20))


def is_gpu(device: str) -> bool:
    return not _HOST.match(device) and not device.startswith("RPC")


@dataclass
class Placement:
    """Bytes per device as the engine allocated them, the RPC workers in use, and the planned GPU layers."""

    devices: dict[str, int] = field(default_factory=dict)
    rpc: list[str] = field(default_factory=list)
    gpu_layers: int | None = None  # -ngl as passed (None: the engine's default)
    planned_vram: int = 0  # bytes the offload plan put on GPUs, used until the engine has said

    def add_line(self, line: str) -> None:
        parsed = parse_buffer(line)
        if parsed is not None:
            device, size = parsed
            self.devices[device] = self.devices.get(device, 0) + size

    @property
    def size_vram(self) -> int:
        """Bytes in GPU memory: the engine's own figures once it has loaded, else the plan's."""
        measured = sum(size for device, size in self.devices.items() if is_gpu(device))
        return measured or self.planned_vram

    def shares(self) -> list[tuple[str, int]]:
        """(device, bytes) with host buffers folded into one ``CPU`` entry, largest first."""
        folded: dict[str, int] = {}
        for device, size in self.devices.items():
            name = "CPU" if _HOST.match(device) else device
            folded[name] = folded.get(name, 0) + size
        return sorted(folded.items(), key=lambda kv: -kv[1])
