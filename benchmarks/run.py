"""Corral's benchmark: one command that measures Corral against the bare engine it wraps.

    python -m benchmarks            # full run, a few minutes on a 2-core machine
    python -m benchmarks --quick    # smoke run
    python -m benchmarks --speculative [--quick]   # speculative decoding on and off (benchmarks/speculative.py)
    python -m benchmarks --engines [--engine NAME] [--rounds N] [--quick]   # native engine vs wheel vs anchors

It starts ``corral serve`` (fresh temporary store, the bundled ``smollm2:135m``) and, beside it, the same engine
driven directly (``benchmarks/direct_engine.py``: the same ``xllamacpp`` build, model, context, slots and threads).
Each measurement alternates Corral and direct trials so both see the same background load, and reports medians.
Results print as a table with PASS/FAIL against the targets and are written as JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks import clients, procs
from benchmarks.clients import MODEL, SYSTEM, TIMEOUT, Stream, chatml, corral_stream, direct_stream
from benchmarks.shared import DECODE_PROMPT, RESULTS, Texts, concurrent, median

SLOTS = 4
NUM_CTX = 4096
THREADS = 2


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to do."""

    # Decode and prompt-eval pairs. One ~1 s trial on this shared VM varies by +-10 % (the host's other tenants,
    # invisible from inside), so a 2-3 % overhead needs about a dozen pairs before the medians settle.
    repeats: int = 11
    ttft_repeats: int = 15
    decode_tokens: int = 128
    prompt_tokens: int = 512
    agg_levels: tuple[int, ...] = (1, 2, 4, 8)
    agg_tokens: int = 96
    # Nine repeats: a 1-client trial is ~1 s, and the 4 / 1 scaling is a ratio of two such trials.
    agg_repeats: int = 9
    chat_tokens: int = 1000
    chat_repeats: int = 3
    reload_repeats: int = 2
    lat_clients: int = 50
    # 50 x 100 requests: about a second of load. With 50 x 20 the whole test lasted 0.2 s, and one scheduling
    # hiccup, which delays all 50 requests in flight at once, was 5 % of the samples and so set the p99 alone.
    lat_per_client: int = 100


QUICK = Plan(repeats=2, ttft_repeats=3, decode_tokens=48, prompt_tokens=256, agg_tokens=32, agg_repeats=1,
             chat_repeats=1, reload_repeats=1, lat_per_client=4)


# -- small helpers -----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@dataclass
class Bench:
    """The two servers under test and the clients that talk to them."""

    corral: procs.Started
    direct: procs.Started
    plan: Plan
    texts: Texts
    gate: procs.Gate
    uid: int

    def __post_init__(self) -> None:
        self.cc = httpx.Client(base_url=self.corral.url, timeout=TIMEOUT)
        self.dc = httpx.Client(base_url=self.direct.url, timeout=TIMEOUT)
        self._n = 0

    def unique(self) -> int:
        """A number never used before in this run (keeps prompts from hitting the prefix cache)."""
        self._n += 1
        return self.uid * 1000 + self._n

    # one request each way ---------------------------------------------------------------------------------------

    def corral_generate(self, prompt: str, num_predict: int, *, system: str | None = None,
                        client: httpx.Client | None = None) -> Stream:
        body: dict[str, Any] = {"model": MODEL, "prompt": prompt,
                                "options": {"temperature": 0, "num_predict": num_predict}}
        if system is not None:
            body["system"] = system
        return corral_stream(client or self.cc, "/api/generate", body)

    def direct_generate(self, prompt: str, num_predict: int, *, system: str | None = None,
                        client: httpx.Client | None = None) -> Stream:
        text = chatml([{"role": "system", "content": system or SYSTEM}, {"role": "user", "content": prompt}])
        return direct_stream(client or self.dc, text, clients.engine_fields(num_predict))

    def corral_chat(self, messages: list[dict[str, str]], num_predict: int) -> Stream:
        body = {"model": MODEL, "messages": messages, "options": {"temperature": 0, "num_predict": num_predict}}
        return corral_stream(self.cc, "/api/chat", body)

    def direct_chat(self, messages: list[dict[str, str]], num_predict: int) -> Stream:
        return direct_stream(self.dc, chatml(messages), clients.engine_fields(num_predict))

    def unload(self) -> None:
        r = self.cc.post("/api/generate", json={"model": MODEL, "keep_alive": 0})
        r.raise_for_status()


def paired(b: Bench, repeats: int, corral: Callable[[str], Stream], direct: Callable[[str], Stream],
           make: Callable[[], str] = lambda: "") -> tuple[list[Stream], list[Stream]]:
    """``repeats`` pairs of trials, alternating which side goes first; each pair runs (and reruns) via the gate.

    ``make()`` gives the pair's input (both sides get the same); a rerun gets a new one, so that it cannot hit the
    prefix cache the discarded attempt filled."""
    cs: list[Stream] = []
    ds: list[Stream] = []
    for i in range(repeats):
        def pair(i: int = i) -> tuple[Stream, Stream]:
            x = make()
            if i % 2 == 0:
                c = corral(x)
                return c, direct(x)
            d = direct(x)
            return corral(x), d

        c, d = b.gate.run(pair)
        cs.append(c)
        ds.append(d)
    return cs, ds


# -- the measurements --------------------------------------------------------------------------------------------



def check_prompts() -> dict[str, Any]:
    """The prompts sent to the direct engine must be byte-identical to what Corral renders."""
    from corral.authoring.bundled import builtin_template
    from corral.store.model import parse_template
    from corral.templates import prompt as prompts

    tmpl = parse_template(builtin_template("chatml")[0])
    gen = prompts.render_generate(tmpl, prompt=DECODE_PROMPT, system=SYSTEM, suffix="", messages=[], think=None,
                                  think_level=None)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    chat = prompts.render_chat(tmpl, msgs, tools=None, think=None, think_level=None)
    ok_gen = gen == chatml([{"role": "system", "content": SYSTEM}, {"role": "user", "content": DECODE_PROMPT}])
    return {"generate_identical": ok_gen, "chat_identical": chat == chatml(msgs)}


def bench_decode(b: Bench) -> dict[str, Any]:
    """1. Single-stream decode of ``decode_tokens`` greedy tokens."""
    n = b.plan.decode_tokens
    server_cpu: list[float] = []  # CPU seconds the API server process spent per generated token

    def corral(_: str) -> Stream:
        c0 = procs.cpu_seconds(b.corral.pid)
        s = b.corral_generate(DECODE_PROMPT, n)
        server_cpu.append((procs.cpu_seconds(b.corral.pid) - c0) / max(s.eval_count, 1))
        return s

    cs, ds = paired(b, b.plan.repeats, corral, lambda _: b.direct_generate(DECODE_PROMPT, n))
    return {
        "server_cpu_ms_per_token": median(server_cpu) * 1e3,
        "corral_engine_tok_s": median([s.engine_decode_rate for s in cs]),
        "direct_engine_tok_s": median([s.engine_decode_rate for s in ds]),
        "corral_wall_tok_s": median([s.wall_decode_rate for s in cs]),
        "direct_wall_tok_s": median([s.wall_decode_rate for s in ds]),
        "corral_tail_ms": median([s.tail * 1e3 for s in cs]),
        "direct_tail_ms": median([s.tail * 1e3 for s in ds]),
        "corral_total_s": median([s.done - s.sent for s in cs]),
        "direct_total_s": median([s.done - s.sent for s in ds]),
        "eval_counts": [s.eval_count for s in cs] + [s.eval_count for s in ds],
        "same_output": all(c.text == d.text for c, d in zip(cs, ds, strict=True)),
        "samples": {"corral_engine": [s.engine_decode_rate for s in cs], "direct_engine": [s.engine_decode_rate
                                                                                            for s in ds],
                    "corral_wall": [s.wall_decode_rate for s in cs], "direct_wall": [s.wall_decode_rate for s in ds]},
    }


def bench_prompt_eval(b: Bench) -> dict[str, Any]:
    """2. Prompt evaluation of a ~``prompt_tokens`` prompt, unique every time (no prefix-cache hits)."""
    body = b.texts.take(b.plan.prompt_tokens - 40, offset=100)
    cs, ds = paired(b, b.plan.repeats, lambda p: b.corral_generate(p, 2), lambda p: b.direct_generate(p, 2),
                    lambda: f"{b.unique()}. {body}\nSummarize the text above in one sentence.")
    return {
        "prompt_tokens": median([float(s.prompt_n) for s in cs]),
        "corral_tok_s": median([s.prompt_rate for s in cs]),
        "direct_tok_s": median([s.prompt_rate for s in ds]),
        "corral_ttft_ms": median([s.ttft * 1e3 for s in cs]),
        "direct_ttft_ms": median([s.ttft * 1e3 for s in ds]),
        "samples": {"corral": [s.prompt_rate for s in cs], "direct": [s.prompt_rate for s in ds],
                    "prompt_n": [s.prompt_n for s in cs] + [s.prompt_n for s in ds]},
    }


def bench_ttft(b: Bench) -> dict[str, Any]:
    """3. Time to first token of a short, new prompt (client side, streaming)."""
    server_cpu: list[float] = []  # CPU milliseconds the API server process spent per request

    def corral(prompt: str) -> Stream:
        c0 = procs.cpu_seconds(b.corral.pid)
        s = b.corral_generate(prompt, 4)
        server_cpu.append((procs.cpu_seconds(b.corral.pid) - c0) * 1e3)
        return s

    cs, ds = paired(b, b.plan.ttft_repeats, corral, lambda p: b.direct_generate(p, 4),
                    lambda: f"Say hello to friend number {b.unique()}.")
    diffs = [(c.ttft - d.ttft) * 1e3 for c, d in zip(cs, ds, strict=True)]
    # TTFT minus the engine's own prompt time: the part no prompt-length or cache effect can move
    c_out = [(s.ttft - s.prompt_s) * 1e3 for s in cs]
    d_out = [(s.ttft - s.prompt_s) * 1e3 for s in ds]
    return {
        "corral_outside_engine_ms": median(c_out),
        "direct_outside_engine_ms": median(d_out),
        "server_cpu_ms_per_request": median(server_cpu),
        "corral_ms": median([s.ttft * 1e3 for s in cs]),
        "direct_ms": median([s.ttft * 1e3 for s in ds]),
        "overhead_ms": median(diffs),
        "samples": {"corral_ms": [s.ttft * 1e3 for s in cs], "direct_ms": [s.ttft * 1e3 for s in ds],
                    "paired_diff_ms": diffs, "prompt_n": [s.prompt_n for s in cs] + [s.prompt_n for s in ds]},
    }


def bench_aggregate(b: Bench) -> dict[str, Any]:
    """4. Aggregate generated tokens per second with 1, 2, 4, 8 concurrent clients.

    Every client sends the decode prompt, which runs past the token limit under greedy sampling, so each generates
    exactly ``agg_tokens``: with prompts of their own some would stop early and leave the others running unbatched,
    which moved this figure by a third between runs. Each repeat runs every level (Corral and direct in turn), so a
    repeat's 1-client and 4-client trials are seconds apart and their ratio, the scaling, sees one state of the
    host; run level by level they were minutes apart, and the host's drift in between moved the 4 / 1 figure."""
    n_tok = b.plan.agg_tokens
    levels = b.plan.agg_levels
    runs: dict[int, dict[str, list[float]]] = {level: {"corral": [], "direct": []} for level in levels}
    tokens: dict[int, dict[str, list[int]]] = {level: {"corral": [], "direct": []} for level in levels}

    def corral_one(_: int, http: httpx.Client) -> Stream:
        return b.corral_generate(DECODE_PROMPT, n_tok, client=http)

    def direct_one(_: int, http: httpx.Client) -> Stream:
        return b.direct_generate(DECODE_PROMPT, n_tok, client=http)

    for i in range(b.plan.agg_repeats):
        for level in levels:
            order = [("corral", corral_one, b.corral.url, "/"), ("direct", direct_one, b.direct.url, "/health")]
            if (i + level) % 2:
                order.reverse()

            def both(order: list[Any] = order, level: int = level) -> list[tuple[str, dict[str, float]]]:
                return [(name, concurrent(level, fn, url, ping)) for name, fn, url, ping in order]

            for name, res in b.gate.run(both):
                runs[level][name].append(res["tok_s"])
                tokens[level][name].append(int(res["tokens"]))
    out: dict[str, Any] = {"levels": {}}
    for level in levels:
        out["levels"][str(level)] = {"corral_tok_s": median(runs[level]["corral"]),
                                     "direct_tok_s": median(runs[level]["direct"]),
                                     "samples": runs[level], "tokens": tokens[level]}
    if 1 in levels and 4 in levels:
        out["scaling_4_1"] = {name: [four / one for one, four in zip(runs[1][name], runs[4][name], strict=True)]
                              for name in ("corral", "direct")}
    return out


def _history(b: Bench, tokens: int) -> list[dict[str, str]]:
    """A chat history of about ``tokens`` tokens, unique to this call, ending with a user question."""
    uid = b.unique()
    share = tokens // 5
    return [
        {"role": "system", "content": f"Session {uid}. Notes: {b.texts.take(3 * share, uid * 7)}"},
        {"role": "user", "content": f"Read this: {b.texts.take(share, uid * 11)}"},
        {"role": "assistant", "content": f"I have read it. {b.texts.take(share - 40, uid * 13)}"},
        {"role": "user", "content": "Which word appears most often in the notes?"},
    ]


def bench_chat_turns(b: Bench) -> dict[str, Any]:
    """5. A chat with ~``chat_tokens`` of history: TTFT of turn 1, then of turn 2 (history resent + one message)."""
    rows: dict[str, list[tuple[float, float, int, int]]] = {"corral": [], "direct": []}
    history_tokens = 0
    for i in range(b.plan.chat_repeats):
        for side in (("corral", "direct") if i % 2 == 0 else ("direct", "corral")):
            send = b.corral_chat if side == "corral" else b.direct_chat

            def turns(send: Callable[[list[dict[str, str]], int], Stream] = send) -> tuple[Stream, Stream]:
                nonlocal history_tokens
                msgs = _history(b, b.plan.chat_tokens)  # new on a rerun too: no cache hits from a discarded try
                history_tokens = b.texts.count(chatml(msgs))
                first = send(msgs, 12)
                second = send([*msgs, {"role": "assistant", "content": first.text},
                               {"role": "user", "content": "Answer again in three words."}], 12)
                return first, second

            first, second = b.gate.run(turns)
            rows[side].append((first.ttft, second.ttft, first.prompt_n, second.prompt_n))
    out: dict[str, Any] = {"history_tokens": history_tokens}
    for side, vals in rows.items():
        out[f"{side}_turn1_ms"] = median([v[0] * 1e3 for v in vals])
        out[f"{side}_turn2_ms"] = median([v[1] * 1e3 for v in vals])
        out[f"{side}_ratio"] = median([v[1] / v[0] for v in vals])
        out[f"{side}_prompt_n"] = [[v[2], v[3]] for v in vals]
    return out


def bench_reload(b: Bench) -> dict[str, Any]:
    """6. TTFT after unload + reload with a ~1,000-token system prompt seen before the unload, vs a cold one."""
    rows = []
    for _ in range(b.plan.reload_repeats):
        def cycle() -> tuple[Stream, Stream, Stream]:
            uid = b.unique()  # new on a rerun too: the discarded try saved this prompt's KV
            system = f"Session {uid}. {b.texts.take(b.plan.chat_tokens - 30, uid * 17)}"
            b.unload()
            cold = b.corral_generate("What is the first word above?", 4, system=system)
            b.unload()
            reload = b.corral_generate("What is the last word above?", 4, system=system)
            warm = b.corral_generate("What is the second word above?", 4, system=system)
            return cold, reload, warm

        cold, reload, warm = b.gate.run(cycle)
        rows.append({"cold_ms": cold.ttft * 1e3, "reload_ms": reload.ttft * 1e3, "warm_ms": warm.ttft * 1e3,
                     "cold_load_ms": cold.load_s * 1e3, "reload_load_ms": reload.load_s * 1e3,
                     "cold_prompt_n": cold.prompt_n, "reload_prompt_n": reload.prompt_n,
                     "warm_prompt_n": warm.prompt_n})
    kv_files = sorted(str(p.relative_to(Path(b.corral.env["CORRAL_HOME"])))
                      for p in Path(b.corral.env["CORRAL_HOME"]).glob("kvcache/*/*"))
    return {
        "cold_ms": median([r["cold_ms"] for r in rows]),
        "reload_ms": median([r["reload_ms"] for r in rows]),
        "warm_ms": median([r["warm_ms"] for r in rows]),
        "ratio": median([r["reload_ms"] / r["cold_ms"] for r in rows]),
        "runs": rows,
        "kv_files": kv_files,
    }


def _lat(latencies: list[float], errors: list[str], wall: float) -> dict[str, Any]:
    ms = [x * 1e3 for x in latencies]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms, default=float("nan")),
            "requests": len(ms), "req_s": len(ms) / wall if wall else 0.0, "errors": errors[:5],
            "error_count": len(errors)}


class Background:
    """A generation streaming from Corral in a thread for as long as the test needs (restarted if it ends)."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.stop = threading.Event()
        self.started = threading.Event()
        self.chunks: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="background-generation")

    def _run(self) -> None:
        with httpx.Client(base_url=self.b.corral.url, timeout=TIMEOUT) as http:
            while not self.stop.is_set():
                body = {"model": MODEL, "prompt": f"({self.b.unique()}) Count from 1 to 5000, separated by commas.",
                        "options": {"temperature": 0, "num_predict": 4000}, "stream": True}
                with http.stream("POST", "/api/generate", json=body) as r:
                    for line in r.iter_lines():
                        if line and '"done":false' in line:
                            self.chunks.append(time.perf_counter())
                            self.started.set()
                        if self.stop.is_set():
                            break

    def __enter__(self) -> Background:
        self.thread.start()
        if not self.started.wait(60):
            raise RuntimeError("background generation did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def rate_between(self, t0: float, t1: float) -> float:
        n = sum(1 for t in self.chunks if t0 <= t <= t1)
        return n / (t1 - t0) if t1 > t0 else 0.0


def bench_latency(b: Bench) -> dict[str, Any]:
    """7. p50/p99 of GET /api/tags and POST /api/show with 50 concurrent clients, idle and while a generation
    streams."""
    port = b.corral.port
    n, per = b.plan.lat_clients, b.plan.lat_per_client
    out: dict[str, Any] = {"clients": n, "per_client": per}
    b.gate.wait_quiet()
    for key, method, path, body in (("tags_single", "GET", "/api/tags", None),
                                    ("show_single", "POST", "/api/show", {"model": MODEL})):
        c0 = procs.cpu_seconds(b.corral.pid)
        out[key] = _lat(*clients.hammer(port, method, path, body, 1, 100))
        out[key]["server_cpu_ms"] = (procs.cpu_seconds(b.corral.pid) - c0) * 1e3 / 100
    clients.hammer(port, "GET", "/api/tags", None, n, 2)  # warm-up: the server's worker threads start on demand
    out["tags_idle"] = _lat(*clients.hammer(port, "GET", "/api/tags", None, n, per))
    b.gate.wait_quiet()
    with Background(b) as bg:
        time.sleep(1.5)
        t0 = time.perf_counter()
        solo_rate = bg.rate_between(t0 - 1.0, t0)
        out["tags_streaming"] = _lat(*clients.hammer(port, "GET", "/api/tags", None, n, per))
        t1 = time.perf_counter()
        out["show_streaming"] = _lat(*clients.hammer(port, "POST", "/api/show", {"model": MODEL}, n, per))
        t2 = time.perf_counter()
        out["stream_tok_s_alone"] = solo_rate
        out["stream_tok_s_during_tags"] = bg.rate_between(t0, t1)
        out["stream_tok_s_during_show"] = bg.rate_between(t1, t2)
    return out


# -- report ------------------------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def summary(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The results table: one row per headline figure, with target and verdict where the issue sets one."""
    rows: list[dict[str, Any]] = []

    def row(name: str, corral: float, direct: float | None, rel: float | None, rel_text: str, target: str,
            ok: bool | None, unit: str) -> None:
        rows.append({"metric": name, "corral": corral, "direct": direct, "relative": rel, "relative_text": rel_text,
                     "target": target, "pass": ok, "unit": unit})

    d = r["decode"]
    q = d["corral_engine_tok_s"] / d["direct_engine_tok_s"]
    row("decode, engine timings", d["corral_engine_tok_s"], d["direct_engine_tok_s"], q, f"{q:.3f}x", ">= 0.97x",
        q >= 0.97, "tok/s")
    q = d["corral_wall_tok_s"] / d["direct_wall_tok_s"]
    row("decode, client wall", d["corral_wall_tok_s"], d["direct_wall_tok_s"], q, f"{q:.3f}x", ">= 0.97x", q >= 0.97,
        "tok/s")
    p = r["prompt_eval"]
    q = p["corral_tok_s"] / p["direct_tok_s"]
    row(f"prompt eval ({p['prompt_tokens']:.0f} tok)", p["corral_tok_s"], p["direct_tok_s"], q, f"{q:.3f}x",
        ">= 0.95x", q >= 0.95, "tok/s")
    t = r["ttft"]
    outside = t["corral_outside_engine_ms"] - t["direct_outside_engine_ms"]
    row("TTFT, short prompt", t["corral_ms"], t["direct_ms"], t["overhead_ms"],
        f"{t['overhead_ms']:+.1f} ms (outside engine {outside:+.1f})", "<= +5 ms", t["overhead_ms"] <= 5.0, "ms")
    levels = r["aggregate"]["levels"]
    for level, v in levels.items():
        q = ratio(v["corral_tok_s"], v["direct_tok_s"])
        if level == "4":
            row("aggregate, 4 clients", v["corral_tok_s"], v["direct_tok_s"], q, f"{q:.3f}x", ">= 0.95x",
                q >= 0.95, "tok/s")
            if "1" in levels:
                paired = r["aggregate"].get("scaling_4_1")
                if paired:  # the median of each repeat's own 4 / 1 ratio
                    s, sd = median(paired["corral"]), median(paired["direct"])
                else:  # runs from before the repeats were paired: the ratio of the medians
                    s = v["corral_tok_s"] / levels["1"]["corral_tok_s"]
                    sd = ratio(v["direct_tok_s"], levels["1"]["direct_tok_s"])
                row("aggregate 4 / 1 client", v["corral_tok_s"], v["direct_tok_s"], s,
                    f"{s:.2f}x (direct {sd:.2f}x)", ">= 1.4x", s >= 1.4, "tok/s")
        else:
            row(f"aggregate, {level} client(s)", v["corral_tok_s"], v["direct_tok_s"], q, f"{q:.3f}x", "", None,
                "tok/s")
    c = r["chat_turns"]
    row(f"chat turn-2 TTFT / turn 1 ({c['history_tokens']} tok)", c["corral_turn2_ms"], c["direct_turn2_ms"],
        c["corral_ratio"], f"{c['corral_ratio']:.3f}x (turn 1 {c['corral_turn1_ms']:.0f} ms)", "<= 0.3x",
        c["corral_ratio"] <= 0.3, "ms")
    rl = r["reload"]
    row("TTFT after reload / cold", rl["reload_ms"], None, rl["ratio"],
        f"{rl['ratio']:.3f}x (cold {rl['cold_ms']:.0f} ms)", "<= 0.3x", rl["ratio"] <= 0.3, "ms")
    lat = r["latency"]
    for key, label, target in (("tags_streaming", "/api/tags p99, 50 clients + stream", 20.0),
                               ("show_streaming", "/api/show p99, 50 clients + stream", None),
                               ("tags_idle", "/api/tags p99, 50 clients, idle", None),
                               ("tags_single", "/api/tags p99, 1 client, idle", None),
                               ("show_single", "/api/show p99, 1 client, idle", None)):
        v = lat[key]
        row(label, v["p99_ms"], None, v["p50_ms"], f"p50 {v['p50_ms']:.1f} ms", "< 20 ms" if target else "",
            (v["p99_ms"] < target and not v["error_count"]) if target else None, "ms")
    m = r["rss"]
    row("peak RSS server + runner", m["total_mib"], r["direct_rss_mib"], m["server_mib"],
        f"server {m['server_mib']:.0f} + runner {m['runner_mib']:.0f}", "", None, "MiB")
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("metric", "Corral", "direct", "Corral vs direct", "target", "result")
    body = []
    for x in rows:
        verdict = "" if x["pass"] is None else ("PASS" if x["pass"] else "FAIL")
        direct = "" if x["direct"] is None else fmt(x["direct"])
        body.append((x["metric"], f"{fmt(x['corral'])} {x['unit']}", f"{direct} {x['unit']}" if direct else "",
                     x["relative_text"], x["target"], verdict))
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for r in body:
        print(line.format(*r))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results table as Markdown (for docs/benchmarks.md)."""
    out = ["| metric | Corral | direct engine | Corral vs direct | target | result |", "|---|---|---|---|---|---|"]
    for x in rows:
        verdict = "" if x["pass"] is None else ("**PASS**" if x["pass"] else "**FAIL**")
        direct = "" if x["direct"] is None else f"{fmt(x['direct'])} {x['unit']}"
        out.append(f"| {x['metric']} | {fmt(x['corral'])} {x['unit']} | {direct} | {x['relative_text']} | "
                   f"{x['target']} | {verdict} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run every measurement once, print the table, write the JSON; exit 0 even when targets fail."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (fewer, shorter trials)")
    ap.add_argument("--no-gate", action="store_true",
                    help="do not wait for quiet moments or rerun trials that other processes disturbed")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/<timestamp>.json)")
    ap.add_argument("--markdown", type=Path, metavar="JSON", help="print the table of an earlier run as Markdown")
    ap.add_argument("--speculative", action="store_true",
                    help="instead: decode speed with and without speculative decoding (benchmarks/speculative.py)")
    ap.add_argument("--engines", action="store_true",
                    help="instead: Corral on a native engine and on the wheel, with llama-server alone and "
                         "llama-bench as anchors (benchmarks/engines.py)")
    ap.add_argument("--engine", help="with --engines: the engine's name or path (default: the best one built)")
    ap.add_argument("--rounds", type=int, default=0, help="with --engines: interleaved rounds (default 5)")
    args = ap.parse_args(argv)
    if args.markdown:
        earlier = json.loads(args.markdown.read_text())
        if earlier.get("kind") == "engines":
            from benchmarks import engines

            print(engines.markdown(earlier))
        elif earlier.get("kind") == "speculative":
            from benchmarks import speculative

            print(speculative.markdown(earlier))
        else:
            print(markdown(earlier["summary"]))
        return 0
    if args.engines:
        from benchmarks import engines

        signal.signal(signal.SIGTERM, _terminate)
        return engines.run(args.quick, args.engine, args.rounds, args.out)
    if args.speculative:
        from benchmarks import speculative

        signal.signal(signal.SIGTERM, _terminate)
        return speculative.run(args.quick, not args.no_gate, args.out)
    plan = QUICK if args.quick else Plan()
    signal.signal(signal.SIGTERM, _terminate)  # so the finally below stops the servers
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    result: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "quick": args.quick,
                              "plan": plan.__dict__, "machine": procs.machine(), "loadavg_start": procs.loadavg()}
    result["prompt_check"] = check_prompts()
    if not all(result["prompt_check"].values()):
        print(f"warning: direct prompts differ from Corral's rendering: {result['prompt_check']}", file=sys.stderr)
    model = procs.bundled_model_path()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp_name:
        tmp = Path(tmp_name)
        corral = procs.start_corral(tmp, THREADS)
        direct: procs.Started | None = None
        rss = procs.RssSampler(corral.pid)
        rss.start()
        try:
            direct = procs.start_direct(tmp, model, NUM_CTX, SLOTS, THREADS)
            meter = procs.CpuMeter([corral.pid, direct.pid])
            gate = procs.Gate(meter, enabled=not args.no_gate, budget_s=30.0 if args.quick else 150.0)
            b = Bench(corral=corral, direct=direct, plan=plan, texts=Texts(direct.url), gate=gate,
                      uid=random.randint(100, 999))
            b.corral_generate("Hello", 8)  # loads the runner
            b.direct_generate("Hello", 8)
            result["runner_parallel"] = _ps_parallel(b)
            result["noise"] = {}
            rss_after: dict[str, float] = {"start": round(procs.status_kib(corral.pid, "VmHWM") / 1024, 1)}
            result["server_hwm_mib_after"] = rss_after
            sections: list[tuple[str, Callable[[Bench], dict[str, Any]]]] = [
                ("decode", bench_decode), ("prompt_eval", bench_prompt_eval), ("ttft", bench_ttft),
                ("aggregate", bench_aggregate), ("chat_turns", bench_chat_turns), ("latency", bench_latency),
                ("reload", bench_reload),
            ]
            for name, fn in sections:
                speed0 = round(procs.speed_ms(), 2)
                snap = meter.start()
                load0 = procs.loadavg()[0]
                t0 = time.monotonic()
                print(f"[{time.monotonic() - t_start:6.1f}s] {name} ...", file=sys.stderr, flush=True)
                result[name] = fn(b)
                result["noise"][name] = {"foreign_cpu_pct": round(meter.foreign_pct(snap), 1),
                                         "loadavg_1m_start": load0, "seconds": round(time.monotonic() - t0, 1),
                                         "speed_ms_before": speed0}
                rss_after[name] = round(procs.status_kib(corral.pid, "VmHWM") / 1024, 1)
            result["direct_rss_mib"] = procs.status_kib(direct.pid, "VmHWM") / 1024
            result["gate"] = gate.report()
        finally:
            result["rss"] = rss.stop()
            corral.stop()
            if direct is not None:
                direct.stop()
    result["loadavg_end"] = procs.loadavg()
    result["seconds"] = round(time.monotonic() - t_start, 1)
    result["summary"] = summary(result)
    print()
    print_table(result["summary"])
    noise = ", ".join(f"{k} {v['foreign_cpu_pct']:.0f}%" for k, v in result["noise"].items())
    speeds = ", ".join(f"{v['speed_ms_before']:.1f}" for v in result["noise"].values())
    g = result.get("gate", {})
    print(f"\nother processes' CPU during each section (% of {os.cpu_count()} cores): {noise}")
    print(f"CPU speed probe before each section (ms, lower is faster; a rise means a busy host): {speeds}")
    print(f"gate: {g.get('trials')} trials, {g.get('reruns')} rerun as disturbed, {g.get('noisy_trials_kept')} kept "
          f"disturbed, {g.get('waited_s')} s waited for quiet; load average {result['loadavg_start']} -> "
          f"{result['loadavg_end']}")
    lat = result["latency"]
    print(f"background stream during the latency test: {lat['stream_tok_s_alone']:.0f} tok/s alone, "
          f"{lat['stream_tok_s_during_tags']:.0f} during /api/tags load, {lat['stream_tok_s_during_show']:.0f} "
          f"during /api/show load; /api/tags throughput {lat['tags_streaming']['req_s']:.0f} req/s")
    print(f"greedy outputs identical Corral vs direct: {result['decode']['same_output']}; "
          f"runner slots: {result.get('runner_parallel')}; took {result['seconds']:.0f} s")
    out = args.out or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"JSON: {out}")
    return 0


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _ps_parallel(b: Bench) -> int | None:
    """Slots of Corral's loaded runner, from /api/ps (the comparison assumes the direct engine has as many)."""
    try:
        models = b.cc.get("/api/ps").json().get("models", [])
    except (httpx.HTTPError, ValueError):
        return None
    return int(models[0].get("parallel", 0)) if models else None


if __name__ == "__main__":
    sys.exit(main())
