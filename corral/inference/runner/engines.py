"""What a built engine adds to a runner's launch: RPC workers and GPU layers, decided at load time.

The launch spec says *which* workers a generation runner uses (``CORRAL_RPC_SERVERS``, when the engine has RPC); at
load, :class:`EngineLaunch` probes them, leaves out any that does not answer, and turns the rest into ``--rpc`` and
``-ngl`` for an even split. On a GPU engine without workers it asks the driver for free memory and plans ``-ngl``
(and ``--tensor-split`` over several GPUs) as Ollama does (:mod:`corral.engines.gpu`). ``num_gpu`` overrides both.
Deciding at load rather than per request keeps the spec, and so the runner, stable while free memory moves.
"""

from __future__ import annotations

import asyncio
import logging

from corral.engines import gpu, rpc, select
from corral.engines.catalog import Engine
from corral.errors import RunnerError
from corral.inference import memory
from corral.inference.runner.placement import Placement
from corral.inference.runner.spec import LaunchSpec
from corral.store.gguf_info import GGUFInfo, read_gguf_info

log = logging.getLogger("corral.runner")

_RPC_FAILURE = ("Remote RPC server crashed", "Failed to connect to", "RPC handshake failed", "RPC server version")


def rpc_workers(*, generation: bool) -> list[str]:
    """The workers a new runner splits its model over: ``CORRAL_RPC_SERVERS`` for generation runners on an engine
    with RPC. Embedding and rerank runners stay local (an rpc-server serves one client at a time)."""
    if not generation:
        return []
    workers = rpc.servers()
    if not workers:  # asked first: without workers the engine need not be known (nor resolvable in this process)
        return []
    engine = select.current().engine
    return workers if engine is not None and engine.rpc else []


def local_share(size: int, spec: LaunchSpec, info: GGUFInfo) -> int:
    """The bytes of ``size`` that stay on this machine when the layers are split over ``spec.rpc``."""
    if not spec.rpc or not info.block_count:
        return size
    total = info.block_count + 1
    remote = spec.num_gpu if spec.num_gpu >= 0 else rpc.worker_layers(info.block_count, len(spec.rpc))
    return size * (total - min(remote, total)) // total


class EngineLaunch:
    """The load-time part of a binary runner's launch (see the module's docstring)."""

    def __init__(self, spec: LaunchSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine
        self.workers: list[str] = []

    async def prepare(self, placement: Placement) -> list[str]:
        # llama.cpp logs its buffers (what /api/ps reports per device) at verbosity 4, about 30 lines per request
        # beyond the default; only where there is more than this machine's RAM to report
        trace = ["-lv", "4"]
        if self.spec.rpc:
            return trace + await self._rpc(placement)
        if self.engine.gpu:
            return trace + (await asyncio.to_thread(self._gpu, placement) if self.spec.num_gpu < 0 else [])
        return []

    async def _rpc(self, placement: Placement) -> list[str]:
        answers = await asyncio.gather(*(asyncio.to_thread(rpc.reachable, s) for s in self.spec.rpc))
        alive = [s for s, ok in zip(self.spec.rpc, answers, strict=True) if ok]
        gone = [s for s in self.spec.rpc if s not in alive]
        if gone:
            info = await asyncio.to_thread(read_gguf_info, self.spec.model)
            need = memory.model_bytes(info, _weights(self.spec), self.spec.num_ctx, self.spec.parallel)
            local = local_share(need, LaunchSpec(**{**self.spec.to_json(), "rpc": alive}), info)
            have = memory.available_bytes()
            if local > have:
                raise RunnerError(
                    f"RPC worker {', '.join(gone)} does not answer, and without it this machine would have to hold "
                    f"{memory.human(local)} of the model, more than the {memory.human(have)} available")
            log.warning("RPC worker %s does not answer; loading %s without it", ", ".join(gone),
                        self.spec.model.rsplit("/", 1)[-1])
        self.workers = alive
        placement.rpc = list(alive)
        if not alive:
            return []
        flags = ["--rpc", ",".join(alive)]
        if self.spec.num_gpu < 0:
            info = await asyncio.to_thread(read_gguf_info, self.spec.model)
            layers = rpc.worker_layers(info.block_count, len(alive))
            flags += ["-ngl", str(layers)]
            placement.gpu_layers = layers
        return flags

    def _gpu(self, placement: Placement) -> list[str]:
        assert self.engine.gpu is not None
        devices = gpu.detect(self.engine.gpu, max_age=0)
        if not devices:
            return []
        info = read_gguf_info(self.spec.model)
        total_ctx = self.spec.num_ctx * self.spec.parallel
        kv_per_block = memory.kv_cache_bytes(info, total_ctx) // max(info.block_count, 1)
        layers = gpu.model_layers(info, total_ctx, self.spec.num_batch, kv_per_block)
        offload = gpu.plan(devices, layers)
        if offload is None:  # free memory unknown: llama.cpp fits the layers to the devices itself
            return []
        placement.gpu_layers = offload.layers
        placement.planned_vram = offload.size_vram
        log.info("offloading %d/%d layers to %s", offload.layers, offload.total_layers,
                 ", ".join(f"{d.name} ({n})" for d, n in zip(devices, offload.per_device, strict=True)))
        flags = ["-ngl", str(offload.layers)]
        if len(devices) > 1 and offload.layers:
            flags += ["--tensor-split", offload.tensor_split]
        return flags

    def explain(self, message: str, log_tail: list[str]) -> str:
        """Name the RPC worker that went away when the engine died of a broken RPC connection."""
        if not self.workers:
            return message
        gone = [s for s in self.workers if not rpc.reachable(s, timeout=0.3)]
        if not gone and not any(marker in line for line in log_tail for marker in _RPC_FAILURE):
            return message
        who = f"RPC worker {', '.join(gone)}" if gone else f"an RPC worker ({', '.join(self.workers)})"
        return f"{who} stopped answering, and the model's runner died with it; the next request loads the model " \
               f"without it ({message})"


def _weights(spec: LaunchSpec) -> int:
    import os

    size = os.path.getsize(spec.model) + sum(os.path.getsize(a) for a in spec.adapters)
    return size + (os.path.getsize(spec.draft) if spec.draft else 0)
