"""``corral service install|uninstall``: the systemd unit's contents, and ``systemd-analyze verify`` on what it writes.

Units go to a temporary directory (``--path``); nothing is enabled or started. systemd-analyze runs here without a
running systemd: ``verify`` loads the unit file, checks every directive and that ExecStart's program exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corral.cli import service

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_HOME": str(tmp_path / "home"), "CORRAL_MODELS": str(tmp_path / "my models"),
                "CORRAL_HOST": "127.0.0.1:11999"})
    env.update(extra)
    return env


def test_user_unit_runs_this_python_on_the_cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MODELS", str(tmp_path / "my models"))
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CORRAL_HOST", "0.0.0.0:11500")
    text = service.unit_text(service.settings("user"))
    lines = text.splitlines()
    assert lines[0].startswith(service.MARKER)
    assert f'ExecStart="{sys.executable}" -m corral serve' in lines
    assert 'Environment="CORRAL_HOST=0.0.0.0:11500"' in lines
    assert f'Environment="CORRAL_MODELS={tmp_path / "my models"}"' in lines  # quoted: the space stays in the value
    assert "KillMode=mixed" in lines and "Restart=on-failure" in lines
    assert "WantedBy=default.target" in lines
    assert not any(line.startswith(("User=", "ProtectHome=")) for line in lines)


def test_system_unit_runs_as_a_dedicated_user_with_its_state_dir() -> None:
    lines = service.unit_text(service.settings("system")).splitlines()
    assert "User=corral" in lines and "Group=corral" in lines and "StateDirectory=corral" in lines
    assert 'Environment="CORRAL_MODELS=/var/lib/corral/models"' in lines
    assert 'Environment="CORRAL_HOST=127.0.0.1:11434"' in lines
    assert "WantedBy=multi-user.target" in lines and "After=network-online.target" in lines
    assert any("useradd --system" in line for line in lines if line.startswith("#"))


def test_values_are_escaped_for_systemd() -> None:
    s = service.UnitSettings("user", '/opt/we"ird $dir/100%/python', "127.0.0.1:1", Path("/m"), Path("/h"))
    assert 'ExecStart="/opt/we\\"ird $$dir/100%%/python" -m corral serve' in service.unit_text(s).splitlines()
    with pytest.raises(service.ServiceError, match="control character"):
        service.unit_text(service.UnitSettings("user", "/bin/py\nExecStartPre=/bin/evil", "h:1", Path("/m"),
                                               Path("/h")))


@pytest.mark.e2e
@pytest.mark.parametrize("scope", ["user", "system"])
def test_written_units_pass_systemd_analyze_verify(tmp_path: Path, scope: str) -> None:
    assert SYSTEMD_ANALYZE is not None, "systemd-analyze is missing: apt-get install systemd (.ci/run does)"
    target = tmp_path / "units"
    result = corral("service", "install", f"--{scope}", "--path", str(target), env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    unit = target / "corral.service"
    assert f"wrote {unit}" in result.stdout and "is not where systemd looks" in result.stdout
    runtime = tmp_path / "runtime"  # a user manager's runtime dir; verify needs one for --user
    runtime.mkdir(mode=0o700)
    args = [SYSTEMD_ANALYZE, *(["--user"] if scope == "user" else []), "verify", str(unit)]
    check = subprocess.run(args, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    # verify reports unknown keys and bad values as warnings with exit status 0: any output is a failure here
    assert check.returncode == 0 and check.stdout + check.stderr == "", check.stdout + check.stderr

    broken = tmp_path / "broken" / "corral.service"  # and verify would notice a bad unit
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("Type=exec", "Type=sometimes"))
    bad = subprocess.run([SYSTEMD_ANALYZE, *args[1:-1], str(broken)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert "Failed to parse service type" in bad.stderr


@pytest.mark.e2e
def test_install_is_idempotent_and_uninstall_removes_only_corrals_unit(tmp_path: Path) -> None:
    target = tmp_path / "units"
    env = cli_env(tmp_path)
    assert corral("service", "install", "--path", str(target), env=env).returncode == 0
    again = corral("service", "install", "--path", str(target), env=env)
    assert again.returncode == 0 and "already up to date" in again.stdout
    changed = corral("service", "install", "--path", str(target), "--host", "0.0.0.0:12000", env=env)
    assert changed.returncode == 0 and "wrote" in changed.stdout  # a unit corral wrote is updated in place
    assert 'Environment="CORRAL_HOST=0.0.0.0:12000"' in (target / "corral.service").read_text()

    wants = target / "default.target.wants"  # what `systemctl --user enable` leaves behind
    wants.mkdir()
    (wants / "corral.service").symlink_to(target / "corral.service")
    enabled = corral("service", "uninstall", "--path", str(target), env=env)
    assert enabled.returncode == 1 and "systemctl --user disable --now corral" in enabled.stderr
    (wants / "corral.service").unlink()
    removed = corral("service", "uninstall", "--path", str(target), env=env)
    assert removed.returncode == 0 and not (target / "corral.service").exists()
    none = corral("service", "uninstall", "--path", str(target), env=env)
    assert none.returncode == 0 and "no corral.service" in none.stdout

    (target / "corral.service").write_text("[Service]\nExecStart=/bin/true\n")  # somebody else's unit
    refused = corral("service", "install", "--path", str(target), env=env)
    assert refused.returncode == 1 and "was not written by corral" in refused.stderr
    assert corral("service", "uninstall", "--path", str(target), env=env).returncode == 1
    assert (target / "corral.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert corral("service", "install", "--path", str(target), "--force", env=env).returncode == 0


@pytest.mark.e2e
def test_system_install_where_it_may_not_write_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    (target / "corral.service").mkdir()  # a path that cannot be replaced by a file, whoever runs the test
    result = corral("service", "install", "--system", "--path", str(target), "--force", env=cli_env(tmp_path))
    assert result.returncode == 1 and result.stderr.startswith("Error: cannot ") and "Traceback" not in result.stderr
