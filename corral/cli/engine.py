"""``corral engine build|list|rm``: native llama.cpp builds for this machine, and ``corral worker``: an RPC worker.

These work on ``CORRAL_HOME`` directly; no server is needed. A server picks its engine when it starts, so after a
build or a removal the server must be restarted to change engines.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

import click


def exposure_warning(host: str, port: int) -> str | None:
    """What to tell someone who binds a worker beyond loopback (None on loopback)."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (f"Warning: listening on {host}:{port}. RPC has no authentication and no encryption: anyone who can "
            "reach this port can run computations on this machine's devices and read what they hold. Keep it on a "
            "private network you trust.")


@click.group("engine")
def engine() -> None:
    """Build, list and remove native engines"""


@engine.command("build")
@click.option("--cpu-native", "cpu_native", is_flag=True, help="For this machine's CPU (the default)")
@click.option("--cuda", is_flag=True, help="With the CUDA backend (NVIDIA GPUs)")
@click.option("--vulkan", is_flag=True, help="With the Vulkan backend (most GPUs)")
@click.option("--rpc", is_flag=True, help="With the RPC backend (corral worker, CORRAL_RPC_SERVERS)")
@click.option("-j", "--jobs", type=int, default=0, help="Parallel compile jobs (default: one per core)")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Build this llama.cpp source tree instead of the pinned xllamacpp's")
@click.option("--keep-build", is_flag=True, help="Keep the build directory (a rebuild is then incremental)")
@click.option("--force", is_flag=True, help="Rebuild an engine that is already built")
def build_cmd(cpu_native: bool, cuda: bool, vulkan: bool, rpc: bool, jobs: int, source: Path | None,
              keep_build: bool, force: bool) -> None:
    """Build llama.cpp's server for this machine"""
    from corral.engines import build
    from corral.errors import EngineError

    opts = build.BuildOptions(native=True, cuda=cuda, vulkan=vulkan, rpc=rpc, jobs=jobs, source=source,
                              keep_build=keep_build, force=force)
    if source is not None and not opts.version:
        opts.version = "local"
    from corral.engines import catalog

    existed = (catalog.engines_dir() / opts.name / catalog.META).is_file() and not force
    started = time.monotonic()
    try:
        with _BuildDisplay(opts.name) as display:
            built = build.build(opts, display.update)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None
    where = built.directory or built.server.parent
    if existed:
        click.echo(f"already built: {built.name} ({where}); --force rebuilds it")
        return
    click.echo(f"built {built.name} ({where}) in {_duration(time.monotonic() - started)}")
    click.echo("Restart the server to run models on it ('corral engine list' shows which engine serves).")


@engine.command("list")
def list_cmd() -> None:
    """List built engines and which one serves"""
    from corral.cli.format import render_table
    from corral.engines import catalog, select
    from corral.errors import EngineError

    try:
        choice: select.Choice | None = select.choose()
        problem = ""
    except EngineError as exc:
        choice, problem = None, str(exc)
    rows = []
    serving = choice.engine.name if choice is not None and choice.engine is not None else None
    wheel_serves = choice is not None and choice.engine is None
    for e in catalog.installed():
        why = e.runs_here()
        note = "serves" if e.name == serving else ("cannot run here" if why else "")
        rows.append([e.name, e.variant, e.version, _since(e.built), _size(e.directory), note])
    rows.append(["wheel", "cpu (generic)", catalog.wheel_version(), "", "", "serves" if wheel_serves else ""])
    if choice is not None and choice.engine is not None and choice.engine.directory is None:
        rows.append([str(choice.engine.server), "external", "", "", "", "serves"])
    click.echo(render_table(rows, ["NAME", "VARIANT", "LLAMA.CPP", "BUILT", "SIZE", ""]))
    if problem:
        click.echo(f"Warning: {problem}", err=True)
    elif choice is not None:
        click.echo(f"\nA server started now would use {choice.label} ({choice.reason}).", err=True)


@engine.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm_cmd(names: tuple[str, ...]) -> None:
    """Remove built engines"""
    from corral.engines import build
    from corral.errors import EngineError

    for name in names:
        try:
            build.remove(name)
        except EngineError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"deleted '{name}'")


@click.command("worker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on")
@click.option("--port", type=int, default=50052, show_default=True, help="Port to listen on")
@click.option("-t", "--threads", type=int, default=0, help="CPU threads (default: all cores)")
@click.option("--no-cache", is_flag=True, help="Do not keep received weights in a local file cache")
def worker(host: str, port: int, threads: int, no_cache: bool) -> None:
    """Serve this machine's CPU/GPU to other Corral servers (RPC)"""
    from corral import config
    from corral.engines import catalog, rpc, select
    from corral.errors import EngineError

    try:
        chosen = select.choose().engine
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None
    candidates = [chosen] if chosen is not None and chosen.rpc else []
    candidates += [e for e in catalog.installed() if e.rpc and e.runs_here() is None]
    binary = next((b for b in (e.tool(catalog.RPC_SERVER) for e in candidates) if b is not None), None)
    if binary is None:
        raise click.ClickException("no engine with RPC is built here: run 'corral engine build --rpc' first")
    warning = exposure_warning(host, port)
    if warning:
        click.echo(warning, err=True)
    cache = config.home() / "rpc-cache"
    cache.mkdir(parents=True, exist_ok=True)
    args = rpc.worker_command(binary, host, port, threads, cache=not no_cache)
    click.echo(f"worker: {binary} on {host}:{port}; on the server: CORRAL_RPC_SERVERS={host}:{port}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(binary), args, {**os.environ, "LLAMA_CACHE": str(cache)})


class _BuildDisplay:
    """A progress bar for the compile on a terminal; plain stage lines and every tenth of the way otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.stage = ""
        self.decile = -1
        self._progress: object = None
        self._task: object = None

    def __enter__(self) -> _BuildDisplay:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress = Progress(TextColumn("[bold]{task.fields[stage]:<9}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[line]}", style="dim"),
                                console=Console(stderr=True), transient=False)
            progress.start()
            self._task = progress.add_task(self.name, total=None, stage="", line="")
            self._progress = progress
        return self

    def update(self, stage: str, done: int, total: int, line: str) -> None:
        if self._progress is not None:
            from rich.progress import Progress

            assert isinstance(self._progress, Progress)
            short = line if len(line) <= 60 else "…" + line[-59:]
            fields: dict[str, object] = {"stage": stage, "line": short}
            if total:
                fields.update(total=total, completed=done)
            self._progress.update(self._task, **fields)  # type: ignore[arg-type]
            return
        if stage != self.stage:
            self.stage = stage
            click.echo(f"{stage}: {line}" if line else stage, err=True)
        elif total and done * 10 // total != self.decile:
            self.decile = done * 10 // total
            click.echo(f"{stage}: {done}/{total}", err=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            from rich.progress import Progress

            assert isinstance(self._progress, Progress)
            self._progress.stop()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _since(iso: str) -> str:
    from corral.cli.format import human_time

    try:
        return human_time(dt.datetime.fromisoformat(iso), "")
    except (ValueError, TypeError):
        return iso


def _size(directory: Path | None) -> str:
    from corral.cli.format import human_bytes

    if directory is None:
        return ""
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    return human_bytes(total)
