"""``corral service install|uninstall``: a systemd unit that runs ``corral serve`` at login or at boot.

``--user`` (the default) writes ``~/.config/systemd/user/corral.service`` for the current user, with the store and
address this CLI uses now; ``--system`` writes ``/etc/systemd/system/corral.service``, which runs as a dedicated
``corral`` user with its state in ``/var/lib/corral``. Neither runs ``systemctl``: enabling a service is the
administrator's step, and the command prints it. The unit stops the server with SIGTERM to the server alone
(``KillMode=mixed``), so it ends streams with an error line, saves KV caches and stops its runners itself.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral import __version__, config

Scope = Literal["user", "system"]
UNIT_NAME = "corral.service"
MARKER = "# Written by `corral service install`"
SYSTEM_USER = "corral"
SYSTEM_STATE = Path("/var/lib/corral")


class ServiceError(Exception):
    """Installing or removing the unit failed; the message is one line for the user."""


@dataclass(frozen=True)
class UnitSettings:
    scope: Scope
    python: str
    host: str
    models: Path
    home: Path


def default_dir(scope: Scope) -> Path:
    if scope == "system":
        return Path("/etc/systemd/system")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "systemd" / "user"


def host_port(bound: config.HostPort) -> str:
    """``host:port`` as CORRAL_HOST takes it back (IPv6 in brackets)."""
    return f"[{bound.host}]:{bound.port}" if ":" in bound.host else f"{bound.host}:{bound.port}"


def settings(scope: Scope, *, host: str | None = None, models: str | None = None) -> UnitSettings:
    """What the unit runs: this Python's ``-m corral serve``, on the address and store the CLI uses now (``--user``)
    or on loopback with ``/var/lib/corral`` (``--system``), unless given."""
    if scope == "system":
        home = SYSTEM_STATE
        store = Path(models).expanduser() if models else SYSTEM_STATE / "models"
        address = host or "127.0.0.1:11434"
    else:
        home = config.home()
        store = Path(models).expanduser() if models else config.models_dir()
        address = host or host_port(config.host())
    return UnitSettings(scope, sys.executable, address, store.absolute(), home.absolute())


def _quote(value: str) -> str:
    """One word of a unit file value: double-quoted, with systemd's escapes; ``%`` doubled (specifiers)."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ServiceError("a path or setting for the unit contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _exec_word(value: str) -> str:
    """A word of ``ExecStart=``, where ``$`` would also be expanded."""
    return _quote(value).replace("$", "$$")


def unit_text(s: UnitSettings) -> str:
    scope_flag = f"--{s.scope}"
    lines = [
        f"{MARKER} {scope_flag} (corral {__version__}); remove it with `corral service uninstall {scope_flag}`.",
        "[Unit]",
        "Description=Corral local LLM server (Ollama-compatible API)",
    ]
    if s.scope == "system":
        lines += ["After=network-online.target", "Wants=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={_exec_word(s.python)} -m corral serve",
        f"Environment={_quote('CORRAL_HOST=' + s.host)}",
        f"Environment={_quote('CORRAL_MODELS=' + str(s.models))}",
        f"Environment={_quote('CORRAL_HOME=' + str(s.home))}",
        "Restart=on-failure",
        "RestartSec=3",
        "# SIGTERM to the server alone: it ends streams with an error line, saves KV caches and stops its runners",
        "KillMode=mixed",
        "TimeoutStopSec=30",
        "NoNewPrivileges=yes",
    ]
    if s.scope == "system":
        lines += [
            f"# Runs as a dedicated user, which must exist: useradd --system --user-group --home-dir {SYSTEM_STATE} "
            f"--shell /usr/sbin/nologin {SYSTEM_USER}",
            f"User={SYSTEM_USER}",
            f"Group={SYSTEM_USER}",
            f"Environment={_quote('HOME=' + str(SYSTEM_STATE))}",
            "StateDirectory=corral",
            "StateDirectoryMode=0750",
            "ProtectSystem=full",
            "ProtectHome=read-only",
            "PrivateTmp=yes",
            f"ReadWritePaths={_quote('-' + str(s.models))}",  # "-": no error while it does not exist yet
        ]
    lines += [
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if s.scope == 'system' else 'default.target'}",
        "",
    ]
    return "\n".join(lines)


def _ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(MARKER)
    except OSError:
        return False


def install(s: UnitSettings, directory: Path | None = None, *, force: bool = False) -> tuple[Path, bool]:
    """Write the unit; returns its path and whether anything changed. A unit file there that Corral did not write
    is kept unless ``force``."""
    target = (directory or default_dir(s.scope)) / UNIT_NAME
    text = unit_text(s)
    try:
        if target.read_text(encoding="utf-8") == text:
            return target, False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ServiceError(f"cannot read {target}: {exc.strerror}") from None
    if target.exists() and not force and not _ours(target):
        raise ServiceError(f"{target} exists and was not written by corral; use --force to replace it")
    tmp = target.with_name(f".{UNIT_NAME}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except PermissionError:
        tmp.unlink(missing_ok=True)
        hint = " (run it with sudo)" if s.scope == "system" else ""
        raise ServiceError(f"cannot write {target}: permission denied{hint}") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ServiceError(f"cannot write {target}: {exc.strerror}") from None
    return target, True


def uninstall(scope: Scope, directory: Path | None = None, *, force: bool = False) -> Path | None:
    """Remove the unit Corral wrote; returns its path, or None when there was none."""
    base = directory or default_dir(scope)
    target = base / UNIT_NAME
    if not target.exists():
        return None
    if not force and not _ours(target):
        raise ServiceError(f"{target} was not written by corral; use --force to remove it")
    enabled = sorted(base.glob(f"*.wants/{UNIT_NAME}"))  # the links `systemctl enable` made
    if enabled:
        raise ServiceError(f"corral.service is enabled ({enabled[0]}): run `{systemctl(scope)} disable --now corral` "
                           "first")
    try:
        target.unlink()
    except PermissionError:
        hint = " (run it with sudo)" if scope == "system" else ""
        raise ServiceError(f"cannot remove {target}: permission denied{hint}") from None
    except OSError as exc:
        raise ServiceError(f"cannot remove {target}: {exc.strerror}") from None
    return target


def systemctl(scope: Scope) -> str:
    return "systemctl --user" if scope == "user" else "sudo systemctl"


def others_can_run(path: str) -> bool:
    """Whether a user other than the owner can run ``path``: every directory on the way searchable by others,
    the file executable by others (what the ``corral`` system user needs of this Python)."""
    current = Path(path).absolute()
    for part in [*reversed(current.parents), current]:
        try:
            mode = os.stat(part).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def next_steps(s: UnitSettings, target: Path, default_location: bool) -> list[str]:
    """What to run after installing, for the message."""
    if s.scope == "user":
        steps = ["systemctl --user daemon-reload", "systemctl --user enable --now corral",
                 "loginctl enable-linger $USER   # optional: keep it running after you log out"]
    else:
        steps = [f"sudo useradd --system --user-group --home-dir {SYSTEM_STATE} --shell /usr/sbin/nologin "
                 f"{SYSTEM_USER}   # once", "sudo systemctl daemon-reload", "sudo systemctl enable --now corral"]
    if not default_location:
        steps.insert(0, f"# {target} is not where systemd looks; copy it to {default_dir(s.scope)}")
    return steps
