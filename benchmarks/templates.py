"""The Go-template interpreter: parse and render time of every real chat template Corral ships or is tested on.

    python -m benchmarks.templates                     # the interpreter as it is (about a minute on 2 cores)
    python -m benchmarks.templates --baseline HEAD~3   # also the interpreter of a git revision, interleaved
    python -m benchmarks.templates --baseline HEAD~3 --markdown   # the comparison as a Markdown table

Templates: ``tests/fixtures/ollama_templates/*.gotmpl`` and ``corral/templates/builtin/*.gotmpl``.  For each:

* ``lex``: the lexer alone on the source;
* ``parse``: ``parse(source)``, i.e. lex + parse + compile of the main tree, what loading a model pays once;
* ``render``: ``prompt.render_chat`` of a representative chat on the already parsed template (a system message,
  three user turns, two assistant answers; for templates that use ``.Tools``, two tools, an assistant tool call and
  a tool result as well), i.e. what every request pays before it reaches the engine.

Timing is timeit's: garbage collection off, a loop count sized so one repeat lasts ~10 ms, then per-call times of
``--repeats`` repeats, on the thread's CPU clock by default, which leaves out the time other processes hold the
core (``--clock wall`` for wall-clock time).  A baseline revision's ``corral/templates/gotemplate*`` is extracted
with ``git archive`` and loaded, with its own copy of the working tree's ``prompt.py``, in the same process as the
current interpreter; the two take turns repeat by repeat, so a busy moment of a shared machine hits both alike.
That process runs ``--rounds`` times (fresh processes, the turn order swapped each round, each after waiting for a
quiet moment of the machine as the main benchmark does, within ``--wait`` seconds in all); the figure reported is
the median over all repeats of all rounds, with the minimum beside it, and after/before is the median ratio of
repeats measured back to back.  The header says how much CPU other processes took meanwhile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import importlib
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import procs

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIRS = (ROOT / "tests" / "fixtures" / "ollama_templates", ROOT / "corral" / "templates" / "builtin")
MODULE = "corral.templates.gotemplate"
PROMPT = "corral.templates.prompt"
TARGET_S = 0.01
CLOCK = time.thread_time
"""CPU time of the measuring thread: on a shared machine, time spent waiting for a core is not the interpreter's
(``--clock wall`` uses ``time.perf_counter`` instead)."""

SYSTEM = "You are a helpful assistant. Answer briefly, and say so when you do not know."
TURNS: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Why is the sky blue?"},
    {
        "role": "assistant",
        "content": "Rayleigh scattering: air molecules scatter short (blue) wavelengths of sunlight far more than "
        "long (red) ones, so blue light reaches your eyes from every direction of the sky.",
    },
    {"role": "user", "content": "And why are sunsets red? Keep it to two sentences, <please> & thanks."},
    {
        "role": "assistant",
        "content": "At sunset light crosses much more air, so most blue is scattered away before it reaches you.\n"
        'What is left is the red and orange end of the spectrum: "sunset colours".',
    },
    {"role": "user", "content": "Does the same happen on Mars?"},
]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "required": ["city"],
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {
                "type": "object",
                "required": ["query"],
                "properties": {"query": {"type": "string"}, "max_results": {"type": "integer"}},
            },
        },
    },
]
TOOL_TURNS: list[dict[str, Any]] = [
    *TURNS[:-1],
    {"role": "user", "content": "What is the weather in Paris right now?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}],
    },
    {"role": "tool", "content": '{"temperature": 18, "sky": "clear"}', "tool_name": "get_weather"},
    {"role": "user", "content": "Should I take a jacket?"},
]


def template_files() -> list[Path]:
    return [p for d in TEMPLATE_DIRS for p in sorted(d.glob("*.gotmpl"))]


def label(path: Path) -> str:
    return ("builtin/" if path.parent.name == "builtin" else "ollama/") + path.stem


# ---------------------------------------------------------------------------------------------------------------
# Worker: the interpreters side by side in one process


class Variant:
    """One interpreter and a ``prompt`` module bound to it."""

    def __init__(self, name: str, mod: ModuleType, prompt: ModuleType) -> None:
        assert prompt.Template is mod.Template, "prompt.py must render through the interpreter under test"
        self.name = name
        self.parse: Callable[[str], Any] = mod.parse
        self.render_chat: Callable[..., str] = prompt.render_chat
        self.lex = lexer_of(mod)


def lexer_of(mod: ModuleType) -> Callable[[str], Any]:
    """The lexer entry point: ``_lex`` of the single-file interpreter, ``lexer.lex`` of the package."""
    old = getattr(mod, "_lex", None)
    if old is not None:
        return old  # type: ignore[no-any-return]
    return sys.modules[mod.__name__ + ".lexer"].lex  # type: ignore[no-any-return]


def load_baseline(tree: str) -> Variant:
    """The interpreter extracted under ``tree`` (a file or a package) with its own copy of the working tree's
    ``prompt.py``.  Both are loaded under the real module names, then moved aside, so the working tree's
    modules stay what every later import sees."""
    parent = importlib.import_module("corral.templates")
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith(MODULE) or k == PROMPT}
    base = Path(tree) / "corral" / "templates"
    package = base / "gotemplate" / "__init__.py"
    if package.exists():
        spec = importlib.util.spec_from_file_location(MODULE, package, submodule_search_locations=[str(package.parent)])
    else:
        spec = importlib.util.spec_from_file_location(MODULE, base / "gotemplate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = mod
    try:
        spec.loader.exec_module(mod)
        variant = Variant("before", mod, importlib.import_module(PROMPT))
    finally:
        for k in [k for k in sys.modules if k.startswith(MODULE) or k == PROMPT]:
            sys.modules["baseline:" + k] = sys.modules.pop(k)
        sys.modules.update(ours)
        for k, m in ours.items():
            if k.count(".") == 2:
                setattr(parent, k.rsplit(".", 1)[1], m)
    return variant


def loops_for(fn: Callable[[], Any]) -> int:
    """timeit's autorange, aiming at TARGET_S per repeat."""
    fn()
    loops = 1
    while True:
        t0 = CLOCK()
        for _ in range(loops):
            fn()
        took = CLOCK() - t0
        if took >= TARGET_S / 5 or loops >= 1 << 20:
            return max(1, int(loops * TARGET_S / max(took, 1e-9)))
        loops *= 2


def timed(fn: Callable[[], Any], loops: int) -> float:
    t0 = CLOCK()
    for _ in range(loops):
        fn()
    return (CLOCK() - t0) / loops


def worker(tree: str | None, repeats: int, flip: bool) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per variant, template and measure: seconds per call of each repeat.  With a baseline, the variants take
    turns repeat by repeat (the order swapping each time), so a busy moment of the machine hits both alike."""
    variants = [Variant("after", importlib.import_module(MODULE), importlib.import_module(PROMPT))]
    if tree is not None:
        variants.insert(0, load_baseline(tree))
    if flip:
        variants.reverse()
    results: dict[str, dict[str, dict[str, list[float]]]] = {v.name: {} for v in variants}
    for path in template_files():
        src = path.read_text()
        jobs: list[tuple[Variant, str, Callable[[], Any]]] = []
        for v in variants:
            tmpl = v.parse(src)
            tools = TOOLS if tmpl.references("tools") else None
            msgs = TOOL_TURNS if tools else TURNS
            results[v.name][label(path)] = {"output": [float(len(v.render_chat(tmpl, msgs, tools=tools)))]}
            jobs.append((v, "lex", functools.partial(v.lex, src)))
            jobs.append((v, "parse", functools.partial(v.parse, src)))
            jobs.append((v, "render", functools.partial(v.render_chat, tmpl, msgs, tools=tools)))
        loops = {(v.name, what): loops_for(fn) for v, what, fn in jobs}
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for r in range(repeats):
                for v, what, fn in jobs if r % 2 == 0 else jobs[::-1]:
                    t = timed(fn, loops[v.name, what])
                    results[v.name][label(path)].setdefault(what, []).append(t)
        finally:
            if gc_was:
                gc.enable()
    return results


# ---------------------------------------------------------------------------------------------------------------
# Driver


def extract(rev: str, dest: Path) -> None:
    """``corral/templates/gotemplate*`` of a git revision, under ``dest``."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "corral/templates"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith("corral/templates/gotemplate")]
        tf.extractall(dest, members=members, filter="data")


def run_worker(tree: str | None, repeats: int, flip: bool, clock: str) -> dict[str, dict[str, dict[str, list[float]]]]:
    cmd = [sys.executable, "-m", "benchmarks.templates", "--worker", "--repeats", str(repeats), "--clock", clock]
    if tree is not None:
        cmd += ["--tree", tree]
    if flip:
        cmd.append("--flip")
    done = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def merge(into: dict[str, dict[str, list[float]]], part: dict[str, dict[str, list[float]]]) -> None:
    for name, measures in part.items():
        for what, samples in measures.items():
            into.setdefault(name, {}).setdefault(what, []).extend(samples if what != "output" else samples[:1])


MEASURES = ("lex", "parse", "render")


def summary(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Median and minimum per template and measure, in microseconds; ``TOTAL`` sums them."""
    out: dict[str, dict[str, float]] = {}
    for name, measures in samples.items():
        row: dict[str, float] = {}
        for what in MEASURES:
            row[what] = statistics.median(measures[what]) * 1e6
            row[what + "_min"] = min(measures[what]) * 1e6
        out[name] = row
    out["TOTAL"] = {k: sum(r[k] for r in list(out.values())) for k in next(iter(out.values()))}
    return out


def paired(before: dict[str, dict[str, list[float]]], after: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """After/before ratios of repeats measured back to back (the worker alternates the variants), median per
    template, so that drift of a busy machine cancels out; ``TOTAL`` weighs each template's ratio by its time
    (median before), i.e. the change of the summed time if every template changed by its own ratio."""
    out: dict[str, dict[str, float]] = {}
    for name in after:
        out[name] = {
            w: statistics.median(x / y for x, y in zip(after[name][w], before[name][w], strict=True)) for w in MEASURES
        }
    total: dict[str, float] = {}
    for w in MEASURES:
        weights = {name: statistics.median(before[name][w]) for name in after}
        total[w] = sum(out[name][w] * weights[name] for name in after) / sum(weights.values())
    out["TOTAL"] = total
    return out


def markdown(sums: dict[str, dict[str, dict[str, float]]], ratios: dict[str, dict[str, float]] | None) -> str:
    after = sums["after"]
    if ratios is None:
        lines = ["| template | lex µs | parse µs | render µs |", "|---|---:|---:|---:|"]
        lines += [f"| {n} | {r['lex']:.1f} | {r['parse']:.1f} | {r['render']:.1f} |" for n, r in after.items()]
        return "\n".join(lines)
    before = sums["before"]
    lines = [
        "| template | parse before µs | parse after µs | after/before | render before µs | render after µs | "
        "after/before | lex before µs | lex after µs | after/before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in after.items():
        b, q = before[name], ratios[name]
        cells = [f"{b[w]:.1f} | {r[w]:.1f} | {q[w]:.3f}" for w in ("parse", "render", "lex")]
        bold = "**" if name == "TOTAL" else ""
        lines.append(f"| {bold}{name}{bold} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def foreign_cpu_pct(since: tuple[float, float, float]) -> float:
    """Percent of the machine other processes took since ``since`` (wall, machine busy, ours incl. reaped workers):
    the noise indicator, as in the main benchmark."""
    wall, busy, ours = since
    mine = procs.cpu_seconds(os.getpid(), reaped_children=True) - ours
    elapsed = max(time.monotonic() - wall, 1e-6)
    return max(0.0, 100.0 * ((procs.machine_busy_seconds() - busy) - mine) / (elapsed * (os.cpu_count() or 1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.templates", description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also measure the interpreter of this git revision")
    ap.add_argument("--rounds", type=int, default=4, help="worker processes, one after another (default 4)")
    ap.add_argument("--repeats", type=int, default=9, help="timed repeats per measure and round (default 9)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument(
        "--wait", type=float, default=300.0, help="seconds to spend in all waiting for quiet moments before rounds"
    )
    ap.add_argument("--json", metavar="PATH", help="write raw samples and summaries here")
    ap.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="thread CPU time (default) or wall-clock time"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--flip", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.worker:
        json.dump(worker(args.tree, args.repeats, args.flip), sys.stdout)
        return 0

    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    foreign: list[float] = []
    gate = procs.Gate(procs.CpuMeter([]), quiet_pct=10.0, budget_s=args.wait, enabled=args.wait > 0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="corral-tmplbench-") as tmp:
        tree = None
        if args.baseline:
            extract(args.baseline, Path(tmp))
            tree = tmp
        for rnd in range(args.rounds):
            gate.wait_quiet(max_wait=60.0)
            snap = time.monotonic(), procs.machine_busy_seconds(), procs.cpu_seconds(os.getpid(), reaped_children=True)
            for v, part in run_worker(tree, args.repeats, rnd % 2 == 1, args.clock).items():
                merge(samples.setdefault(v, {}), part)
            foreign.append(foreign_cpu_pct(snap))
    elapsed = time.monotonic() - started
    ratios = None
    if args.baseline:
        for name in samples["after"]:
            if samples["after"][name]["output"] != samples["before"][name]["output"]:
                print(f"warning: {name} renders to a different length before and after", file=sys.stderr)
        ratios = paired(samples["before"], samples["after"])
    sums = {v: summary(s) for v, s in samples.items()}
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"# {when}, {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
        f"{len(template_files())} templates, {args.rounds} rounds x {args.repeats} repeats, {args.clock} clock, "
        f"{elapsed:.0f} s; "
        f"other processes took {statistics.median(foreign):.0f}% of the machine (median of rounds, max "
        f"{max(foreign):.0f}%), {gate.waited_s:.0f} s spent waiting for quiet, load average {os.getloadavg()[0]:.1f}"
    )
    if args.markdown:
        print(markdown(sums, ratios))
    else:
        for v, s in sums.items():
            print(f"\n{v}: medians (minima) in µs: lex / parse / render")
            for name, r in s.items():
                cells = " ".join(f"{r[w]:9.1f} ({r[w + '_min']:8.1f})" for w in MEASURES)
                print(f"  {name:28s} {cells}")
        if ratios is not None:
            t = ratios["TOTAL"]
            print(f"\nafter/before, paired: lex {t['lex']:.3f}, parse {t['parse']:.3f}, render {t['render']:.3f}")
    if args.json:
        out = {"when": when, "foreign_pct": foreign, "samples": samples, "summary": sums, "paired": ratios}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
