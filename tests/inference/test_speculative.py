"""Speculative decoding: the Modelfile ``DRAFT`` instruction end to end, and the engine's n-gram drafting.

Drafts are verified by the model, so greedy output must not change; the tests compare it with the same model run
without drafting, and read the engine's own log (forwarded by the server under ``CORRAL_DEBUG``) to show that the
runner really loaded the draft model and drafted tokens. (The engine's batched verification rounds differently from
one-token decoding, so at a near-tie, top two log-probabilities within about 0.05, greedy output can differ; see
docs/benchmarks.md. The prompts here have no such tie, which the comparison checks every time it runs.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MODEL, SMOL_FILE, ServerProcess, bundled_file, running_server

from corral.inference import launch, options, speculative
from corral.inference.runner.process import server_flags
from corral.inference.runner.spec import LaunchSpec
from corral.inference.runner.wheel import build_params
from corral.modelfile import Command, format_modelfile, parse
from corral.store import manifest as mf
from corral.store.gguf_info import read_gguf_info
from corral.store.model import load_model
from corral.store.store import Store
from tests.templates.test_detect import tiny_gguf

SMOL = bundled_file(*SMOL_FILE)

# Output that copies the prompt: what n-gram drafting is for.
LIST = "\n".join(f"{i}. item {i} is the {w} box" for i, w in enumerate(
    ("red", "green", "blue", "white", "black", "brown", "pink", "gray"), 1))
REPEAT = {"raw": True, "prompt": f"{LIST}\n\n{LIST}\n\n1. item 1", "stream": False,
          "options": {"temperature": 0, "num_predict": 40}}
CHAT = {"prompt": "Write the numbers from one to ten in words.", "stream": False,
        "options": {"temperature": 0, "num_predict": 32}}


# ---------------------------------------------------------------------------------------------------------------
# units: settings, vocabulary rule, launch flags, Modelfile text


def test_settings_follow_ollamas_draft_num_predict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CORRAL_SPECULATIVE", raising=False)
    draft = read_gguf_info(tiny_gguf(tmp_path / "d.gguf"))
    assert speculative.settings({}, None) == speculative.Speculation()
    assert speculative.settings({}, draft) == speculative.Speculation(["draft-simple"], str(draft.path), 4)
    assert speculative.settings({"draft_num_predict": 7}, draft).draft_max == 7
    assert speculative.settings({"draft_num_predict": 0}, draft) == speculative.Speculation()  # 0 turns it off
    assert speculative.settings({}, draft, embedding=True) == speculative.Speculation()
    monkeypatch.setenv("CORRAL_SPECULATIVE", "ngram")
    assert speculative.settings({}, None).types == [speculative.NGRAM_DEFAULT]
    assert speculative.settings({}, draft).types == ["draft-simple", speculative.NGRAM_DEFAULT]
    monkeypatch.setenv("CORRAL_SPECULATIVE", "ngram-mod")
    assert speculative.settings({}, None).types == ["ngram-mod"]
    for off in ("off", "0", "none", ""):
        monkeypatch.setenv("CORRAL_SPECULATIVE", off)
        assert speculative.settings({}, None).types == []
    monkeypatch.setenv("CORRAL_SPECULATIVE", "warp-drive")  # unknown: a warning, and no speculation
    assert speculative.settings({}, None).types == []
    monkeypatch.setenv("OLLAMA_SPECULATIVE", "ngram")  # a Corral-only setting
    assert speculative.settings({}, None).types == []


def test_draft_type_by_architecture(tmp_path: Path) -> None:
    kinds = {"llama": "draft-simple", "gemma4-assistant": "draft-mtp", "eagle3": "draft-eagle3",
             "dflash-qwen3": "draft-dflash"}
    for arch, kind in kinds.items():
        assert speculative.draft_type(read_gguf_info(tiny_gguf(tmp_path / f"{arch}.gguf", arch=arch))) == kind


def test_vocabulary_rule(tmp_path: Path) -> None:
    a = read_gguf_info(tiny_gguf(tmp_path / "a.gguf"))
    assert speculative.vocab_mismatch(a, read_gguf_info(tiny_gguf(tmp_path / "b.gguf"))) is None
    other_eos = read_gguf_info(tiny_gguf(tmp_path / "c.gguf", eos=None))
    assert speculative.vocab_mismatch(a, other_eos) == "the draft model's EOS token (None) differs from the " \
                                                       "model's (2)"
    # tokens below id 5 may differ (llama.cpp's rule); this vocabulary has only five
    assert speculative.vocab_mismatch(a, read_gguf_info(tiny_gguf(tmp_path / "d.gguf", bos="<|s|>"))) is None
    if SMOL is not None:
        smol = read_gguf_info(SMOL)
        assert speculative.vocab_mismatch(smol, smol) is None
        assert speculative.vocab_mismatch(smol, a) == "the draft model's tokenizer type is 'llama', the model's is " \
                                                      "'gpt2'"
    # drafters that map their own vocabulary are not held to it
    assert speculative.vocab_mismatch(a, read_gguf_info(tiny_gguf(tmp_path / "e.gguf", arch="eagle3",
                                                                  eos=None))) is None


def test_launch_spec_flags_for_an_external_llama_server() -> None:
    spec = LaunchSpec(model="/m.gguf", num_ctx=2048, parallel=2, num_thread=3, speculative=["draft-simple"],
                      draft="/d.gguf", draft_max=6)
    args = server_flags(spec, "llama-server", "/run/engine.sock")
    tail = args[args.index("--spec-type"):]
    assert tail == ["--spec-type", "draft-simple", "-md", "/d.gguf", "--spec-draft-n-max", "6",
                    "--spec-draft-threads", "3"]
    ngram = LaunchSpec(model="/m.gguf", num_ctx=2048, parallel=2, speculative=["ngram-simple"])
    assert server_flags(ngram, "llama-server", "/run/engine.sock")[-2:] == ["--spec-type", "ngram-simple"]
    assert "--spec-type" not in server_flags(LaunchSpec(model="/m.gguf", num_ctx=2048, parallel=2), "x", "e.sock")


def test_engine_params_carry_the_speculative_settings() -> None:
    base = {"model": "/m.gguf", "num_ctx": 512, "parallel": 1, "api_key": "k", "num_thread": 2}
    p = build_params({**base, "speculative": ["draft-simple", "ngram-mod"], "draft": "/d.gguf", "draft_max": 5})
    assert [t.name for t in p.speculative.types] == ["COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE",
                                                     "COMMON_SPECULATIVE_TYPE_NGRAM_MOD"]
    draft = p.speculative.draft
    assert (draft.mparams.path, draft.n_max, draft.cpuparams.n_threads, draft.cpuparams_batch.n_threads) == (
        "/d.gguf", 5, 2, 2)
    plain = build_params(base)
    assert [t.name for t in plain.speculative.types] == ["COMMON_SPECULATIVE_TYPE_NONE"]
    assert plain.speculative.draft.mparams.path == ""


@pytest.mark.parametrize("path", ["./draft.gguf", "/models/my draft.gguf", " leading-space.gguf", 'quo"te.gguf'])
def test_draft_modelfile_text_round_trips(path: str) -> None:
    commands = [Command("model", "smollm2:135m"), Command("draft", path), Command("draft_num_predict", "6")]
    text = format_modelfile(commands, strict=True)
    assert text.splitlines()[1].startswith("DRAFT ")
    assert parse(text) == commands
    assert parse("from base\ndraft ./d.gguf\n")[1] == Command("draft", "./d.gguf")  # keywords are case-insensitive


# ---------------------------------------------------------------------------------------------------------------
# through a real server


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=server.env, capture_output=True, text=True,
                          timeout=300, check=False)


def manifest_of(server: ServerProcess, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((server.models / "manifests/registry.ollama.ai/library" / name / "latest")
                                      .read_text())
    return data


def blob_json(server: ServerProcess, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((server.models / "blobs" / digest.replace(":", "-")).read_text())
    return data


def patched_copy(target: Path) -> Path:
    """The bundled GGUF with one letter of ``general.name`` changed: the same model and vocabulary, other bytes."""
    assert SMOL is not None
    shutil.copyfile(SMOL, target)
    with target.open("r+b") as f:
        head = f.read(4096)
        at = head.index(b"Smollm2 135M")
        f.seek(at)
        f.write(b"T")
    return target


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose log carries the runners' own lines (``CORRAL_DEBUG``)."""
    with running_server(tmp_path_factory.mktemp("spec"), {"CORRAL_DEBUG": "1"}) as srv:
        yield srv


def runner_lines(server: ServerProcess, text: str) -> list[str]:
    return [line for line in server.log_text().splitlines() if "corral.runner" in line and text in line]


def accepted(server: ServerProcess, want: int) -> list[tuple[int, int]]:
    """(accepted, generated) draft tokens of every request the engine reported, in order. The engine logs them
    as the response ends, so they may reach the server's log a moment after it: wait for ``want`` of them."""
    deadline = time.monotonic() + 15
    while True:
        found = re.findall(r"draft acceptance = [0-9.]+ \(\s*(\d+) accepted /\s*(\d+) generated\)",
                           server.log_text())
        if len(found) >= want or time.monotonic() > deadline:
            return [(int(a), int(g)) for a, g in found]
        time.sleep(0.2)


@pytest.mark.e2e
def test_draft_model_created_shown_and_used(debug_server: ServerProcess, tmp_path: Path) -> None:
    assert SMOL is not None
    (tmp_path / "Modelfile").write_text(f"FROM {MODEL}\nDRAFT {SMOL}\n")
    done = cli(debug_server, "create", "smol-draft", "-f", str(tmp_path / "Modelfile"))
    assert done.returncode == 0, done.stderr

    manifest = manifest_of(debug_server, "smol-draft")
    layers = {layer["mediaType"]: layer for layer in manifest["layers"]}
    weights = layers[mf.MEDIA_MODEL]["digest"]
    assert layers[mf.MEDIA_DRAFT]["digest"] == weights  # the bundled file is the model's own weights blob
    assert [layer["mediaType"] for layer in manifest["layers"]].count(mf.MEDIA_DRAFT) == 1
    config = blob_json(debug_server, manifest["config"]["digest"])
    assert config["draft"] == {"model_format": "gguf", "architecture": "llama"}
    assert config["model_families"] == ["llama"]

    blob = debug_server.models / "blobs" / weights.replace(":", "-")
    with debug_server.client() as client:
        show = client.post("/api/show", json={"model": "smol-draft"}).json()
        assert f"FROM {blob}\nDRAFT {blob}\n" in show["modelfile"]

        plain = client.post("/api/generate", json={"model": MODEL, **CHAT}).json()
        drafted = client.post("/api/generate", json={"model": "smol-draft", **CHAT}).json()
        assert drafted["response"] == plain["response"] and drafted["eval_count"] == plain["eval_count"]
        raw_plain = client.post("/api/generate", json={"model": MODEL, **REPEAT}).json()
        raw_drafted = client.post("/api/generate", json={"model": "smol-draft", **REPEAT}).json()
        assert raw_drafted["response"] == raw_plain["response"]
        # two runners side by side: the draft is part of the runner's identity
        assert sorted(m["name"] for m in client.get("/api/ps").json()["models"]) == ["smol-draft:latest",
                                                                                      "smollm2:135m"]
    assert len(runner_lines(debug_server, f"loading draft model '{blob}'")) == 1
    stats = accepted(debug_server, 2)
    assert len(stats) == 2 and all(g > 0 for _, g in stats)
    # A model drafting for itself is nearly always right. Not always: the engine verifies a draft in one batch, and
    # batched arithmetic rounds differently from one token at a time, which can flip a near-tie.
    assert all(a >= 0.8 * g for a, g in stats)


@pytest.mark.e2e
def test_draft_round_trips_through_show_modelfile(debug_server: ServerProcess, tmp_path: Path) -> None:
    assert SMOL is not None
    draft = patched_copy(tmp_path / "draft.gguf")
    (tmp_path / "smol.gguf").symlink_to(SMOL)
    (tmp_path / "Modelfile").write_text("FROM ./smol.gguf\nDRAFT ./draft.gguf\nPARAMETER draft_num_predict 6\n")
    assert cli(debug_server, "create", "smol-spec", "-f", str(tmp_path / "Modelfile")).returncode == 0
    shown = cli(debug_server, "show", "smol-spec", "--modelfile")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^DRAFT /\S+/blobs/sha256-[0-9a-f]{64}$", shown.stdout, re.M), shown.stdout
    assert "PARAMETER draft_num_predict 6\n" in shown.stdout
    (tmp_path / "Modelfile.shown").write_text(shown.stdout)
    again = cli(debug_server, "create", "smol-spec-again", "-f", str(tmp_path / "Modelfile.shown"))
    assert again.returncode == 0, again.stderr
    # The same layers and settings. Not in the same order: as in Ollama, the draft goes after the model's layers and
    # before those the Modelfile sets, and the shown Modelfile sets the template and system the first create took
    # from the GGUF.
    first, second = manifest_of(debug_server, "smol-spec"), manifest_of(debug_server, "smol-spec-again")
    assert sorted(json.dumps(x, sort_keys=True) for x in first["layers"]) == sorted(
        json.dumps(x, sort_keys=True) for x in second["layers"])
    configs = [blob_json(debug_server, m["config"]["digest"]) for m in (first, second)]
    for config in configs:
        config["rootfs"]["diff_ids"].sort()
    assert configs[0] == configs[1] and configs[0]["draft"] == {"model_format": "gguf", "architecture": "llama"}
    digest = next(layer["digest"] for layer in manifest_of(debug_server, "smol-spec")["layers"]
                  if layer["mediaType"] == mf.MEDIA_DRAFT)
    assert (debug_server.models / "blobs" / digest.replace(":", "-")).read_bytes() == draft.read_bytes()


@pytest.mark.e2e
def test_draft_names_an_installed_model(debug_server: ServerProcess, tmp_path: Path) -> None:
    """Corral's CLI also takes a model name after DRAFT (Ollama's takes a path only): the model's weights blob."""
    (tmp_path / "Modelfile").write_text(f"FROM {MODEL}\nDRAFT {MODEL}\n")
    done = cli(debug_server, "create", "smol-by-name", "-f", str(tmp_path / "Modelfile"))
    assert done.returncode == 0, done.stderr
    layers = {layer["mediaType"]: layer["digest"] for layer in manifest_of(debug_server, "smol-by-name")["layers"]}
    assert layers[mf.MEDIA_DRAFT] == layers[mf.MEDIA_MODEL]
    (tmp_path / "Missing").write_text(f"FROM {MODEL}\nDRAFT no-such-model\n")
    missing = cli(debug_server, "create", "smol-missing", "-f", str(tmp_path / "Missing"))
    assert missing.returncode == 1
    assert "DRAFT file 'no-such-model' does not exist" in missing.stderr


@pytest.mark.e2e
def test_launch_spec_changes_reload_the_runner(debug_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a request gets from ``launch.plan``: the draft and draft_num_predict and CORRAL_SPECULATIVE are part of
    the LaunchSpec, which the scheduler compares to decide whether the loaded runner serves it."""
    monkeypatch.delenv("CORRAL_SPECULATIVE", raising=False)
    monkeypatch.setenv("CORRAL_HOME", str(debug_server.home))
    store = Store(debug_server.models)
    weights = load_model(store, MODEL).model_digest
    with debug_server.client() as client:
        body = {"model": "smol-launch", "from": MODEL, "draft_files": {"d.gguf": weights}, "stream": False}
        assert client.post("/api/create", json=body).json() == {"status": "success"}
    model = load_model(store, "smol-launch")
    planned = launch.plan(model, options.merge(model.params, {}))
    key, spec = planned.key, planned.spec
    assert (spec.speculative, spec.draft, spec.draft_max) == (["draft-simple"], str(model.draft), 4)
    assert key[-1] == f"draft:{model.draft_digest}"
    fewer = launch.plan(model, options.merge(model.params, {"draft_num_predict": 2})).spec
    off = launch.plan(model, options.merge(model.params, {"draft_num_predict": 0})).spec
    assert fewer.draft_max == 2 and fewer != spec
    assert (off.speculative, off.draft) == ([], None)
    monkeypatch.setenv("CORRAL_SPECULATIVE", "ngram")
    ngram = launch.plan(model, options.merge(model.params, {})).spec
    assert ngram.speculative == ["draft-simple", speculative.NGRAM_DEFAULT] and ngram != spec
    plain_launch = launch.plan(load_model(store, MODEL), options.merge(model.params, {}))
    plain_key, plain = plain_launch.key, plain_launch.spec
    assert plain.speculative == [speculative.NGRAM_DEFAULT] and plain.draft is None and plain_key != key
    embed = launch.plan(model, options.merge(model.params, {}), for_embedding=True).spec
    assert (embed.speculative, embed.draft) == ([], None)


@pytest.mark.e2e
def test_ngram_speculation_keeps_greedy_output(debug_server: ServerProcess, tmp_path: Path) -> None:
    with debug_server.client() as client:
        expected = client.post("/api/generate", json={"model": MODEL, **REPEAT}).json()
        expected_chat = client.post("/api/generate", json={"model": MODEL, **CHAT}).json()
    with running_server(tmp_path, {"CORRAL_DEBUG": "1", "CORRAL_SPECULATIVE": "ngram"}) as srv, srv.client() as c:
        got = c.post("/api/generate", json={"model": MODEL, **REPEAT}).json()
        got_chat = c.post("/api/generate", json={"model": MODEL, **CHAT}).json()
        assert got["response"] == expected["response"] and got["eval_count"] == expected["eval_count"]
        assert got_chat["response"] == expected_chat["response"]
        stats = accepted(srv, 1)
        assert stats and stats[0][0] > 0  # the repeated list was drafted from the prompt, and accepted
