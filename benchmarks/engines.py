"""Engines side by side: Corral on a native engine and on the wheel, against that engine's own anchors.

    python -m benchmarks --engines [--engine NAME|PATH] [--rounds 5] [--quick]

In one run, on the bundled SmolLM2-135M with 2 threads, 4 slots and a 4096-token context per slot:

- ``llama-bench`` of the native build (tg128, pp512): llama.cpp's own ceiling, no server at all;
- that build's ``llama-server`` alone (loopback TCP, no key), driven with the bodies Corral sends;
- ``corral serve`` on the native engine (``CORRAL_ENGINE``);
- ``corral serve`` on the wheel (today's default).

Each round measures every target once, in a rotated order, for single-stream decode (128 greedy tokens), prefill (a
new ~512-token prompt) and the aggregate of 1 and 4 concurrent clients; the report is the median of the rounds,
with the load average, since the machine is shared. Targets: Corral on the native engine >= 0.98x its
``llama-server`` alone for decode, prefill and 4 clients, and >= 1.05x Corral on the wheel for decode.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import clients, procs
from benchmarks.clients import MODEL, SYSTEM, TIMEOUT, Stream, chatml, corral_stream, direct_stream
from benchmarks.shared import DECODE_PROMPT, RESULTS, Texts, concurrent, median

SLOTS, NUM_CTX, THREADS = 4, 4096, 2
TARGETS = ("alone", "corral_native", "corral_wheel")
LABELS = {"alone": "llama-server alone", "corral_native": "Corral, native", "corral_wheel": "Corral, wheel"}


@dataclass
class Plan:
    rounds: int = 5
    decode_tokens: int = 128
    prompt_tokens: int = 512
    agg_tokens: int = 96
    bench_reps: int = 3


QUICK = Plan(rounds=1, decode_tokens=48, prompt_tokens=256, agg_tokens=32, bench_reps=1)


def find_engine(name: str | None) -> Any:
    from corral.engines import catalog, select

    if name:
        engine = catalog.resolve(name)
    else:
        engine, _ = select.best_installed()
    if engine is None:
        raise SystemExit("no native engine: run 'corral engine build' first (or pass --engine)")
    return engine


def start_alone(tmp: Path, engine: Any, model: Path) -> procs.Started:
    """The engine's llama-server with Corral's settings for this model, on loopback TCP, without a key."""
    from corral.inference.runner.process import server_flags
    from corral.inference.runner.spec import LaunchSpec

    port = procs.free_port()
    spec = LaunchSpec(model=str(model), num_ctx=NUM_CTX, parallel=SLOTS, num_thread=THREADS)
    args = server_flags(spec, str(engine.server), f"127.0.0.1:{port}")
    i = args.index("--api-key-file")
    del args[i:i + 2]
    log = tmp / "alone.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started = procs.Started(proc=proc, url=f"http://127.0.0.1:{port}", log=log, port=port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(started.url + "/health", timeout=1).status_code == 200:
                return started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    started.stop()
    raise RuntimeError("llama-server alone not healthy in 120 s")


def llama_bench(engine: Any, model: Path, plan: Plan) -> dict[str, float]:
    """llama-bench's tg/pp averages (tokens per second)."""
    from corral.engines.catalog import BENCH

    binary = engine.tool(BENCH)
    if binary is None:
        return {}
    out = subprocess.run([str(binary), "-m", str(model), "-t", str(THREADS), "-p", str(plan.prompt_tokens), "-n",
                          str(plan.decode_tokens), "-r", str(plan.bench_reps), "-o", "json"],
                         capture_output=True, text=True, timeout=900)
    result: dict[str, float] = {}
    for test in json.loads(out.stdout or "[]"):
        key = "decode" if test.get("n_gen") else "prefill"
        result[key] = float(test.get("avg_ts", 0.0))
    return result


class Targets:
    """One request of each kind to each target."""

    def __init__(self, servers: dict[str, procs.Started], texts: Texts) -> None:
        self.servers = servers
        self.texts = texts
        self.http = {name: httpx.Client(base_url=s.url, timeout=TIMEOUT) for name, s in servers.items()}
        self.n = 0

    def generate(self, target: str, prompt: str, num_predict: int, client: httpx.Client | None = None) -> Stream:
        http = client or self.http[target]
        if target == "alone":
            text = chatml([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}])
            return direct_stream(http, text, clients.engine_fields(num_predict))
        body = {"model": MODEL, "prompt": prompt, "options": {"temperature": 0, "num_predict": num_predict}}
        return corral_stream(http, "/api/generate", body)

    def decode(self, target: str, plan: Plan) -> float:
        return self.generate(target, DECODE_PROMPT, plan.decode_tokens).engine_decode_rate

    def prefill(self, target: str, plan: Plan, body: str) -> float:
        self.n += 1
        prompt = f"{os.getpid()}-{self.n}. {body}\nSummarize the text above in one sentence."
        return self.generate(target, prompt, 2).prompt_rate

    def aggregate(self, target: str, clients_n: int, plan: Plan) -> float:
        server = self.servers[target]
        ping = "/health" if target == "alone" else "/api/version"

        def one(_: int, http: httpx.Client) -> Stream:
            return self.generate(target, DECODE_PROMPT, plan.agg_tokens, http)

        return float(concurrent(clients_n, one, server.url, ping)["tok_s"])


def run(quick: bool, engine_name: str | None, rounds: int | None, out_path: Path | None) -> int:
    plan = QUICK if quick else Plan()
    if rounds:
        plan.rounds = rounds
    engine = find_engine(engine_name)
    model = procs.bundled_model_path()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    result: dict[str, Any] = {"kind": "engines", "started": started.isoformat(timespec="seconds"), "quick": quick,
                              "plan": plan.__dict__, "machine": procs.machine(), "loadavg_start": procs.loadavg(),
                              "engine": {"name": engine.name, "variant": engine.variant, "server": str(engine.server)}}
    samples: dict[str, dict[str, list[float]]] = {t: {"decode": [], "prefill": [], "agg1": [], "agg4": []}
                                                  for t in TARGETS}
    bench: dict[str, list[float]] = {"decode": [], "prefill": []}
    gate = procs.Gate(procs.CpuMeter([]), enabled=False)
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="corral-bench-engines-") as tmp_name:
        tmp = Path(tmp_name)
        servers: dict[str, procs.Started] = {}
        try:
            servers["alone"] = start_alone(tmp, engine, model)
            servers["corral_native"] = procs.start_corral(tmp / "native", THREADS,
                                                          {"CORRAL_ENGINE": str(engine.directory or engine.server)})
            servers["corral_wheel"] = procs.start_corral(tmp / "wheel", THREADS, {"CORRAL_ENGINE": "wheel"})
            texts = Texts(servers["alone"].url)
            body = texts.take(plan.prompt_tokens - 40, offset=100)
            t = Targets(servers, texts)
            for name in TARGETS:  # load, and warm the prompt cache of the decode prompt
                t.generate(name, DECODE_PROMPT, 8)
            # Each trial waits for a quiet moment and is rerun when other processes took the CPU during it
            # (procs.Gate): on two cores a busy neighbour stalls the engine's threads at every barrier.
            meter = procs.CpuMeter([s.pid for s in servers.values()])
            gate = procs.Gate(meter, budget_s=60.0 if quick else 900.0)
            ps = httpx.get(servers["corral_native"].url + "/api/ps").json()["models"]
            result["corral_native_engine"] = ps[0].get("engine") if ps else None
            for r in range(plan.rounds):
                loads.append(procs.loadavg()[0])
                print(f"[{time.monotonic() - t0:6.0f}s] round {r + 1}/{plan.rounds}, load {loads[-1]}",
                      file=sys.stderr, flush=True)
                order = list(TARGETS[r % 3:] + TARGETS[:r % 3])
                measures: list[tuple[str, Callable[[str], float]]] = [
                    ("decode", lambda n: t.decode(n, plan)), ("prefill", lambda n: t.prefill(n, plan, body)),
                    ("agg1", lambda n: t.aggregate(n, 1, plan)), ("agg4", lambda n: t.aggregate(n, 4, plan))]
                for key, fn in measures:
                    for name in order:
                        samples[name][key].append(gate.run(functools.partial(fn, name)))
                anchor = gate.run(lambda: llama_bench(engine, model, plan))
                for key, value in anchor.items():
                    bench[key].append(value)
        finally:
            for s in servers.values():
                s.stop()
    result.update(samples=samples, llama_bench=bench, loadavg_rounds=loads, loadavg_end=procs.loadavg(),
                  seconds=round(time.monotonic() - t0), gate=gate.report())
    result["medians"] = {name: {k: median(v) for k, v in m.items()} for name, m in samples.items()}
    result["llama_bench_medians"] = {k: median(v) for k, v in bench.items()}
    result["summary"] = summary(result)
    print()
    print(markdown(result))
    out = out_path or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-engines{'-quick' if quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nJSON: {out}")
    return 0


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The target checks: (name, value, target, pass)."""
    m = result["medians"]
    rows = []
    for key, label in (("decode", "decode"), ("prefill", "prefill"), ("agg4", "4 clients")):
        q = m["corral_native"][key] / m["alone"][key]
        rows.append({"check": f"Corral native / llama-server alone, {label}", "ratio": q, "target": 0.98,
                     "pass": q >= 0.98})
    q = m["corral_native"]["decode"] / m["corral_wheel"]["decode"]
    rows.append({"check": "Corral native / Corral wheel, decode", "ratio": q, "target": 1.05, "pass": q >= 1.05})
    return rows


def markdown(result: dict[str, Any]) -> str:
    m, lb = result["medians"], result.get("llama_bench_medians", {})
    loads = result.get("loadavg_rounds") or [float("nan")]
    lines = [f"Engine `{result['engine']['name']}`; {result['machine'].get('cpu')}, {result['machine'].get('nproc')} "
             f"cores; {len(result['samples']['alone']['decode'])} rounds; load average (1 min) at each round "
             f"{', '.join(f'{x:.1f}' for x in loads)}; {result['started']}; gate: {_gate_text(result)}.", "",
             "| tok/s (median) | decode | prefill | 1 client | 4 clients |", "|---|---|---|---|---|"]

    def cell(v: float) -> str:
        return "" if v != v else f"{v:.0f}"

    lines.append(f"| llama-bench (tg{result['plan']['decode_tokens']} / pp{result['plan']['prompt_tokens']}) | "
                 f"{cell(lb.get('decode', float('nan')))} | {cell(lb.get('prefill', float('nan')))} | | |")
    for name in TARGETS:
        row = m[name]
        rel = "" if name == "alone" else " ({:.2f}x)"
        cells = [cell(row[k]) + (rel.format(row[k] / m["alone"][k]) if rel else "")
                 for k in ("decode", "prefill", "agg1", "agg4")]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    lines += ["", "| check | ratio | target | result |", "|---|---|---|---|"]
    for row in result["summary"]:
        lines.append(f"| {row['check']} | {row['ratio']:.3f}x | >= {row['target']}x | "
                     f"{'**PASS**' if row['pass'] else '**FAIL**'} |")
    return "\n".join(lines)


def _gate_text(result: dict[str, Any]) -> str:
    g = result.get("gate") or {}
    return (f"{g.get('trials')} trials, {g.get('reruns')} rerun as disturbed, {g.get('noisy_trials_kept')} kept "
            f"disturbed, {g.get('waited_s')} s waited, median others' CPU {g.get('median_foreign_pct')} %")
