"""GGUF metadata reading: tiny files written here with gguf.GGUFWriter, hostile and truncated files, the real model."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from conftest import SMOL_FILE, bundled_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import InvalidGGUF
from corral.humanize import human_number
from corral.store.gguf_info import EAGER_ARRAY_LIMIT, GGUFInfo, file_type_name, read_gguf_info


def smollm_path() -> Path:
    return bundled_file(*SMOL_FILE)


def write_gguf(
    path: Path,
    arch: str = "llama",
    *,
    kv: dict[str, Any] | None = None,
    tokens: list[str] | None = None,
    tensors: dict[str, np.ndarray[Any, Any]] | None = None,
    file_type: int | None = 15,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    extra: Any = None,
) -> Path:
    w = gguf.GGUFWriter(path, arch, endianess=endianess)
    w.add_name("Tiny Test Model")
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens if tokens is not None else ["<s>", "</s>", "<|eot|>", "a", "b", "c", "d"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    for key, value in (kv or {}).items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    if extra is not None:
        extra(w)
    for name, data in (tensors if tensors is not None else default_tensors()).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def default_tensors() -> dict[str, np.ndarray[Any, Any]]:
    return {
        "token_embd.weight": np.zeros((7, 64), dtype=np.float32),
        "blk.0.attn_norm.weight": np.ones(64, dtype=np.float32),
        "output.weight": np.zeros((7, 64), dtype=np.float16),
    }


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf")


# --- the fields ----------------------------------------------------------------------------------------------


def test_tiny_model_fields(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    assert info.architecture == "llama"
    assert info.file_type == "Q4_K_M"
    assert info.parameter_count == 7 * 64 + 64 + 7 * 64
    assert info.parameter_size == "960"
    assert info.context_length == 2048
    assert info.embedding_length == 64
    assert info.block_count == 2
    assert info.head_count == 4
    assert info.head_count_kv == 2
    assert info.chat_template.startswith("{% for m in messages %}")
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")
    assert info.eot_token is None
    assert not info.is_embedding
    assert not info.has_vision and not info.has_audio
    assert info.version == 3


def test_model_info_matches_show(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    mi = info.model_info()
    assert "general.name" not in mi
    assert "tokenizer.chat_template" not in mi
    assert list(mi) == sorted(mi)  # Go marshals maps with sorted keys
    assert mi["general.architecture"] == "llama"
    assert mi["general.file_type"] == 15
    assert mi["general.parameter_count"] == info.parameter_count
    assert mi["llama.context_length"] == 2048
    assert mi["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32 printed shortest, as Go does
    assert mi["tokenizer.ggml.tokens"] == []  # 7 elements > 5
    verbose = info.model_info(verbose=True)
    assert verbose["tokenizer.ggml.tokens"] == ["<s>", "</s>", "<|eot|>", "a", "b", "c", "d"]
    json.dumps(verbose)  # everything is JSON-ready


def test_short_arrays_are_kept(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", kv={"general.languages": ["en", "fr"]}))
    assert info.model_info()["general.languages"] == ["en", "fr"]


def test_tensors_listing(tiny: Path) -> None:
    tensors = read_gguf_info(tiny).tensors()
    assert tensors[0] == {"name": "token_embd.weight", "type": "F32", "shape": [64, 7]}
    assert {t["name"]: t["type"] for t in tensors}["output.weight"] == "F16"
    assert all(set(t) == {"name", "type", "shape"} for t in tensors)


def test_embedding_vision_audio_flags(tmp_path: Path) -> None:
    bert = read_gguf_info(write_gguf(tmp_path / "bert.gguf", "bert", kv={"bert.pooling_type": 1}))
    assert bert.is_embedding and bert.pooling_type == 1
    vision = read_gguf_info(
        write_gguf(tmp_path / "v.gguf", "gemma3", kv={"gemma3.vision.block_count": 2, "gemma3.audio.block_count": 1})
    )
    assert vision.has_vision and vision.has_audio and not vision.is_embedding


def test_per_layer_head_counts(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "h.gguf", kv={"llama.attention.sliding_window_pattern": [True, False]}))
    assert info.model_info()["llama.attention.sliding_window_pattern"] == [True, False]
    arr = tmp_path / "arr.gguf"
    w = gguf.GGUFWriter(arr, "llama")
    w.add_head_count([4, 8, 6])
    w.add_head_count_kv([2, 2, 1])
    w.add_block_count(3)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_gguf_info(arr)
    assert (info.head_count, info.head_count_kv) == (8, 2)
    assert info.file_type == "unknown"  # no general.file_type
    assert info.parameter_count == 0 and info.parameter_size == "0"


def test_long_arrays_are_read_lazily(tmp_path: Path) -> None:
    n = EAGER_ARRAY_LIMIT + 500
    tokens = [f"tok{i}" for i in range(n)]
    tokens[1] = "</s>\u2581end"

    def scores(w: gguf.GGUFWriter) -> None:
        w.add_token_scores([float(i) / 10 for i in range(n)])
        w.add_token_types([1] * n)
        w.add_uint32("tokenizer.ggml.eot_token_id", n - 1)

    info = read_gguf_info(write_gguf(tmp_path / "big.gguf", tokens=tokens, extra=scores))
    assert info.bos_token == "tok0"
    assert info.eos_token == "</s>\u2581end"
    assert info.eot_token == f"tok{n - 1}"
    assert info.array_length("tokenizer.ggml.tokens") == n
    assert info.model_info()["tokenizer.ggml.scores"] == []
    verbose = info.model_info(verbose=True)
    assert verbose["tokenizer.ggml.tokens"] == tokens
    assert verbose["tokenizer.ggml.scores"][:3] == [0.0, 0.1, 0.2]
    assert verbose["tokenizer.ggml.token_type"] == [1] * n
    assert info.get("tokenizer.ggml.tokens")[-1] == f"tok{n - 1}"


def test_big_endian_file(tmp_path: Path) -> None:
    tensors = {"w": np.ones((4, 32), dtype=np.float32)}
    le = read_gguf_info(write_gguf(tmp_path / "le.gguf", tensors=tensors))
    be = read_gguf_info(write_gguf(tmp_path / "be.gguf", tensors=tensors, endianess=gguf.GGUFEndian.BIG))
    assert be.byte_order == ">"
    assert be.model_info(verbose=True) == le.model_info(verbose=True)
    assert be.tensors() == le.tensors()


# --- Ollama's HumanNumber (format/format_test.go) and FileType names ---------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (1001, "1K"),
        (1_000_000, "1M"),
        (125_000_000, "125M"),
        (500_500_000, "500.50M"),
        (500_550_000, "500.55M"),
        (1_000_000_000, "1B"),
        (2_800_000_000, "2.8B"),
        (2_850_000_000, "2.9B"),
        (1_000_000_000_000, "1000B"),
        (134_515_008, "134.52M"),
        (8_030_261_248, "8.0B"),
        (7_000_000_000, "7B"),
    ],
)
def test_human_number(n: int, text: str) -> None:
    assert human_number(n) == text


@pytest.mark.parametrize(
    ("value", "name"),
    [(0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (15, "Q4_K_M"), (18, "Q6_K"), (32, "BF16")],
)
def test_file_type_names(value: int, name: str) -> None:
    assert file_type_name(value) == name


def test_unknown_file_types() -> None:
    assert file_type_name(None) == "unknown"
    assert file_type_name(5) == "unknown"
    assert file_type_name(1024 + 15) == "unknown"


# --- the real model ------------------------------------------------------------------------------------------


def test_smollm2() -> None:
    path = smollm_path()
    start = time.monotonic()
    info = read_gguf_info(path)
    assert time.monotonic() - start < 1.0  # header only, never the weights
    assert info.architecture == "llama"
    assert info.file_type == "Q4_1"
    assert info.parameter_count == 134_515_008
    assert info.parameter_size == "134.52M"
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert info.block_count == 30
    assert (info.head_count, info.head_count_kv) == (9, 3)
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_start|>" in info.chat_template
    assert not info.is_embedding and not info.has_vision
    assert len(info.tensors()) == 272
    mi = info.model_info()
    assert mi["general.parameter_count"] == 134_515_008
    assert mi["general.file_type"] == 3
    assert mi["tokenizer.ggml.tokens"] == [] and mi["tokenizer.ggml.merges"] == []
    assert mi["general.languages"] == ["en"]
    assert "general.name" not in mi
    verbose = info.model_info(verbose=True)
    assert len(verbose["tokenizer.ggml.tokens"]) == 49152
    assert verbose["tokenizer.ggml.tokens"][1] == "<|im_start|>"


# --- corrupt, truncated and hostile files ------------------------------------------------------------------


def header(version: int = 3, tensors: int = 0, kvs: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def kv_string(key: str) -> bytes:
    k = key.encode()
    return struct.pack("<Q", len(k)) + k


HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "tiny": b"GGUF",
    "zip": b"PK\x03\x04" + b"\x00" * 60,
    "text": b"this is not a model at all, just some text\n" * 3,
    "version 1": header(version=1),
    "version 99": header(version=99),
    "huge kv count": header(kvs=2**62),
    "huge tensor count": header(tensors=2**62),
    "huge array": header(kvs=1) + kv_string("a") + struct.pack("<IIQ", 9, 0, 2**40),
    "huge string array": header(kvs=1) + kv_string("a") + struct.pack("<IIQ", 9, 8, 2**40),
    "huge string": header(kvs=1) + kv_string("a") + struct.pack("<IQ", 8, 2**63),
    "huge key": header(kvs=1) + struct.pack("<Q", 2**40) + b"k" * 16,
    "nested array": header(kvs=1) + kv_string("a") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 0, 0),
    "unknown type": header(kvs=1) + kv_string("a") + struct.pack("<I", 77) + b"\x00" * 16,
    "duplicate key": header(kvs=2) + (kv_string("a") + struct.pack("<IB", 0, 1)) * 2 + b"\x00" * 8,
    "bad alignment": header(kvs=1) + kv_string("general.alignment") + struct.pack("<II", 4, 3) + b"\x00" * 8,
    "zero alignment": header(kvs=1) + kv_string("general.alignment") + struct.pack("<II", 4, 0) + b"\x00" * 8,
    "five dims": header(tensors=1)
    + kv_string("t")
    + struct.pack("<I", 5)
    + struct.pack("<5Q", 1, 1, 1, 1, 1)
    + struct.pack("<IQ", 0, 0),
    "tensor past end": header(tensors=1) + kv_string("t") + struct.pack("<IQIQ", 1, 1024, 0, 0) + b"\x00" * 64,
    "tensor offset overflow": header(tensors=1) + kv_string("t") + struct.pack("<IQIQ", 1, 8, 0, 2**63),
    "impossible shape": header(tensors=1) + kv_string("t") + struct.pack("<IQQIQ", 2, 2**63, 2**63, 0, 0),
    "partial block": header(tensors=1) + kv_string("t") + struct.pack("<IQIQ", 1, 33, 2, 0) + b"\x00" * 64,
    "duplicate tensor": header(tensors=2) + (kv_string("t") + struct.pack("<IQIQ", 1, 1, 0, 0)) * 2 + b"\x00" * 64,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_raise_invalid_gguf(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE[case])
    start = time.monotonic()
    with pytest.raises(InvalidGGUF) as info:
        read_gguf_info(path)
    assert time.monotonic() - start < 2.0
    assert str(path) not in str(info.value)  # messages never leak the path


def test_truncated_at_every_length(tmp_path: Path, tiny: Path) -> None:
    data = tiny.read_bytes()
    info = read_gguf_info(tiny)
    last = max(t.offset + (t.n_bytes or 0) for t in info.tensor_infos)
    for length in range(last):
        path = tmp_path / f"cut{length}.gguf"
        path.write_bytes(data[:length])
        with pytest.raises(InvalidGGUF):
            read_gguf_info(path)
        path.unlink()


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidGGUF, match="regular file"):
        read_gguf_info(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidGGUF, match="regular file"):
        read_gguf_info(fifo)  # must not block waiting for a writer
    with pytest.raises(InvalidGGUF, match="cannot read"):
        read_gguf_info(tmp_path / "missing.gguf")


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_headers_only_raise_invalid_gguf(tmp_path: Path, data: st.DataObject) -> None:
    base = tmp_path / "base.gguf"
    if not base.exists():
        write_gguf(base)
    raw = bytearray(base.read_bytes())
    header_end = read_gguf_info(base).data_offset
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, header_end - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    path = tmp_path / "mutated.gguf"
    path.write_bytes(bytes(raw))
    try:
        info = read_gguf_info(path)
    except InvalidGGUF:
        return
    assert isinstance(info, GGUFInfo)
    json.dumps(info.model_info(verbose=True))
    info.tensors()
