"""OLLAMA_FLASH_ATTENTION and OLLAMA_KV_CACHE_TYPE reach the engine, the memory plan and /api/ps."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from corral.inference import attention, memory
from corral.inference.runner.process import server_flags
from corral.inference.runner.spec import LaunchSpec
from corral.inference.runner.wheel import build_params
from corral.store.gguf_info import read_gguf_info
from tests.conftest import MODEL, SMOL_FILE, bundled_file, running_server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in ("CORRAL_", "OLLAMA_"):
        for name in ("FLASH_ATTENTION", "KV_CACHE_TYPE"):
            monkeypatch.delenv(prefix + name, raising=False)
    attention._warned.clear()


@pytest.mark.parametrize(("env", "flash", "cache"), [
    ({}, "auto", "f16"),
    ({"OLLAMA_FLASH_ATTENTION": "1"}, "on", "f16"),
    ({"OLLAMA_FLASH_ATTENTION": "false"}, "off", "f16"),
    ({"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0"}, "on", "q8_0"),
    ({"CORRAL_FLASH_ATTENTION": "true", "OLLAMA_KV_CACHE_TYPE": "Q4_0"}, "on", "q4_0"),
    ({"OLLAMA_FLASH_ATTENTION": "0", "CORRAL_FLASH_ATTENTION": "1", "CORRAL_KV_CACHE_TYPE": "q4_0"}, "on", "q4_0"),
])
def test_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flash: str,
                                         cache: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert attention.settings() == attention.Attention(flash=flash, cache_type=cache)


@pytest.mark.parametrize("env", [{"OLLAMA_KV_CACHE_TYPE": "q8_0"},
                                 {"OLLAMA_KV_CACHE_TYPE": "q4_0", "OLLAMA_FLASH_ATTENTION": "0"},
                                 {"OLLAMA_KV_CACHE_TYPE": "q5_1", "OLLAMA_FLASH_ATTENTION": "1"}])
def test_a_quantized_cache_needs_flash_attention_and_a_known_type(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.WARNING, logger="corral.inference.attention"):
        assert attention.settings().cache_type == "f16"
        attention.settings()
    assert len(caplog.records) == 1 and "using f16" in caplog.records[0].getMessage()


def test_the_engine_gets_them_as_params_and_as_flags() -> None:
    import xllamacpp

    p = build_params({"model": "m.gguf", "num_ctx": 512, "parallel": 1, "flash_attention": "on",
                      "cache_type": "q8_0"})
    assert p.flash_attn_type == xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert p.cache_type_k == p.cache_type_v == xllamacpp.ggml_type.GGML_TYPE_Q8_0
    default = build_params({"model": "m.gguf", "num_ctx": 512, "parallel": 1})
    assert default.flash_attn_type == xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO
    assert default.cache_type_k == xllamacpp.ggml_type.GGML_TYPE_F16
    flags = server_flags(LaunchSpec(model="m.gguf", num_ctx=512, parallel=1, flash_attention="off",
                                    cache_type="q4_0"), "llama-server", "127.0.0.1:8080")
    assert flags[flags.index("-fa") + 1] == "off"
    assert flags[flags.index("-ctk") + 1] == flags[flags.index("-ctv") + 1] == "q4_0"


def test_memory_counts_the_smaller_cache() -> None:
    info = read_gguf_info(bundled_file(*SMOL_FILE))
    f16 = memory.kv_cache_bytes(info, 4096)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims: 2 x 30 x 3 x 64 x 4096 elements
    assert f16 == 2 * 30 * 3 * 64 * 4096 * 2
    assert memory.kv_cache_bytes(info, 4096, "q8_0") == f16 * 34 // 64
    assert memory.kv_cache_bytes(info, 4096, "q4_0") == f16 * 18 // 64


@pytest.mark.e2e
def test_ps_and_the_engine_follow_the_cache_type(tmp_path: Path) -> None:
    """Three servers: f16 (default), q8_0 with flash attention, q4_0 asked for without it (f16 and a warning).
    /api/ps sizes the cache by its type; the quantized cache really is in use (greedy text changes with it)."""
    results = {}
    for label, env in (("f16", {}), ("q8_0", {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0"}),
                       ("fallback", {"CORRAL_KV_CACHE_TYPE": "q4_0"})):
        with running_server(tmp_path / label, {**env, "CORRAL_NUM_PARALLEL": "1"}) as srv:
            r = httpx.post(srv.url + "/api/generate", timeout=120, json={
                "model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 6, "temperature": 0}})
            [ps] = httpx.get(srv.url + "/api/ps").json()["models"]
            results[label] = (ps["size"], r.json()["response"], srv.log_text())
    info = read_gguf_info(bundled_file(*SMOL_FILE))
    # the KV cache and the engine's prompt cache (sized by it) both shrink
    saved = memory.model_bytes(info, 0, 4096, 1) - memory.model_bytes(info, 0, 4096, 1, "q8_0")
    assert saved > memory.kv_cache_bytes(info, 4096) - memory.kv_cache_bytes(info, 4096, "q8_0")
    assert results["f16"][0] - results["q8_0"][0] == saved
    assert results["fallback"][0] == results["f16"][0] and results["fallback"][1] == results["f16"][1]
    assert "quantized kv cache requested (q4_0) but flash attention is not enabled" in results["fallback"][2]
    assert results["q8_0"][1] != results["f16"][1]
