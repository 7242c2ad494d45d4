"""``corral server status|stop`` and ``corral service install|uninstall``: running Corral as a service.

Only click is imported here up front (the CLI's rule for a fast ``--help``); each command imports what it needs.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group("server")
def server_group() -> None:
    """Status of the server, or stop the one `corral run` started in the background"""


def _describe_elsewhere(url: str) -> str:
    return (f"a corral server answers at {url}, but it was not started in the background by corral: stop it where "
            "it was started (Ctrl-C in its terminal, `systemctl --user stop corral`, `docker stop ...`)")


@server_group.command("status")
def server_status() -> None:
    """Show whether a server is running, and whether corral started it in the background"""
    from corral import config
    from corral.cli import background
    from corral.cli.client import Client

    record, stale = background.current()
    if stale is not None:
        click.echo(f"removed the record of a background server that is no longer running (pid {stale.pid})")
    host = config.parse_host(record.host) if record is not None else config.host()
    with Client(host, connect_timeout=2.0) as client:
        answers = client.heartbeat(timeout=2.0)
    if record is not None:
        click.echo(f"corral server running in the background: pid {record.pid}, listening on {record.host}"
                   f"{'' if answers else ' (not answering yet)'}")
        click.echo(f"  started by `corral run`; log: {config.home() / 'logs' / 'server.log'}")
        click.echo("  stop it with: corral server stop")
        return
    if answers:
        click.echo(_describe_elsewhere(host.url))
        return
    click.echo(f"no corral server is running at {host.url}")
    raise click.exceptions.Exit(1)


@server_group.command("stop")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for it to exit")
@click.option("--force", is_flag=True, help="Kill it (SIGKILL) if it has not exited after --timeout")
def server_stop(timeout: float, force: bool) -> None:
    """Stop the server `corral run` started in the background"""
    from corral import config
    from corral.cli import background
    from corral.cli.client import Client

    record, _stale = background.current()
    if record is None:
        host = config.host()
        with Client(host, connect_timeout=2.0) as client:
            answers = client.heartbeat(timeout=2.0)
        if answers:
            raise click.ClickException(_describe_elsewhere(host.url))
        click.echo("no background corral server is running")
        return
    if background.stop(record, timeout, force=force):
        click.echo(f"stopped the corral server (pid {record.pid}) listening on {record.host}")
        return
    raise click.ClickException(f"the corral server (pid {record.pid}) did not exit within {timeout:g} s; "
                               "it is still running (use --force to kill it)")


@click.group("service")
def service_group() -> None:
    """Install or remove a systemd unit that runs `corral serve`"""


@service_group.command("install")
@click.option("--user", "scope", flag_value="user", default=True, help="For the current user (default)")
@click.option("--system", "scope", flag_value="system", help="System-wide, as a dedicated `corral` user")
@click.option("--path", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write the unit into this directory instead of systemd's")
@click.option("--host", help="Address to serve on (default: CORRAL_HOST now; 127.0.0.1:11434 for --system)")
@click.option("--models", help="Model store (default: CORRAL_MODELS now; /var/lib/corral/models for --system)")
@click.option("--force", is_flag=True, help="Replace a corral.service that corral did not write")
def service_install(scope: str, directory: Path | None, host: str | None, models: str | None, force: bool) -> None:
    """Write corral.service (systemd); prints the systemctl commands that enable it"""
    from corral.cli import service

    if host is not None:
        from corral import config

        host = service.host_port(config.parse_host(host))
    unit_scope: service.Scope = "system" if scope == "system" else "user"
    s = service.settings(unit_scope, host=host, models=models)
    try:
        target, changed = service.install(s, directory, force=force)
    except service.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'wrote' if changed else 'already up to date:'} {target}")
    if unit_scope == "system" and not service.others_can_run(s.python):
        click.echo(f"Warning: the `{service.SYSTEM_USER}` user cannot run {s.python}; install corral where every "
                   "user can (e.g. python3 -m venv /opt/corral && /opt/corral/bin/pip install ...) and run "
                   "install again with that corral", err=True)
    click.echo("next:")
    for step in service.next_steps(s, target, directory is None):
        click.echo(f"  {step}")


@service_group.command("uninstall")
@click.option("--user", "scope", flag_value="user", default=True, help="The current user's unit (default)")
@click.option("--system", "scope", flag_value="system", help="The system-wide unit")
@click.option("--path", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Remove the unit from this directory instead of systemd's")
@click.option("--force", is_flag=True, help="Remove a corral.service that corral did not write")
def service_uninstall(scope: str, directory: Path | None, force: bool) -> None:
    """Remove corral.service (stop and disable it first: the command says how)"""
    from corral.cli import service

    unit_scope: service.Scope = "system" if scope == "system" else "user"
    try:
        removed = service.uninstall(unit_scope, directory, force=force)
    except service.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    ctl = service.systemctl(unit_scope)
    if removed is None:
        click.echo(f"no corral.service in {directory or service.default_dir(unit_scope)}")
        return
    click.echo(f"removed {removed}")
    click.echo(f"next: {ctl} daemon-reload")
