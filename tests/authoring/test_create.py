"""Model authoring against a real server: ``/api/blobs``, ``/api/create`` and ``corral create``.

The end-to-end test is the issue's "done when": a Modelfile with FROM a GGUF path, PARAMETER, SYSTEM and MESSAGE
goes through ``corral create``, the model runs with those settings, and ``show --modelfile`` builds an identical
model again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import MODEL, SMOL_FILE, ServerProcess, bundled_file, running_server

from corral.authoring import CreateSpec, Creator, pipeline
from corral.errors import CreateError
from corral.store import manifest as mf
from corral.store.store import Store
from tests.templates.test_detect import tiny_gguf  # the shared small-GGUF writer

SMOL = bundled_file(*SMOL_FILE)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(client: httpx.Client, data: bytes) -> str:
    digest = digest_of(data)
    response = client.post(f"/api/blobs/{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def create(client: httpx.Client, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """POST /api/create (streaming); the status code and every object of the stream or the error body."""
    response = client.post("/api/create", json=body)
    if response.status_code != 200:
        return response.status_code, [response.json()]
    return 200, [json.loads(line) for line in response.text.splitlines() if line]


def manifest_of(server: ServerProcess, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((server.models / "manifests/registry.ollama.ai/library" / name / "latest")
                                      .read_text())
    return data


@functools.cache
def _smol_hash() -> str:
    assert SMOL is not None
    digest = hashlib.sha256()
    with SMOL.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def smol_digest(client: httpx.Client) -> str:
    """The bundled GGUF as a blob (the server seeded it; uploaded only if it is missing)."""
    assert SMOL is not None
    digest = _smol_hash()
    if client.head(f"/api/blobs/{digest}").status_code == 404:
        with SMOL.open("rb") as f:
            assert client.post(f"/api/blobs/{digest}", content=f.read()).status_code == 201
    return digest


# ---------------------------------------------------------------------------------------------------------------
# blobs


@pytest.mark.e2e
def test_blob_head_and_upload(server: ServerProcess) -> None:
    with server.client() as client:
        data = b"blob test " + bytes(range(256))
        digest = digest_of(data)
        assert client.head(f"/api/blobs/{digest}").status_code == 404
        assert client.head("/api/blobs/sha256:xyz").status_code == 400
        assert client.head("/api/blobs/md5-" + "0" * 64).status_code == 400
        wrong = "sha256:" + "0" * 64
        response = client.post(f"/api/blobs/{wrong}", content=data)
        assert response.status_code == 400
        assert response.json() == {"error": f'digest mismatch, expected "{wrong}", got "{digest}"'}
        assert client.head(f"/api/blobs/{wrong}").status_code == 404  # nothing kept
        assert not list(server.models.glob("blobs/.tmp-*"))
        assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
        assert client.head(f"/api/blobs/{digest.replace(':', '-')}").status_code == 200
        assert client.post(f"/api/blobs/{digest}", content=b"not even read").status_code == 200
        assert client.post("/api/blobs/sha256:../../etc", content=data).json() == {"error": "invalid digest format"}
        assert (server.models / "blobs" / digest.replace(":", "-")).read_bytes() == data


# ---------------------------------------------------------------------------------------------------------------
# create from files


@pytest.mark.e2e
def test_create_from_a_gguf_streams_ollamas_statuses(server: ServerProcess) -> None:
    with server.client() as client:
        digest = smol_digest(client)
        status, events = create(client, {"model": "smol-import", "files": {"smol.gguf": digest}})
    assert status == 200
    lines = [e["status"] for e in events]
    assert lines[:3] == ["parsing GGUF", f"using existing layer {digest}", "using autodetected template chatml"]
    assert all(re.fullmatch(r"(creating new|using existing) layer sha256:[0-9a-f]{64}", s) for s in lines[3:5])
    assert lines[5:] == ["writing manifest", "success"]
    manifest = manifest_of(server, "smol-import")
    # the detected params layer moves last: Ollama rewrites params after merging them with the request's
    assert [layer["mediaType"] for layer in manifest["layers"]] == [mf.MEDIA_MODEL, mf.MEDIA_TEMPLATE,
                                                                    mf.MEDIA_SYSTEM, mf.MEDIA_PARAMS]
    assert "from" not in manifest["layers"][0]
    config = json.loads((server.models / "blobs" / manifest["config"]["digest"].replace(":", "-")).read_text())
    assert config == {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
                      "model_type": "134.52M", "file_type": "Q4_1", "architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in manifest["layers"]]}}
    with server.client() as client:
        show = client.post("/api/show", json={"model": "smol-import"}).json()
    assert show["system"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert show["parameters"].splitlines() == ['stop                           "<|im_start|>"',
                                               'stop                           "<|im_end|>"']
    assert show["details"]["quantization_level"] == "Q4_1"


@pytest.mark.e2e
def test_create_without_streaming_answers_once(server: ServerProcess) -> None:
    with server.client() as client:
        digest = smol_digest(client)
        response = client.post("/api/create", json={"model": "smol-quiet", "files": {"smol.gguf": digest},
                                                    "stream": False})
    assert response.status_code == 200
    assert response.json() == {"status": "success"}


def _hostile_gguf_header() -> bytes:
    """A header that declares a 2**40-element array (the shape of the CVE-2025-0315 and CVE-2024-39720 files)."""
    key = b"general.evil"
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<IIQ", 9, 0, 1 << 40) + b"\0" * 64)


HOSTILE: list[tuple[str, dict[str, Any], int, str]] = [
    ("parent dir", {"files": {"../evil.gguf": "@smol"}}, 400, "file path must be relative: '../evil.gguf'"),
    ("absolute", {"files": {"/etc/evil.gguf": "@smol"}}, 400, "file path must be relative: '/etc/evil.gguf'"),
    ("backslash", {"files": {"a\\b.gguf": "@smol"}}, 400, "file path must be relative"),
    ("drive", {"files": {"c:evil.gguf": "@smol"}}, 400, "file path must be relative"),
    ("empty element", {"files": {"a//b.gguf": "@smol"}}, 400, "file path must be relative"),
    ("bad digest", {"files": {"m.gguf": "sha256:123"}}, 400, "invalid digest for 'm.gguf': invalid digest format"),
    ("not uploaded", {"files": {"m.gguf": "sha256:" + "e" * 64}}, 400, "blob not found for 'm.gguf'"),
    ("not gguf", {"files": {"m.gguf": "@junk"}}, 400, "supplied file was not in GGUF format"),
    ("unknown kind", {"files": {"weights.bin": "@junk"}}, 400, "supplied file was not in GGUF format"),
    ("four bytes", {"files": {"m.gguf": "@four"}}, 400,
     "invalid GGUF file 'm.gguf': the file is too small to be a GGUF model (4 bytes)"),
    ("truncated", {"files": {"m.gguf": "@cut"}}, 400, "invalid GGUF file 'm.gguf': the file is"),
    ("huge array", {"files": {"m.gguf": "@evil"}}, 400, "invalid GGUF file 'm.gguf': the file is"),
    ("mixed", {"files": {"a.gguf": "@smol", "b.safetensors": "@junk"}}, 400,
     "mixed model file types: found both gguf and safetensors inputs"),
    ("two models", {"files": {"a.gguf": "@smol", "b.gguf": "@smol"}}, 400, "more than one model GGUF in 'files'"),
    ("nothing", {}, 400, "neither 'from' or 'files' was specified"),
    ("bad name", {"model": "bad name!", "from": MODEL}, 400, "invalid model name"),
    ("unknown base", {"from": "no-such-model"}, 404, "model 'no-such-model' not found"),
    ("bad template", {"from": MODEL, "template": "{{ .Prompt"}, 400, "template error: "),
    ("bad parameter", {"from": MODEL, "parameters": {"temperature": "hot"}}, 400,
     'option "temperature" must be of type float32'),
    ("bad requires", {"from": MODEL, "requires": "banana"}, 400, "requires must be a valid semver"),
    ("quantize q4", {"from": MODEL, "quantize": "q4_K_M"}, 400,
     "quantization is only supported for F16, BF16 and F32 models"),
    ("quantize unknown", {"from": MODEL, "quantize": "q9_x"}, 400, "unsupported quantization type Q9_X"),
    ("adapter not lora", {"from": MODEL, "adapters": {"x.gguf": "@smol"}}, 400,
     "'x.gguf' is not a LoRA adapter"),
    ("adapter as model", {"files": {"lora.gguf": "@lora"}}, 400, "a LoRA adapter was given as a model file"),
    ("projector only", {"files": {"mmproj.gguf": "@clip"}}, 400, "no model weights: 'files' holds only a projector"),
    ("draft vocabulary", {"from": MODEL, "draft_files": {"d.gguf": "@tiny"}}, 400,
     "the DRAFT model's vocabulary does not match the model's, so it cannot draft for it: the draft model's "
     "tokenizer type is 'llama', the model's is 'gpt2'"),
    ("draft lora", {"from": MODEL, "draft_files": {"d.gguf": "@lora"}}, 400,
     "'d.gguf' is not a draft model: its general.type is 'adapter'"),
    ("draft safetensors", {"from": MODEL, "draft_files": {"d.safetensors": "@junk"}}, 400,
     "DRAFT must be a GGUF file: supplied file was not in GGUF format"),
    ("two drafts", {"from": MODEL, "draft_files": {"a.gguf": "@smol", "b.gguf": "@tiny"}}, 400,
     "more than one GGUF in 'draft_files'"),
    ("draft path", {"from": MODEL, "draft_files": {"../d.gguf": "@smol"}}, 400, "file path must be relative"),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("case", "body", "status", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_bad_requests_get_clear_errors(server: ServerProcess, tmp_path: Path, case: str, body: dict[str, Any],
                                       status: int, message: str) -> None:
    assert SMOL is not None
    with server.client() as client:
        lora = tiny_gguf(tmp_path / "lora.gguf", general_type="adapter")
        blobs = {"smol": smol_digest(client), "junk": upload(client, b"definitely not a model " * 8),
                 "four": upload(client, b"GGUF"), "evil": upload(client, _hostile_gguf_header()),
                 "lora": upload(client, lora.read_bytes()),
                 "clip": upload(client, tiny_gguf(tmp_path / "clip.gguf", arch="clip").read_bytes()),
                 "tiny": upload(client, tiny_gguf(tmp_path / "tiny.gguf").read_bytes())}
        with SMOL.open("rb") as f:
            blobs["cut"] = upload(client, f.read(1 << 20))
        request = json.loads(json.dumps({"model": "hostile", **body}))
        for field in ("files", "adapters", "draft_files"):
            for key, value in (request.get(field) or {}).items():
                request[field][key] = blobs.get(value[1:], value) if value.startswith("@") else value
        status_got, events = create(client, request)
        assert (status_got, events[0]["error"][:len(message)]) == (status, message)
        assert client.post("/api/show", json={"model": "hostile"}).status_code == 404


@pytest.mark.e2e
def test_malformed_bodies(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.post("/api/create", content=b"{not json").status_code == 400
        assert client.post("/api/create", json={"model": "m", "files": ["a.gguf"]}).status_code == 400
        assert client.post("/api/create", json={"model": "m", "license": {"a": 1}, "from": MODEL}).status_code == 400


# ---------------------------------------------------------------------------------------------------------------
# create from a model


@pytest.mark.e2e
def test_from_a_model_reuses_layers_and_merges(server: ServerProcess) -> None:
    with server.client() as client:
        status, events = create(client, {
            "model": "derived", "from": MODEL, "system": "You are Derek.", "license": "Extra terms",
            "parameters": {"temperature": 0.25, "num_ctx": 2048},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        })
        assert status == 200 and events[-1] == {"status": "success"}
        base = client.post("/api/show", json={"model": MODEL}).json()
        show = client.post("/api/show", json={"model": "derived"}).json()
    layers = manifest_of(server, "derived")["layers"]
    model_layer = layers[0]
    assert (model_layer["mediaType"], model_layer["from"]) == (mf.MEDIA_MODEL, "smollm2:135m")
    assert [layer["mediaType"] for layer in layers] == [
        mf.MEDIA_MODEL, mf.MEDIA_TEMPLATE, mf.MEDIA_LICENSE, mf.MEDIA_SYSTEM, mf.MEDIA_LICENSE, mf.MEDIA_PARAMS,
        mf.MEDIA_MESSAGES]
    assert show["template"] == base["template"]
    assert show["system"] == "You are Derek."
    assert show["license"] == base["license"] + "\nExtra terms"
    assert "temperature                    0.25" in show["parameters"]
    assert 'stop                           "<|im_end|>"' in show["parameters"]  # the base's params are kept
    assert show["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    params = next(layer for layer in layers if layer["mediaType"] == mf.MEDIA_PARAMS)
    raw = (server.models / "blobs" / params["digest"].replace(":", "-")).read_bytes()
    assert raw == b'{"num_ctx":2048,"stop":["\\u003c|im_start|\\u003e","\\u003c|im_end|\\u003e"],"temperature":0.25}\n'


@pytest.mark.e2e
def test_recreating_a_model_removes_its_unused_layers(tmp_path: Path) -> None:
    for noprune in (False, True):
        env = {"CORRAL_NOPRUNE": "1"} if noprune else {}
        with running_server(tmp_path / f"noprune-{noprune}", env) as srv, srv.client() as client:
            assert create(client, {"model": "rebuilt", "from": MODEL, "system": "first system prompt"})[0] == 200
            old = digest_of(b"first system prompt")
            assert (srv.models / "blobs" / old.replace(":", "-")).exists()
            assert create(client, {"model": "rebuilt", "from": "rebuilt", "system": "second system prompt"})[0] == 200
            assert (srv.models / "blobs" / old.replace(":", "-")).exists() == noprune
            assert client.post("/api/show", json={"model": "rebuilt"}).json()["system"] == "second system prompt"
            weights = manifest_of(srv, "rebuilt")["layers"][0]["digest"]
            assert (srv.models / "blobs" / weights.replace(":", "-")).exists()  # still used


# ---------------------------------------------------------------------------------------------------------------
# conversion and quantization (the work itself is corral.convert's; here, how create drives it)


@pytest.mark.e2e
def test_quantizing_an_f16_gguf(server: ServerProcess, tmp_path: Path) -> None:
    weights = (np.random.default_rng(1).standard_normal((32, 256)) * 0.02).astype(np.float16)
    source = tiny_gguf(tmp_path / "f16.gguf", tensor=weights, file_type=1)
    with server.client() as client:
        digest = upload(client, source.read_bytes())
        status, events = create(client, {"model": "quantized", "files": {"f16.gguf": digest}, "quantize": "q8_0"})
        assert status == 200, events
        assert events[-1] == {"status": "success"}, events
        bars = [e for e in events if e["status"] == "quantizing F16 model to Q8_0"]
        assert bars and all(e["digest"] == "0000000000000000000" for e in bars)
        show = client.post("/api/show", json={"model": "quantized"}).json()
    assert show["details"]["quantization_level"] == "Q8_0"
    assert manifest_of(server, "quantized")["layers"][0]["digest"] != digest


@pytest.mark.e2e
def test_safetensors_directory_through_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    """FROM a Hugging Face directory: the CLI uploads its files, the server converts, quantizes and runs it."""
    from tests.convert.test_convert import make_tiny_llama  # the converter's own tiny-model writer

    make_tiny_llama(tmp_path / "tiny-llama", hidden=64, layers=2, heads=2, kv_heads=1, ff=128)
    (tmp_path / "Modelfile").write_text("FROM ./tiny-llama\nPARAMETER num_ctx 128\n")
    done = cli(server, "create", "tiny-llama", "-f", str(tmp_path / "Modelfile"), "-q", "q8_0")
    assert done.returncode == 0, done.stderr
    assert "converting model" in done.stderr and "quantizing F16 model to Q8_0" in done.stderr
    with server.client() as client:
        show = client.post("/api/show", json={"model": "tiny-llama"}).json()
        assert (show["details"]["family"], show["details"]["quantization_level"]) == ("llama", "Q8_0")
        answer = client.post("/api/generate", json={"model": "tiny-llama", "prompt": "hello", "raw": True,
                                                     "stream": False, "options": {"num_predict": 3}}).json()
    assert answer["done"] is True and answer["eval_count"] > 0, answer


def _fake_convert(result: Path) -> Any:
    class FakeConvert:
        @staticmethod
        def convert_directory(src: Path, dst: Path, progress: Any = None) -> None:
            assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()) == [
                "config.json", "model.safetensors", "tokenizer/tokenizer.json"]
            for done in range(3):
                progress("converting model", done, 2)
            shutil.copyfile(result, dst)

    return FakeConvert


def test_safetensors_are_converted_then_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "models")
    converted = tiny_gguf(tmp_path / "converted.gguf", chat_template=None)
    monkeypatch.setattr(pipeline, "_load_convert", lambda: _fake_convert(converted))
    files = {name: store.write_bytes(data)[0] for name, data in
             (("model.safetensors", b"st"), ("config.json", b"{}"), ("tokenizer/tokenizer.json", b"{}"))}
    creator = Creator(store, CreateSpec(model="converted", files=files))
    creator.prepare()
    events = list(creator.run())
    assert [e["status"] for e in events][:2] == ["converting model", "converting model"]
    assert {"status": "parsing GGUF"} in events and events[-1] == {"status": "success"}
    layer = store.read_manifest("converted").manifest.layers[0]
    assert layer.digest == digest_of(converted.read_bytes())
    assert not list(store.root.glob(".tmp-create-*"))  # the staging directory is gone


def test_conversion_unavailable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> Any:
        raise CreateError("safetensors conversion is unavailable on this server: no module", 500)

    monkeypatch.setattr(pipeline, "_load_convert", unavailable)
    store = Store(tmp_path / "models")
    creator = Creator(store, CreateSpec(model="m", files={"model.safetensors": store.write_bytes(b"x")[0]}))
    with pytest.raises(CreateError) as info:
        creator.prepare()
    assert (info.value.status, info.value.message) == (500, "safetensors conversion is unavailable on this server: "
                                                            "no module")


# ---------------------------------------------------------------------------------------------------------------
# LoRA adapters


def write_lora(path: Path, scale: float, rank: int = 4) -> Path:
    """A LoRA GGUF for SmolLM2-135M (llama, 30 blocks, width 576): A and B matrices for attn_q and attn_v."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(0)
    for block in range(30):
        for name, (n_in, n_out) in {"attn_q": (576, 576), "attn_v": (576, 192)}.items():
            writer.add_tensor(f"blk.{block}.{name}.weight.lora_a",
                              (rng.standard_normal((rank, n_in)) * 0.5).astype(np.float32))
            writer.add_tensor(f"blk.{block}.{name}.weight.lora_b",
                              (rng.standard_normal((n_out, rank)) * scale).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.e2e
def test_adapter_layer_changes_what_the_model_says(server: ServerProcess, tmp_path: Path) -> None:
    request = {"raw": True, "prompt": "The capital of France is", "stream": False,
               "options": {"temperature": 0, "num_predict": 8}}
    with server.client() as client:
        outputs = {}
        for name, scale in (("lora-zero", 0.0), ("lora-strong", 0.5)):
            digest = upload(client, write_lora(tmp_path / f"{name}.gguf", scale).read_bytes())
            status, events = create(client, {"model": name, "from": MODEL, "adapters": {"lora.gguf": digest}})
            assert status == 200 and events[-1] == {"status": "success"}, events
            layers = manifest_of(server, name)["layers"]
            assert [layer["digest"] for layer in layers if layer["mediaType"] == mf.MEDIA_ADAPTER] == [digest]
            outputs[name] = client.post("/api/generate", json={"model": name, **request}).json()["response"]
        base = client.post("/api/generate", json={"model": MODEL, **request}).json()["response"]
        modelfile = client.post("/api/show", json={"model": "lora-strong"}).json()["modelfile"]
    assert outputs["lora-zero"] == base  # B = 0: the adapter adds nothing
    assert outputs["lora-strong"] != base  # the engine applied it
    assert re.search(r"^ADAPTER .*/blobs/sha256-[0-9a-f]{64}$", modelfile, re.M)


@pytest.mark.e2e
def test_adapter_for_another_architecture_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    lora = tiny_gguf(tmp_path / "qwen-lora.gguf", general_type="adapter", arch="qwen2")
    with server.client() as client:
        status, events = create(client, {"model": "wrong-lora", "from": MODEL,
                                         "adapters": {"lora.gguf": upload(client, lora.read_bytes())}})
    assert (status, events[0]["error"]) == (400, "adapter architecture 'qwen2' does not match the model's 'llama'")


# ---------------------------------------------------------------------------------------------------------------
# the issue's "done when": corral create from a Modelfile, run it, show --modelfile, create again


LONG_SYSTEM = ("You are Captain Zorblax, the tireless navigator of the starship Meridian. You answer every "
               "question with nautical metaphors, you refer to the user as first mate, and you never reveal the "
               "coordinates of the hidden nebula base, no matter how politely or how often you are asked about it.")


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=server.env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.e2e
def test_modelfile_to_running_model_and_back(server: ServerProcess, tmp_path: Path) -> None:
    assert SMOL is not None
    shutil.copyfile(SMOL, tmp_path / "smol.gguf")
    (tmp_path / "Modelfile").write_text(
        "# a pirate, from a local GGUF\n"
        "FROM ./smol.gguf\n"
        "PARAMETER temperature 0\n"
        "PARAMETER stop ,\n"
        f'SYSTEM """{LONG_SYSTEM}"""\n'
        "MESSAGE user Who are you?\n"
        "MESSAGE assistant I am Captain Zorblax.\n"
    )
    (tmp_path / "Plain").write_text("FROM ./smol.gguf\n")
    done = cli(server, "create", "zorblax", "-f", str(tmp_path / "Modelfile"))
    assert done.returncode == 0, done.stderr
    assert "using autodetected template chatml" in done.stderr and "success" in done.stderr
    assert cli(server, "create", "plain-smol", "-f", str(tmp_path / "Plain")).returncode == 0

    with server.client() as client:
        show = client.post("/api/show", json={"model": "zorblax"}).json()
        assert show["parameters"] == 'stop                           ","\ntemperature                    0'
        assert show["system"] == LONG_SYSTEM
        # PARAMETER stop "," and temperature 0 take effect: a counting prompt stops at the first comma
        count = {"raw": True, "prompt": "1, 2, 3, 4, 5,", "stream": False, "options": {"num_predict": 8}}
        ours = client.post("/api/generate", json={"model": "zorblax", **count}).json()
        theirs = client.post("/api/generate", json={"model": "plain-smol", **count,
                                                    "options": {"num_predict": 8, "temperature": 0}}).json()
        assert "," not in ours["response"] and ours["done_reason"] == "stop"
        assert "," in theirs["response"]
        # SYSTEM and MESSAGE are part of the prompt: the returned context holds their tokens
        ask = {"prompt": "Where is the base?", "stream": False, "options": {"num_predict": 1}}
        with_system = client.post("/api/generate", json={"model": "zorblax", **ask}).json()["context"]
        without = client.post("/api/generate", json={"model": "plain-smol", **ask}).json()["context"]
        assert len(with_system) - len(without) > 40
        chat = client.post("/api/chat", json={"model": "zorblax", "stream": False, "messages": [
            {"role": "user", "content": "Say hi"}], "options": {"num_predict": 4}}).json()
        assert chat["done"] is True and chat["prompt_eval_count"] > 0

    shown = cli(server, "show", "zorblax", "--modelfile")
    assert shown.returncode == 0, shown.stderr
    assert "PARAMETER stop ,\n" in shown.stdout and "MESSAGE assistant I am Captain Zorblax.\n" in shown.stdout
    (tmp_path / "Modelfile.shown").write_text(shown.stdout)
    again = cli(server, "create", "zorblax-again", "-f", str(tmp_path / "Modelfile.shown"))
    assert again.returncode == 0, again.stderr
    assert manifest_of(server, "zorblax-again") == manifest_of(server, "zorblax")  # the same layers and config


@pytest.mark.parametrize(
    ("modelfile", "message"),
    [
        ("FROM ./smol.gguf\nPARAMETER bogus 1\n", "Error: (line 2): unknown parameter 'bogus'"),
        ("FROM ./smol.gguf\nPARAMETER num_ctx lots\n", "Error: (line 2): invalid int value [lots]"),
        ("FROM ./smol.gguf\nMESSAGE robot hi\n", "Error: (line 2): message role must be one of"),
        ('FROM ./smol.gguf\nTEMPLATE """{{ .Prompt\n', 'Error: (line 2): unexpected EOF: the """ quote'),
        ('FROM ./smol.gguf\nTEMPLATE "{{ .Prompt"\n', "Error: template error: "),
        ("SYSTEM no base\n", "Error: no FROM line"),
        ("FROM ./smol.gguf\nADAPTER ./missing.gguf\n", "Error: (line 2): ADAPTER file './missing.gguf' does not "
                                                       "exist"),
    ],
)
@pytest.mark.e2e
def test_cli_reports_modelfile_errors(server: ServerProcess, tmp_path: Path, modelfile: str, message: str) -> None:
    assert SMOL is not None
    (tmp_path / "smol.gguf").symlink_to(SMOL)
    (tmp_path / "Modelfile").write_text(modelfile)
    done = cli(server, "create", "broken", "-f", str(tmp_path / "Modelfile"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr
