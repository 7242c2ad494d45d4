"""Speculative decoding through Corral: decode speed with and without drafting, on a task whose output copies the
prompt and on one whose output does not.

    python -m benchmarks --speculative            # a few minutes on a 2-core machine
    python -m benchmarks --speculative --quick    # smoke run

Variants, each a ``corral serve`` with a fresh store and the bundled ``smollm2:135m``:

* ``off``: no speculation (the baseline);
* ``draft``: a model created with ``DRAFT`` pointing at the same GGUF (the model drafts for itself: every draft is
  accepted, but a draft token costs as much as a real one, so this measures the plumbing and its overhead);
* one per n-gram method of the engine (``CORRAL_SPECULATIVE=<method>``): drafts looked up in the context itself.

Trials rotate through the variants (the order shifting each round) behind the same quiet-moment gate as the main
benchmark, and every greedy output is compared with the baseline's: speculation must not change it. Acceptance
counts come from the engine's own log lines, which the servers forward under ``CORRAL_DEBUG``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import procs
from benchmarks.clients import MODEL, SYSTEM, TIMEOUT, Stream, corral_stream

DRAFT_MODEL = "smol-draft"
NGRAM_METHODS = ("ngram-simple", "ngram-mod", "ngram-map-k")
DEBUG = {"CORRAL_DEBUG": "1"}  # every server alike: the engine's acceptance lines reach the log only in debug mode

# Copying code, as in an edit of a file: the output repeats the prompt almost verbatim, which is what n-gram lookup
# drafts from. Raw mode with the bundled model's ChatML turns written out and the reply's code fence already open,
# so that the 135M model starts copying at once.
CODE = '''def merge_intervals(intervals):
    """Merge overlapping [start, end] intervals and return them sorted."""
    if not intervals:
        return []
    intervals = sorted(intervals, key=lambda pair: pair[0])
    merged = [list(intervals[0])]
    for start, end in intervals[1:]:
        last = merged[-1]
        if start <= last[1]:
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return merged


def total_covered(intervals):
    """The total length covered by the intervals."""
    return sum(end - start for start, end in merge_intervals(intervals))
'''
COPY_PROMPT = ("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nCopy this code exactly:\n"
               f"```python\n{CODE}```<|im_end|>\n<|im_start|>assistant\n```python\n")
FREE_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle. ({n})"


def prompts(task: str, n: int) -> str:
    """Trial ``n``'s prompt: every trial's is new, so none is served from the prefix cache (a cached prompt's last
    token is evaluated alone instead of in the prompt's batch, which can move a near-tie: see docs/benchmarks.md),
    and every variant gets the same one, so their outputs compare trial by trial."""
    if task == "copy":
        return COPY_PROMPT.format(system=f"{SYSTEM} (session {n})")
    return FREE_PROMPT.format(n=n)


@dataclass(frozen=True)
class Plan:
    repeats: int = 5
    tokens: int = 150


QUICK = Plan(repeats=2, tokens=64)


@dataclass
class Variant:
    name: str
    server: procs.Started
    model: str
    client: httpx.Client


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _acceptance(log: Path) -> tuple[int, int]:
    """(accepted, generated) draft tokens summed over every request the server's engine logged."""
    found = re.findall(r"draft acceptance = [0-9.]+ \(\s*(\d+) accepted /\s*(\d+) generated\)",
                       log.read_text(errors="replace"))
    return sum(int(a) for a, _ in found), sum(int(g) for _, g in found)


def _generate(v: Variant, prompt: str, tokens: int, raw: bool) -> Stream:
    body: dict[str, Any] = {"model": v.model, "prompt": prompt, "raw": raw,
                            "options": {"temperature": 0, "num_predict": tokens}}
    return corral_stream(v.client, "/api/generate", body)


def run(quick: bool, gate_enabled: bool, out: Path | None) -> int:
    plan = QUICK if quick else Plan()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    result: dict[str, Any] = {"kind": "speculative", "started": started.isoformat(timespec="seconds"),
                              "quick": quick, "plan": plan.__dict__, "loadavg_start": procs.loadavg()}

    result["machine"] = procs.machine()
    model_path = procs.bundled_model_path()
    servers: list[procs.Started] = []
    variants: list[Variant] = []
    with tempfile.TemporaryDirectory(prefix="corral-bench-spec-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            base = procs.start_corral(tmp / "off", 2, extra_env=DEBUG)
            servers.append(base)
            base_client = httpx.Client(base_url=base.url, timeout=TIMEOUT)
            weights = _weights_digest(base, model_path)
            r = base_client.post("/api/create", json={"model": DRAFT_MODEL, "from": MODEL, "stream": False,
                                                      "draft_files": {"smollm2.gguf": weights}})
            r.raise_for_status()
            variants.append(Variant("off", base, MODEL, base_client))
            variants.append(Variant("draft (same model)", base, DRAFT_MODEL, base_client))
            for method in NGRAM_METHODS:
                srv = procs.start_corral(tmp / method, 2, extra_env={**DEBUG, "CORRAL_SPECULATIVE": method})
                servers.append(srv)
                variants.append(Variant(method, srv, MODEL, httpx.Client(base_url=srv.url, timeout=TIMEOUT)))
            meter = procs.CpuMeter([s.pid for s in servers])
            gate = procs.Gate(meter, enabled=gate_enabled, budget_s=60.0 if quick else 300.0)
            for v in variants:  # load every runner before the clock starts
                _generate(v, "Hello", 4, False)
            tasks = {"copy": True, "free": False}  # raw or not
            uid = int(time.time()) % 100000
            rows: dict[str, dict[str, list[Stream]]] = {t: {v.name: [] for v in variants} for t in tasks}
            result["acceptance"] = {}
            for task, raw in tasks.items():
                print(f"[{time.monotonic() - t0:6.1f}s] {task} task ...", file=sys.stderr, flush=True)
                time.sleep(0.5)  # the engine's log lines reach the server's log just after the response
                before = {srv.url: _acceptance(srv.log) for srv in servers}
                for i in range(plan.repeats):
                    order = variants[i % len(variants):] + variants[:i % len(variants)]
                    prompt = prompts(task, uid * 100 + i)
                    for v in order:
                        def trial(v: Variant = v, prompt: str = prompt, raw: bool = raw) -> Stream:
                            return _generate(v, prompt, plan.tokens, raw)

                        rows[task][v.name].append(gate.run(trial))
                time.sleep(0.5)
                after = {srv.url: _acceptance(srv.log) for srv in servers}
                result["acceptance"][task] = _acceptance_by_variant(variants, before, after)
            result["tasks"] = _summarize(rows, variants)
            result["gate"] = gate.report()
        finally:
            for v in variants:
                v.client.close()
            for srv in servers:
                srv.stop()
    result["loadavg_end"] = procs.loadavg()
    result["seconds"] = round(time.monotonic() - t0, 1)
    print()
    print(markdown(result))
    path = out or procs.ROOT / "benchmarks" / "results" / (
        f"{started.strftime('%Y%m%dT%H%M%SZ')}-speculative{'-quick' if quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    g = result["gate"]
    print(f"\ngate: {g['trials']} trials, {g['reruns']} rerun as disturbed, {g['noisy_trials_kept']} kept disturbed, "
          f"{g['waited_s']} s waited; load average {result['loadavg_start']} -> {result['loadavg_end']}; "
          f"took {result['seconds']:.0f} s")
    print(f"JSON: {path}")
    return 0


def _weights_digest(server: procs.Started, model_path: Path) -> str:
    """The bundled model's weights digest (the server seeded them at start-up, so nothing is uploaded)."""
    import hashlib

    digest = hashlib.sha256()
    with model_path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    value = "sha256:" + digest.hexdigest()
    if httpx.head(f"{server.url}/api/blobs/{value}", timeout=TIMEOUT).status_code != 200:
        with model_path.open("rb") as f:
            httpx.post(f"{server.url}/api/blobs/{value}", content=f.read(), timeout=TIMEOUT).raise_for_status()
    return value


def _summarize(rows: dict[str, dict[str, list[Stream]]], variants: list[Variant]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, by_variant in rows.items():
        baseline = by_variant["off"]
        base_rate = _median([s.engine_decode_rate for s in baseline])
        out[task] = {}
        for v in variants:
            streams = by_variant[v.name]
            rate = _median([s.engine_decode_rate for s in streams])
            out[task][v.name] = {
                "engine_tok_s": rate,
                "wall_tok_s": _median([s.wall_decode_rate for s in streams]),
                "vs_off": rate / base_rate if base_rate else float("nan"),
                "eval_counts": [s.eval_count for s in streams],
                "same_output_as_off": sum(s.text == b.text for s, b in zip(streams, baseline, strict=True)),
                "trials": len(streams),
                "texts": [s.text for s in streams],
                "samples_engine_tok_s": [round(s.engine_decode_rate, 2) for s in streams],
            }
    return out


def _acceptance_by_variant(variants: list[Variant], before: dict[str, tuple[int, int]],
                           after: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Draft tokens accepted and drafted during one task, per variant (the ``off`` variant drafts none; it shares
    its server with the draft variant, whose counts these are)."""
    out: dict[str, Any] = {}
    for v in variants:
        if v.name == "off":
            continue
        url = v.server.url
        accepted, generated = after[url][0] - before[url][0], after[url][1] - before[url][1]
        out[v.name] = {"accepted": accepted, "drafted": generated,
                       "rate": accepted / generated if generated else None}
    return out


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table (for docs/benchmarks.md): median decode tok/s (engine timings) per task."""
    lines = ["| variant | copy task tok/s | vs off | drafts accepted | free text tok/s | vs off | drafts accepted | "
             "greedy output = off (copy, free) |", "|---|---|---|---|---|---|---|---|"]
    tasks = result["tasks"]

    def accepted(task: str, name: str) -> str:
        acc = result.get("acceptance", {}).get(task, {}).get(name)
        if acc is None:
            return ""
        return f"{acc['accepted']}/{acc['drafted']}" if acc["drafted"] else "none drafted"

    for name, copy in tasks["copy"].items():
        free = tasks["free"][name]
        same = f"{copy['same_output_as_off']}/{copy['trials']}, {free['same_output_as_off']}/{free['trials']}"
        lines.append(f"| {name} | {copy['engine_tok_s']:.1f} | {copy['vs_off']:.2f}x | {accepted('copy', name)} | "
                     f"{free['engine_tok_s']:.1f} | {free['vs_off']:.2f}x | {accepted('free', name)} | "
                     f"{same} |")
    return "\n".join(lines)


def main_markdown(path: Path) -> None:
    print(markdown(json.loads(path.read_text())))

