"""The ``corral`` command: an HTTP client of the Corral server with Ollama's commands, flags and output.

Only ``click`` is imported up front so ``corral --help`` stays fast; each command imports what it needs. Every
failure ends as one ``Error: ...`` line on stderr and exit status 1; Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import click

from corral import __version__

if TYPE_CHECKING:
    from corral.cli.client import Client

# Flags that take an optional value, like cobra's NoOptDefVal: a bare ``--think`` means ``--think=true``, and the
# next word stays a prompt word rather than becoming the flag's value.
OPTIONAL_VALUE_FLAGS = {"--think": "true", "--truncate": "true"}

HOST_ENV_HELP = """\b
Environment Variables:
      OLLAMA_HOST                 IP Address for the corral server (default 127.0.0.1:11434)
                                  (CORRAL_HOST wins when both are set)
      CORRAL_API_KEY              API key sent to the server (Authorization: Bearer)"""

RUN_ENV_HELP = HOST_ENV_HELP + """
      OLLAMA_NOHISTORY            Do not preserve readline history"""

SERVE_ENV_HELP = """\b
Environment Variables:
      OLLAMA_DEBUG                Show additional debug information (e.g. OLLAMA_DEBUG=1)
      OLLAMA_HOST                 IP Address for the corral server (default 127.0.0.1:11434)
      OLLAMA_CONTEXT_LENGTH       Context length to use unless otherwise specified (default: 4096)
      OLLAMA_KEEP_ALIVE           The duration that models stay loaded in memory (default "5m")
      OLLAMA_MAX_LOADED_MODELS    Maximum number of loaded models
      OLLAMA_MAX_QUEUE            Maximum number of queued requests
      OLLAMA_MODELS               The path to the models directory
      OLLAMA_NUM_PARALLEL         Maximum number of parallel requests
      OLLAMA_NOPRUNE              Do not prune model blobs on startup
      OLLAMA_ORIGINS              A comma separated list of allowed origins
      OLLAMA_FLASH_ATTENTION      Enabled flash attention
      OLLAMA_KV_CACHE_TYPE        Quantization type for the K/V cache (default: f16)
      OLLAMA_LOAD_TIMEOUT         How long to allow model loads to stall before giving up (default "5m")
      CORRAL_HOME                 Corral's state directory (default ~/.corral)
      CORRAL_ENGINE               The engine to run models on: wheel, a built engine's name, or a path
      CORRAL_RPC_SERVERS          RPC workers (host:port,...) to split generation models over
      CORRAL_LLAMA_SERVER         An external llama-server binary to run models with
      CORRAL_API_KEY              Require this API key from clients (Bearer or x-api-key)
      CORRAL_REQUIRE_AUTH         Refuse to listen beyond loopback without CORRAL_API_KEY
Every OLLAMA_* variable may also be spelled CORRAL_*, which wins."""


class CorralGroup(click.Group):
    """Lists commands in Ollama's order (not alphabetically) and resolves the hidden aliases ``ls`` and
    ``start``."""

    aliases: ClassVar[dict[str, str]] = {"ls": "list", "start": "serve"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        from corral.errors import Interrupted

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else name), command, rest


def connect(*, autostart: bool = True) -> Client:
    """A client for ``CORRAL_HOST``/``OLLAMA_HOST``, with the server started first when it is local and down."""
    from corral import config
    from corral.cli.autostart import ensure_server
    from corral.cli.client import Client

    client = Client(config.host())
    if autostart:
        try:
            ensure_server(client)
        except BaseException:
            client.close()
            raise
    return client


def print_version() -> None:
    """Ollama's ``-v``: the server's version when one answers, and the client's when it differs."""
    from corral import config
    from corral.cli.client import Client, ClientError

    server_version = ""
    with Client(config.host(), connect_timeout=2.0) as client:
        try:
            server_version = client.version()
        except ClientError:
            click.echo("Warning: could not connect to a running Corral instance")
    if server_version:
        click.echo(f"corral version is {server_version}")
    if server_version != __version__:
        click.echo(f"Warning: client version is {__version__}")


@click.group(cls=CorralGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--version", "show_version", is_flag=True, help="Show version information")
@click.pass_context
def cli(ctx: click.Context, show_version: bool) -> None:
    """Large language model runner"""
    if show_version:
        print_version()
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command(epilog=SERVE_ENV_HELP)
def serve() -> None:
    """Start corral"""
    import importlib

    # imported by name so the CLI neither loads nor type-checks the server stack until it is asked to serve
    try:
        server = importlib.import_module("corral.http.server")
    except ImportError as exc:
        raise click.ClickException(f"the corral server is not available: {exc}") from None
    server.serve()


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("model")
@click.option(
    "-f", "--file", "modelfile", type=click.Path(dir_okay=False), help='Name of the Modelfile (default "Modelfile")'
)
@click.option("-q", "--quantize", help="Quantize model to this level (e.g. q4_K_M)")
def create(model: str, modelfile: str | None, quantize: str | None) -> None:
    """Create a model"""
    from pathlib import Path

    from corral.cli import transfer

    with connect() as client:
        transfer.create(client, model, Path(modelfile) if modelfile else None, quantize=quantize)


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("model")
@click.option("--license", "show_license", is_flag=True, help="Show license of a model")
@click.option("--modelfile", is_flag=True, help="Show Modelfile of a model")
@click.option("--parameters", is_flag=True, help="Show parameters of a model")
@click.option("--template", is_flag=True, help="Show template of a model")
@click.option("--system", is_flag=True, help="Show system message of a model")
@click.option("-v", "--verbose", is_flag=True, help="Show detailed model information")
def show(
    model: str, show_license: bool, modelfile: bool, parameters: bool, template: bool, system: bool, verbose: bool
) -> None:
    """Show information for a model"""
    chosen = [name for name, on in (("license", show_license), ("modelfile", modelfile),
                                    ("parameters", parameters), ("system", system), ("template", template)) if on]
    if len(chosen) > 1:
        raise click.ClickException(
            "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
        )
    from corral.cli.views import show_info

    with connect() as client:
        resp = client.show(model, verbose=verbose)
    if not chosen:
        click.echo(show_info(resp, verbose), nl=False)
        return
    field = chosen[0]
    text = str(resp.get(field) or "")
    # Ollama prints system and template verbatim, the others with a newline
    click.echo(text, nl=field not in ("system", "template"))


@cli.command(epilog=RUN_ENV_HELP)
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--keepalive", help="Duration to keep a model loaded (e.g. 5m)")
@click.option("--verbose", is_flag=True, help="Show timings for response")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
@click.option("--nowordwrap", is_flag=True, help="Don't wrap words to the next line automatically")
@click.option("--format", "fmt", default="", help="Response format (e.g. json)")
@click.option("--think", help="Enable thinking mode: true/false or high/medium/low for supported models")
@click.option("--hidethinking", is_flag=True, help="Hide thinking output (if provided)")
@click.option("--truncate", help="For embedding models: truncate inputs exceeding context length (default: true)")
@click.option("--dimensions", type=int, default=0, help="Truncate output embeddings to specified dimension")
def run(
    model: str,
    prompt: tuple[str, ...],
    keepalive: str | None,
    verbose: bool,
    insecure: bool,
    nowordwrap: bool,
    fmt: str,
    think: str | None,
    hidethinking: bool,
    truncate: str | None,
    dimensions: int,
) -> None:
    """Run a model"""
    from corral.cli import run as runner
    from corral.cli.params import keep_alive_value, think_value
    from corral.cli.turn import RunOptions
    from corral.errors import ParamError

    opts = RunOptions(model=model, word_wrap=not nowordwrap, format=fmt, verbose=verbose, insecure=insecure,
                      hide_thinking=hidethinking)
    try:
        if keepalive:
            opts.keep_alive = keep_alive_value(keepalive)
        if think is not None:
            opts.think, opts.think_explicit = think_value(think), True
        truncate_flag = None if truncate is None else _go_bool(truncate, "--truncate")
    except (ParamError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    with connect() as client:
        runner.run(client, opts, prompt, stdin=sys.stdin, truncate=truncate_flag, dimensions=dimensions)


def _go_bool(text: str, flag: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(
        f'invalid argument "{text}" for "{flag}" flag: strconv.ParseBool: parsing "{text}": invalid syntax'
    )


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("model")
def stop(model: str) -> None:
    """Stop a running model"""
    from corral.cli.client import ClientError
    from corral.cli.turn import RunOptions, load_model

    with connect() as client:
        try:
            load_model(client, RunOptions(model=model, keep_alive=0))
        except ClientError as exc:
            if "not found" in exc.message:
                raise ClientError(f'couldn\'t find model "{model}" to stop', exc.reply_status) from None
            raise


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry"""
    from corral.cli import transfer

    with connect() as client:
        transfer.pull(client, model, insecure=insecure)


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry")
def push(model: str, insecure: bool) -> None:
    """Push a model to a registry"""
    from corral.cli import transfer

    with connect() as client:
        transfer.push(client, model, insecure=insecure)


@cli.command("list", epilog=HOST_ENV_HELP)
@click.argument("prefix", required=False)
def list_(prefix: str | None) -> None:
    """List models"""
    from corral.cli.views import list_table

    with connect() as client:
        models = client.list().get("models") or []
    click.echo(list_table(models, prefix), nl=False)


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("prefix", required=False)
def ps(prefix: str | None) -> None:
    """List running models"""
    from corral.cli.views import ps_table

    with connect() as client:
        models = client.ps().get("models") or []
    click.echo(ps_table(models, prefix), nl=False)


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("source")
@click.argument("destination")
def cp(source: str, destination: str) -> None:
    """Copy a model"""
    with connect() as client:
        client.copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@cli.command(epilog=HOST_ENV_HELP)
@click.argument("models", nargs=-1, required=True)
def rm(models: tuple[str, ...]) -> None:
    """Remove a model"""
    from corral.cli.client import ClientError
    from corral.cli.turn import RunOptions, load_model

    with connect() as client:
        for name in models:
            try:
                load_model(client, RunOptions(model=name, keep_alive=0))  # unload it first if it is running
            except ClientError as exc:
                if "not found" not in exc.message.lower():
                    click.echo(f"Warning: unable to stop model '{name}'", err=True)
            client.delete(name)
            click.echo(f"deleted '{name}'")


@cli.command("export")
@click.argument("model")
@click.option("-o", "--output", required=True, help="Archive to write (an OCI image layout tar; '-' for stdout)")
def export(model: str, output: str) -> None:
    """Export a model to an OCI image archive"""
    from pathlib import Path

    from corral import config
    from corral.errors import InvalidModelName, StoreError
    from corral.store import archive
    from corral.store.store import Store

    store = Store(config.models_dir())  # a local operation on the store, like Ollama's: no server needed
    try:
        with _archive_progress("exporting") as progress:
            if output == "-":
                result = archive.export_model(store, model, sys.stdout.buffer, progress)
            else:
                result = archive.export_to_path(store, model, Path(output), progress)
    except (archive.ArchiveError, StoreError, InvalidModelName) as exc:
        raise click.ClickException(str(exc)) from None
    if output != "-":
        click.echo(f"exported '{result.name}' to {output}")


@cli.command("import")
@click.argument("archive_path", metavar="ARCHIVE", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Store the model under this name (default: the name recorded in the archive)")
def import_(archive_path: str, name: str | None) -> None:
    """Import a model from an OCI image archive"""
    from corral import config
    from corral.errors import InvalidModelName, StoreError
    from corral.store import archive
    from corral.store.store import Store

    store = Store(config.models_dir())
    try:
        with _archive_progress("importing") as progress:
            result = archive.import_archive(store, archive_path, name, progress)
    except (archive.ArchiveError, StoreError, InvalidModelName) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"imported '{result.name}'")


@cli.command(epilog=HOST_ENV_HELP)
@click.option("--no-browser", is_flag=True, help="Print the page's URL instead of opening a browser")
def ui(no_browser: bool) -> None:
    """Open the web chat in a browser"""
    from corral.cli.webui import open_in_browser, page_url

    with connect() as client:
        url = page_url(client.host)
    if no_browser or not open_in_browser(url):
        click.echo(url)
    else:
        click.echo(f"Opened {url} in your browser", err=True)


def _add_engine_commands() -> None:
    from corral.cli.engine import engine, worker

    cli.add_command(engine)
    cli.add_command(worker)


@contextlib.contextmanager
def _archive_progress(verb: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar per blob on a terminal (stderr); nothing when stderr is piped, so logs stay clean."""
    from corral.cli.progress import is_terminal

    if not is_terminal(sys.stderr):
        yield None
        return
    from corral.cli.transfer import TransferProgress

    with TransferProgress(verb) as bars:
        yield lambda digest, done, total: bars.update({"digest": digest, "total": total, "completed": done})


from corral.cli.admin import server_group, service_group  # noqa: E402 - the groups attach after the commands

cli.add_command(server_group)
cli.add_command(service_group)
_add_engine_commands()


@cli.command("help")
@click.argument("command", nargs=-1)
@click.pass_context
def help_(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Help about any command"""
    parent = ctx.parent or ctx
    if not command:
        click.echo(parent.get_help())
        return
    group = parent.command
    assert isinstance(group, click.Group)
    sub = group.get_command(parent, command[0])
    if sub is None:
        raise click.ClickException(f'unknown help topic "{command[0]}"')
    with click.Context(sub, info_name=sub.name, parent=parent) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


def normalize_args(args: Sequence[str]) -> list[str]:
    """Give optional-value flags their default when bare (``--think`` -> ``--think=true``), up to ``--``."""
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return out + list(args[index:])
        out.append(arg + "=" + OPTIONAL_VALUE_FLAGS[arg] if arg in OPTIONAL_VALUE_FLAGS else arg)
    return out


def _quiet_broken_pipe() -> None:
    """After EPIPE on stdout, point it at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exits with 0, 1 (error or bad usage), 130 (Ctrl-C) or 141 (stdout closed early)."""
    from corral.errors import ClientError, Interrupted

    args = normalize_args(sys.argv[1:] if argv is None else argv)
    code = 0
    try:
        result = cli.main(args=args, prog_name="corral", standalone_mode=False)
        if isinstance(result, int):  # click returns ctx.exit()'s code instead of raising when not standalone
            code = result
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        code = 1
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        code = 1
    except ClientError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        code = 1
    except (Interrupted, KeyboardInterrupt, click.Abort):
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # leave the shell prompt on a line of its own after ^C
        code = 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        code = 141
    except OSError as exc:
        click.echo(f"Error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), err=True)
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
        code = code or 141
    sys.exit(code)


if __name__ == "__main__":
    main()
