"""Pull and push against the tests' fault-injecting registry, in process, with small blobs and short timeouts.

Each fault ends in one of two ways: the transfer recovers (resuming from the bytes it had), or it fails with a
clear message; either way the store never holds a manifest that points at a missing or partial blob.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import RegistryError
from corral.registry import download
from corral.registry.options import TransferOptions
from corral.registry.pull import pull_model
from corral.registry.push import push_model
from corral.store import manifest as mf
from corral.store.store import Store
from tests.fault_registry import MEDIA_MODEL, FaultRegistry, digest_of, manifest_bytes, serve

FAST = TransferOptions(
    min_part=100_000, max_part=100_000, retry_base=0.01, retry_max=0.05, stall_timeout=0.5, max_stalls=3,
    api_retry_base=0.01, progress_interval=0.01, state_interval=0.05, connect_timeout=2.0,
)
WEIGHTS = os.urandom(350_000)  # four parts of 100 kB at FAST's part size
TEMPLATE = b"{{ .Prompt }}"
CONFIG = b'{"x":1}'  # the fault registry's default config blob


@pytest.fixture
def registry() -> Iterator[FaultRegistry]:
    with serve() as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, WEIGHTS), ("application/vnd.ollama.image.template",
                                                                          TEMPLATE)])
        yield reg


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


async def _collect(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in events]


def pull(store: Store, name: str, options: TransferOptions = FAST, insecure: bool = True) -> list[dict[str, Any]]:
    return asyncio.run(_collect(pull_model(store, name, insecure=insecure, options=options)))


def pull_error(store: Store, name: str, options: TransferOptions = FAST, insecure: bool = True) -> str:
    with pytest.raises(RegistryError) as info:
        pull(store, name, options, insecure)
    return str(info.value)


def assert_consistent(store: Store) -> None:
    """Every manifest's blobs are complete files of the declared size; nothing partial is referenced."""
    for record in store.list_models():
        for layer in record.manifest.blobs():
            assert store.blob_size(layer.digest) == layer.size, layer.digest


def statuses(events: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for event in events:
        if not out or out[-1] != event["status"]:
            out.append(event["status"])
    return out


def name_of(reg: FaultRegistry, repo: str = "library/tiny", tag: str = "latest") -> str:
    return f"{reg.host}/{repo}:{tag}"


# -- the happy path -------------------------------------------------------------------------------------------------


def test_pull_in_parts_keeps_manifest_bytes_and_a_second_pull_downloads_nothing(
        registry: FaultRegistry, store: Store) -> None:
    events = pull(store, name_of(registry))
    weights = digest_of(WEIGHTS)
    assert statuses(events) == ["pulling manifest", f"pulling {weights[7:19]}", f"pulling {digest_of(TEMPLATE)[7:19]}",
                                f"pulling {digest_of(CONFIG)[7:19]}", "verifying sha256 digest",
                                "writing manifest", "success"]
    bars = [e for e in events if e.get("digest") == weights]
    assert bars[-1]["completed"] == bars[-1]["total"] == len(WEIGHTS)
    assert all(e.get("completed", 0) <= len(WEIGHTS) for e in bars)
    assert sorted(registry.range_starts(weights)) == [0, 100_000, 200_000, 300_000]  # 4 ranged parts
    record = store.read_manifest(name_of(registry))
    assert record.raw == registry.manifests[("library/tiny", "latest")]  # the registry's exact bytes
    assert store.blob_path(weights).read_bytes() == WEIGHTS
    assert not list(store.blobs_dir.glob("*partial*"))

    before = len(registry.blob_gets())
    again = pull(store, name_of(registry))
    assert len(registry.blob_gets()) == before  # nothing transferred
    first_bars = {}
    for event in again:
        first_bars.setdefault(event.get("digest"), event)
    assert first_bars[weights]["completed"] == len(WEIGHTS)
    assert again[-1] == {"status": "success"}
    assert_consistent(store)


def test_push_then_pull_round_trip_with_chunked_upload(registry: FaultRegistry, store: Store,
                                                       tmp_path: Path) -> None:
    pull(store, name_of(registry))
    with serve() as empty:
        target = name_of(empty, "someone/copy", "v1")
        store.copy(name_of(registry), target)
        chunked = TransferOptions(**{**FAST.__dict__, "min_part": 150_000, "max_part": 150_000})
        events = asyncio.run(_collect(push_model(store, target, insecure=True, options=chunked)))
        assert statuses(events)[0] == "retrieving manifest"
        assert statuses(events)[-2:] == ["pushing manifest", "success"]
        weights = digest_of(WEIGHTS)
        bars = [e for e in events if e.get("digest") == weights]
        assert bars[0]["status"] == f"pushing {weights[7:19]}" and bars[-1]["completed"] == len(WEIGHTS)
        assert len([s for s in empty.seen if s.method == "PATCH"]) == 3  # 350 kB in 150 kB chunks
        assert empty.blobs[weights] == WEIGHTS
        assert empty.manifests[("someone/copy", "v1")] == store.read_manifest(target).raw
        other = Store(tmp_path / "other")
        pull(other, target)
        assert other.read_manifest(target).raw == store.read_manifest(target).raw

        puts = len([s for s in empty.seen if s.method == "PUT"])
        again = asyncio.run(_collect(push_model(store, target, insecure=True, options=chunked)))
        assert all(e["completed"] == e["total"] for e in again if e.get("digest"))
        assert len([s for s in empty.seen if s.method == "PUT"]) == puts + 1  # only the manifest


# -- broken transfers -----------------------------------------------------------------------------------------------


def test_dropped_connection_resumes_from_received_bytes(registry: FaultRegistry, store: Store) -> None:
    registry.faults.drop_after = 40_000
    registry.faults.drop_times = 1
    one_part = TransferOptions(**{**FAST.__dict__, "min_part": 1_000_000, "max_part": 1_000_000})
    pull(store, name_of(registry), one_part)
    starts = registry.range_starts(digest_of(WEIGHTS))
    assert starts[0] == 0 and len(starts) == 2
    assert 0 < starts[1] <= 40_000  # the retry asked only for what was missing
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    assert_consistent(store)


def test_failed_pull_leaves_progress_and_the_next_pull_resumes(registry: FaultRegistry, store: Store) -> None:
    registry.faults.drop_after = 30_000
    registry.faults.drop_times = 100
    stubborn = TransferOptions(**{**FAST.__dict__, "part_retries": 1, "min_part": 1_000_000,
                                  "max_part": 1_000_000})
    message = pull_error(store, name_of(registry), stubborn)
    assert "max retries exceeded" in message
    weights = digest_of(WEIGHTS)
    assert not store.has_blob(weights)
    state = json.loads(Path(str(store.blob_path(weights)) + "-partial-0").read_text())
    assert state["N"] == 0 and state["Size"] == len(WEIGHTS) and 0 < state["Completed"] <= 30_000
    assert store.list_models() == []

    registry.faults.drop_times = 0
    pull(store, name_of(registry), stubborn)
    assert registry.range_starts(weights)[-1] == state["Completed"]
    assert store.blob_path(weights).read_bytes() == WEIGHTS
    assert not list(store.blobs_dir.glob("*partial*"))
    assert_consistent(store)


def test_cancelled_pull_saves_progress_for_the_next_one(registry: FaultRegistry, store: Store) -> None:
    registry.faults.stall_after = 50_000
    registry.faults.stall_times = 1
    registry.faults.stall_seconds = 5
    one_part = TransferOptions(**{**FAST.__dict__, "min_part": 1_000_000, "max_part": 1_000_000,
                                  "stall_timeout": 10.0})
    weights = digest_of(WEIGHTS)

    async def interrupted() -> None:
        async def consume() -> None:
            async for event in pull_model(store, name_of(registry), insecure=True, options=one_part):
                if event.get("digest") == weights and event.get("completed", 0) >= 50_000:
                    await asyncio.sleep(0.2)  # let the state saver run
                    raise asyncio.CancelledError
        task = asyncio.create_task(consume())
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)

    asyncio.run(interrupted())
    state = json.loads(Path(str(store.blob_path(weights)) + "-partial-0").read_text())
    assert state["Completed"] == 50_000
    pull(store, name_of(registry), one_part)
    assert registry.range_starts(weights)[-1] == 50_000
    assert store.blob_path(weights).read_bytes() == WEIGHTS


def test_wrong_bytes_are_a_digest_mismatch_and_nothing_is_written(registry: FaultRegistry, store: Store) -> None:
    registry.faults.corrupt = True
    message = pull_error(store, name_of(registry))
    want = digest_of(WEIGHTS)
    got = digest_of(bytes(b ^ 0xFF for b in WEIGHTS))
    assert message == f"digest mismatch, file must be downloaded again: want {want}, got {got}"
    assert not store.has_blob(want)
    assert not list(store.blobs_dir.glob("*partial*"))
    assert store.list_models() == []


def test_stalled_part_is_re_requested_from_where_it_stopped(registry: FaultRegistry, store: Store) -> None:
    registry.faults.stall_after = 20_000
    registry.faults.stall_times = 1
    registry.faults.stall_seconds = 3
    one_part = TransferOptions(**{**FAST.__dict__, "min_part": 1_000_000, "max_part": 1_000_000})
    pull(store, name_of(registry), one_part)
    starts = registry.range_starts(digest_of(WEIGHTS))
    assert starts == [0, 20_000]
    assert_consistent(store)


def test_a_registry_that_keeps_stalling_fails_after_bounded_stalls(registry: FaultRegistry, store: Store) -> None:
    registry.faults.stall_after = 1_000
    registry.faults.stall_times = 100
    registry.faults.stall_seconds = 2
    quick = TransferOptions(**{**FAST.__dict__, "stall_timeout": 0.2, "max_stalls": 2})
    message = pull_error(store, name_of(registry), quick)
    assert "stalled" in message
    assert store.list_models() == []


def test_server_errors_are_retried_a_bounded_number_of_times(registry: FaultRegistry, store: Store) -> None:
    registry.faults.manifest_status = [500, 503]
    registry.faults.blob_status = [502, 500]
    pull(store, name_of(registry))
    assert_consistent(store)

    other = Store(store.root.parent / "other")
    registry.faults.manifest_status = [500] * 10
    message = pull_error(other, name_of(registry))
    assert message == "pull model manifest: 500: injected failure 500"
    assert registry.faults.manifest_status == [500] * (10 - FAST.api_attempts)  # bounded
    assert other.list_models() == []


def test_slow_answers_within_the_timeouts_still_succeed(registry: FaultRegistry, store: Store) -> None:
    registry.faults.header_delay = 0.05
    registry.faults.chunk_delay = 0.002
    pull(store, name_of(registry))
    assert_consistent(store)


def test_unknown_model_reads_like_ollama(registry: FaultRegistry, store: Store) -> None:
    assert pull_error(store, name_of(registry, "library/nothing")) == "pull model manifest: file does not exist"


def test_manifest_naming_a_missing_blob_fails_cleanly(registry: FaultRegistry, store: Store) -> None:
    ghost = os.urandom(1000)
    raw = manifest_bytes([(MEDIA_MODEL, WEIGHTS), (MEDIA_MODEL, ghost)], CONFIG)
    registry.manifests[("library/ghost", "latest")] = raw
    registry.blobs[digest_of(WEIGHTS)] = WEIGHTS
    registry.blobs[digest_of(CONFIG)] = CONFIG
    message = pull_error(store, name_of(registry, "library/ghost"))
    assert digest_of(ghost) in message and "file does not exist" in message
    assert store.list_models() == []
    assert not store.has_blob(digest_of(ghost))
    assert_consistent(store)


@pytest.mark.parametrize("digest", ["sha256:../../x", "sha256:" + "a" * 63 + "/", "../" + "a" * 64,
                                    "sha256:" + "a" * 64 + "\n", "sha512:" + "a" * 128])
def test_hostile_digests_are_refused_before_touching_the_disk(registry: FaultRegistry, store: Store,
                                                               tmp_path: Path, digest: str) -> None:
    doc = {"schemaVersion": 2, "mediaType": mf.MEDIA_MANIFEST,
           "config": {"mediaType": mf.MEDIA_CONFIG, "digest": digest_of(b"{}"), "size": 2},
           "layers": [{"mediaType": MEDIA_MODEL, "digest": digest, "size": 4}]}
    registry.manifests[("library/evil", "latest")] = json.dumps(doc).encode()
    message = pull_error(store, name_of(registry, "library/evil"))
    assert message.startswith("pull model manifest:") and "invalid digest format" in message
    assert not (tmp_path / "x").exists()
    assert not store.blobs_dir.exists() or not os.listdir(store.blobs_dir)
    assert store.list_models() == []


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"schemaVersion":2}',
                                 b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:' + b"a" * 64
                                 + b'","size":-1},"layers":[]}'])
def test_malformed_manifests_are_refused(registry: FaultRegistry, store: Store, raw: bytes) -> None:
    registry.manifests[("library/bad", "latest")] = raw
    assert pull_error(store, name_of(registry, "library/bad")).startswith("pull model manifest: ")
    assert store.list_models() == []


def test_oversized_manifest_is_refused(registry: FaultRegistry, store: Store) -> None:
    registry.manifests[("library/huge", "latest")] = b"{" + b" " * (5 << 20) + b"}"
    assert "larger than" in pull_error(store, name_of(registry, "library/huge"))


def test_unreachable_registry_names_the_host(store: Store) -> None:
    with serve() as reg:
        host = reg.host
    message = pull_error(store, f"{host}/library/tiny:latest")
    assert message.startswith(f"pull model manifest: cannot reach registry {host}")


def test_http_scheme_needs_insecure(registry: FaultRegistry, store: Store) -> None:
    assert pull_error(store, "http://" + name_of(registry), insecure=False) == "insecure protocol http"
    pull(store, "http://" + name_of(registry), insecure=True)
    assert_consistent(store)


def test_updated_model_removes_layers_nothing_else_uses(registry: FaultRegistry, store: Store) -> None:
    pull(store, name_of(registry))
    new_weights = os.urandom(1000)
    registry.add_model("library/tiny", "latest", [(MEDIA_MODEL, new_weights)])
    events = pull(store, name_of(registry))
    assert "removing unused layers" in statuses(events)
    assert not store.has_blob(digest_of(WEIGHTS)) and not store.has_blob(digest_of(TEMPLATE))
    assert store.has_blob(digest_of(new_weights))
    assert_consistent(store)


@pytest.mark.e2e
def test_concurrent_pulls_of_one_digest_share_one_download(registry: FaultRegistry, store: Store) -> None:
    registry.add_model("library/twin", "latest", [(MEDIA_MODEL, WEIGHTS)])
    registry.faults.chunk_delay = 0.03  # about 0.2 s per part: the second pull arrives while the first downloads
    weights = digest_of(WEIGHTS)

    async def both() -> list[dict[str, Any]]:
        first = asyncio.create_task(_collect(pull_model(store, name_of(registry), insecure=True, options=FAST)))
        await asyncio.sleep(0.1)
        second = await _collect(pull_model(store, name_of(registry, "library/twin"), insecure=True, options=FAST))
        await first
        return second

    second = asyncio.run(both())
    seen = [e.get("completed", 0) for e in second if e.get("digest") == weights]
    assert any(0 < c < len(WEIGHTS) for c in seen), seen  # it watched the running download, not a cache hit
    assert sorted(registry.range_starts(weights)) == [0, 100_000, 200_000, 300_000]  # fetched once
    assert len(store.list_models()) == 2
    assert download._active == {}
    assert_consistent(store)


# -- authentication -------------------------------------------------------------------------------------------------


def test_bearer_challenge_fetches_a_token_and_retries(registry: FaultRegistry, store: Store) -> None:
    registry.auth = "bearer"
    pull(store, name_of(registry))
    assert len(registry.token_requests) >= 1
    assert "scope=repository%3Alibrary%2Ftiny%3Apull" in registry.token_requests[0].path
    assert "service=fault-registry" in registry.token_requests[0].path
    assert all((s.authorization or "").startswith(f"Bearer {registry.token}|") for s in registry.blob_gets())
    assert_consistent(store)


def test_bearer_push_gets_a_push_scoped_token(registry: FaultRegistry, store: Store) -> None:
    pull(store, name_of(registry))
    with serve() as private:
        private.auth = "bearer"
        target = name_of(private, "me/pushed", "v1")
        store.copy(name_of(registry), target)
        asyncio.run(_collect(push_model(store, target, insecure=True, options=FAST)))
        assert any("pull%2Cpush" in t.path for t in private.token_requests)
        assert private.manifests[("me/pushed", "v1")] == store.read_manifest(target).raw


def test_realm_on_another_host_is_refused(registry: FaultRegistry, store: Store) -> None:
    registry.auth = "bearer"
    registry.realm = f"http://localhost:{registry.port}/token"  # same machine, different host name
    message = pull_error(store, name_of(registry))
    assert "realm host 'localhost" in message and f"original host '{registry.host}'" in message
    assert registry.token_requests == []


def test_realm_downgrading_https_is_refused() -> None:
    import httpx

    from corral.registry.auth import check_realm

    with pytest.raises(RegistryError, match="downgrades"):
        check_realm("http://r.example/token", httpx.URL("https://r.example/v2/x/y/manifests/z"))
    with pytest.raises(RegistryError, match="does not match"):
        check_realm("https://r.example:8443/token", httpx.URL("https://r.example/v2/"))
    with pytest.raises(RegistryError, match="invalid authentication realm"):
        check_realm("file:///etc/passwd", httpx.URL("https://r.example/v2/"))
    assert str(check_realm("https://R.example:443/t?a=1", httpx.URL("https://r.example/v2/"))).startswith("https://")


def test_basic_credentials_from_the_environment(registry: FaultRegistry, store: Store,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    registry.auth = "basic"
    registry.users = {"alice": "s3cret"}
    assert pull_error(store, name_of(registry)) == "pull model manifest: unauthorized: access denied"
    monkeypatch.setenv("CORRAL_REGISTRY_AUTH", json.dumps({registry.host: {"username": "alice",
                                                                            "password": "s3cret"}}))
    pull(store, name_of(registry))
    assert_consistent(store)


def test_token_endpoint_gets_basic_credentials_from_the_config_file(
        registry: FaultRegistry, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    registry.auth = "bearer"
    registry.users = {"bob": "pw"}
    home = tmp_path / "home"
    home.mkdir()
    auth = base64.b64encode(b"bob:pw").decode()
    (home / "registries.json").write_text(json.dumps({"auths": {f"http://{registry.host}": {"auth": auth}}}))
    monkeypatch.delenv("CORRAL_REGISTRY_AUTH", raising=False)
    monkeypatch.setenv("CORRAL_HOME", str(home))
    pull(store, name_of(registry))
    assert registry.token_requests[0].authorization == f"Basic {auth}"


def test_blobs_redirected_to_a_cdn_get_no_credentials(store: Store) -> None:
    with serve(cdn=True) as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, WEIGHTS)])
        reg.auth = "bearer"
        pull(store, name_of(reg))
        cdn_gets = [s for s in reg.blob_gets(digest_of(WEIGHTS)) if s.port == reg.cdn_port]
        assert len(cdn_gets) == 4  # every part went to the CDN origin
        assert all(s.authorization is None for s in cdn_gets)
    assert_consistent(store)


def test_an_expired_cdn_url_is_refreshed_from_the_registry(store: Store) -> None:
    with serve(cdn=True) as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, WEIGHTS)])
        reg.faults.cdn_status = [403]
        pull(store, name_of(reg))
        probes = [s for s in reg.seen if s.port == reg.port and s.range == "bytes=0-0"
                  and s.path.endswith(digest_of(WEIGHTS))]
        assert len(probes) == 2  # the first location, then a fresh one after the 403
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS


def test_range_ignored_by_the_server_still_assembles_the_blob(registry: FaultRegistry, store: Store) -> None:
    registry.faults.ignore_range = True
    pull(store, name_of(registry))
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS


# -- Hugging Face names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["hf.co", "huggingface.co"])
def test_hugging_face_names_map_to_namespace_repo_and_quant(registry: FaultRegistry, store: Store, host: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    registry.add_model("bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M", [(MEDIA_MODEL, WEIGHTS)])
    registry.add_model("bartowski/Llama-3.2-1B-Instruct-GGUF", "latest", [(MEDIA_MODEL, WEIGHTS)])
    monkeypatch.setenv("CORRAL_REGISTRY_MIRRORS", f"{host}={registry.url}")
    pull(store, f"{host}/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", insecure=False)
    pull(store, f"{host}/bartowski/Llama-3.2-1B-Instruct-GGUF", insecure=False)
    paths = [s.path for s in registry.seen if "/manifests/" in s.path]
    assert paths == ["/v2/bartowski/Llama-3.2-1B-Instruct-GGUF/manifests/Q4_K_M",
                     "/v2/bartowski/Llama-3.2-1B-Instruct-GGUF/manifests/latest"]
    assert (store.manifests_dir / host / "bartowski" / "Llama-3.2-1B-Instruct-GGUF" / "Q4_K_M").is_file()
    assert (store.manifests_dir / host / "bartowski" / "Llama-3.2-1B-Instruct-GGUF" / "latest").is_file()
    message = pull_error(store, f"{host}/bartowski/Nope-GGUF:IQ3_M", insecure=False)
    assert message.startswith("pull model manifest: file does not exist")
    assert "bartowski/Nope-GGUF" in message and "IQ3_M" in message


def test_hugging_face_endpoint_defaults_to_https() -> None:
    from corral.registry.endpoint import resolve

    endpoint = resolve("hf.co/unsloth/Qwen3-0.6B-GGUF:Q8_0")
    assert str(endpoint.url("manifests", "Q8_0")) == "https://hf.co/v2/unsloth/Qwen3-0.6B-GGUF/manifests/Q8_0"
    assert resolve("huggingface.co/a/b").base_url == "https://huggingface.co"
    assert resolve("smollm2").base_url == "https://registry.ollama.ai"
    assert resolve("127.0.0.1:5000/library/x", insecure=True).base_url == "http://127.0.0.1:5000"


# -- units ----------------------------------------------------------------------------------------------------------


def test_challenges_parse_like_the_docker_token_protocol() -> None:
    from corral.registry.auth import Challenge, parse_challenge

    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    assert parse_challenge(header) == Challenge("bearer", "https://auth.example/token", "registry.example",
                                                "repository:a/b:pull,push")
    assert parse_challenge('Basic realm="x"') == Challenge("basic", "x")
    assert parse_challenge('bearer realm=https://h/t, service=s') == Challenge("bearer", "https://h/t", "s")
    assert parse_challenge('Negotiate abc') is None
    assert parse_challenge("") is None


def test_credentials_come_from_env_json_a_file_or_registries_json(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from corral.registry.auth import Credentials, credentials_for

    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    monkeypatch.delenv("CORRAL_REGISTRY_AUTH", raising=False)
    assert credentials_for("r.example") == Credentials()
    (tmp_path / "registries.json").write_text(json.dumps({"R.example:5000": {"username": "u", "password": "p"},
                                                          "hf.co": {"token": "hf_abc"}}))
    assert credentials_for("r.example:5000") == Credentials("u", "p")
    assert credentials_for("hf.co") == Credentials(token="hf_abc")
    assert credentials_for("r.example") == Credentials()  # the port is part of the host
    docker = tmp_path / "docker.json"
    docker.write_text(json.dumps({"auths": {"https://index.example/v1/": {"auth": base64.b64encode(b"d:q").decode()}}}))
    monkeypatch.setenv("CORRAL_REGISTRY_AUTH", str(docker))
    assert credentials_for("index.example") == Credentials("d", "q")
    monkeypatch.setenv("CORRAL_REGISTRY_AUTH", '{"x.example": {"username": "a", "password": "b"}}')
    assert credentials_for("x.example").basic_header() == "Basic " + base64.b64encode(b"a:b").decode()
    monkeypatch.setenv("CORRAL_REGISTRY_AUTH", "{not json")
    assert credentials_for("x.example") == Credentials()


def test_part_sizes_follow_ollama() -> None:
    options = TransferOptions()
    assert options.part_size(5_000_000) == 100_000_000  # small blobs: one part
    assert options.part_size(16 * 500_000_000) == 500_000_000
    assert options.part_size(16 * 5_000_000_000) == 1_000_000_000
    assert [options.backoff(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_mirrors_must_be_host_equals_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.registry.endpoint import resolve

    monkeypatch.setenv("CORRAL_REGISTRY_MIRRORS", "hf.co=ftp://x")
    with pytest.raises(RegistryError, match="CORRAL_REGISTRY_MIRRORS"):
        resolve("hf.co/a/b")
    monkeypatch.setenv("CORRAL_REGISTRY_MIRRORS", "hf.co = http://127.0.0.1:1/ , other=https://m.example")
    assert resolve("hf.co/a/b").base_url == "http://127.0.0.1:1"
    assert resolve("other/a/b").base_url == "https://m.example"
