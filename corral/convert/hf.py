"""Hugging Face safetensors directory -> GGUF, for the architectures Corral can run (BERT, Llama).

The tensor names, metadata keys and data types follow llama.cpp's ``convert_hf_to_gguf.py`` so the engine loads
the result exactly as it loads llama.cpp's own conversions; the name mapping itself comes from the ``gguf``
package (``TensorNameMap``), which is where llama.cpp keeps it. Tensors are streamed: the header (metadata and
tensor table) is written first from the safetensors headers, then one tensor at a time is read from its memory
map, converted and appended, so memory stays at about one tensor.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

from corral.convert.common import CallbackFailed, ProgressFn, publish, report
from corral.convert.safetensors import FLOAT_DTYPES, TensorEntry
from corral.convert.source import ModelDirectory
from corral.convert.vocab import Vocab, bert_vocab, gpt2_vocab, load_tokenizer
from corral.errors import ConvertError

F32 = gguf.GGMLQuantizationType.F32
F16 = gguf.GGMLQuantizationType.F16
BF16 = gguf.GGMLQuantizationType.BF16

_OUTTYPES = {"f32": F32, "f16": F16, "bf16": BF16}
_FILE_TYPES = {
    F32: gguf.LlamaFileType.ALL_F32, F16: gguf.LlamaFileType.MOSTLY_F16, BF16: gguf.LlamaFileType.MOSTLY_BF16
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")
MAX_LAYERS = 1024


def _layer(name: str) -> int | None:
    m = _BLOCK_RE.match(name)
    return int(m.group(1)) if m else None


@dataclass
class PlannedTensor:
    """One output tensor: where it comes from, its GGUF name, numpy shape and stored type."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    source: TensorEntry | None = None
    transform: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None = None
    data: npt.NDArray[np.float32] | None = None  # generated tensors (rope_freqs)

    @property
    def nbytes(self) -> int:
        width = 4 if self.qtype == F32 else 2
        return math.prod(self.shape) * width


def _cfg_int(config: dict[str, Any], key: str, default: int | None = None, minimum: int = 1,
             maximum: int = 2**31) -> int:
    value = config.get(key, default)
    if value is None:
        raise ConvertError(f"config.json: {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConvertError(f"config.json: {key} must be an integer from {minimum} to {maximum}")
    return value


def _cfg_float(config: dict[str, Any], key: str, default: float | None = None) -> float | None:
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConvertError(f"config.json: {key} must be a number")
    return float(value)


class Architecture(abc.ABC):
    """What differs per model family: names to skip, metadata, expected shapes, transforms and the vocabulary."""

    gguf_arch: gguf.MODEL_ARCH
    hf_names: tuple[str, ...] = ()

    def __init__(self, config: dict[str, Any], directory: ModelDirectory) -> None:
        self.config = config
        self.directory = directory
        # Bounded: the name map and the required-tensor list grow with it (a hostile config must not OOM us).
        self.n_layer = _cfg_int(config, "num_hidden_layers", maximum=MAX_LAYERS)
        self.hidden = _cfg_int(config, "hidden_size")
        self.vocab_size = _cfg_int(config, "vocab_size")
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_layer)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def normalize_name(self, name: str) -> str | None:
        """The HF name llama.cpp maps, or None for tensors the engine does not use."""
        return name

    def map_name(self, hf_name: str) -> str:
        mapped = self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConvertError(f"cannot map tensor {hf_name[:120]!r} for architecture {self.arch_name}")
        layer = _layer(mapped)
        if layer is not None and layer >= self.n_layer:
            raise ConvertError(f"tensor {hf_name[:120]!r} is beyond num_hidden_layers ({self.n_layer})")
        return mapped

    @abc.abstractmethod
    def expected_shape(self, name: str) -> tuple[int, ...] | None:
        """The numpy shape a GGUF tensor must have, or None when this family does not use it."""
        ...

    @abc.abstractmethod
    def required(self) -> list[str]:
        ...

    def transform(self, name: str) -> Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None:
        return None

    def always_f32(self, name: str) -> bool:
        return False

    def extra_tensors(self) -> list[PlannedTensor]:
        return []

    @abc.abstractmethod
    def set_parameters(self, writer: gguf.GGUFWriter) -> None:
        ...

    @abc.abstractmethod
    def vocab(self) -> Vocab:
        ...


class BertArchitecture(Architecture):
    """Encoder-only BERT for embeddings (llama.cpp ``BertModel``)."""

    gguf_arch = gguf.MODEL_ARCH.BERT
    hf_names = ("BertModel", "BertForMaskedLM")

    def __init__(self, config: dict[str, Any], directory: ModelDirectory) -> None:
        super().__init__(config, directory)
        self.n_ff = _cfg_int(config, "intermediate_size")
        self.n_head = _cfg_int(config, "num_attention_heads")
        self.n_pos = _cfg_int(config, "max_position_embeddings")
        self.type_vocab = _cfg_int(config, "type_vocab_size", 2)
        if self.hidden % self.n_head:
            raise ConvertError("config.json: hidden_size is not a multiple of num_attention_heads")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ConvertError("only absolute position embeddings are supported for BERT")

    def normalize_name(self, name: str) -> str | None:
        if name.startswith("bert."):
            name = name[5:]
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        if name.endswith(".beta"):
            name = name[:-5] + ".bias"
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            return None
        if name.startswith(("cls.predictions", "cls.seq_relationship")):
            return None
        return name

    def expected_shape(self, name: str) -> tuple[int, ...] | None:
        h, ff = self.hidden, self.n_ff
        fixed: dict[str, tuple[int, ...]] = {
            "token_embd.weight": (self.vocab_size, h),
            "position_embd.weight": (self.n_pos, h),
            "token_types.weight": (self.type_vocab, h),
            "token_embd_norm.weight": (h,),
            "token_embd_norm.bias": (h,),
        }
        if name in fixed:
            return fixed[name]
        per_layer: dict[str, tuple[int, ...]] = {
            "attn_q.weight": (h, h), "attn_q.bias": (h,),
            "attn_k.weight": (h, h), "attn_k.bias": (h,),
            "attn_v.weight": (h, h), "attn_v.bias": (h,),
            "attn_output.weight": (h, h), "attn_output.bias": (h,),
            "attn_output_norm.weight": (h,), "attn_output_norm.bias": (h,),
            "ffn_up.weight": (ff, h), "ffn_up.bias": (ff,),
            "ffn_down.weight": (h, ff), "ffn_down.bias": (h,),
            "layer_output_norm.weight": (h,), "layer_output_norm.bias": (h,),
        }
        if _layer(name) is not None:
            return per_layer.get(name.split(".", 2)[2])
        return None

    def required(self) -> list[str]:
        names = ["token_embd.weight", "position_embd.weight", "token_types.weight", "token_embd_norm.weight",
                 "token_embd_norm.bias"]
        for i in range(self.n_layer):
            for part in ("attn_q", "attn_k", "attn_v", "attn_output", "attn_output_norm", "ffn_up", "ffn_down",
                         "layer_output_norm"):
                names += [f"blk.{i}.{part}.weight", f"blk.{i}.{part}.bias"]
        return names

    def always_f32(self, name: str) -> bool:
        return name in ("position_embd.weight", "token_types.weight")

    def _pooling_type(self) -> gguf.PoolingType:
        """From the sentence-transformers Pooling module when present; mean pooling otherwise."""
        modules = self.directory.read_json("modules.json")
        if not isinstance(modules, list):
            return gguf.PoolingType.MEAN
        for module in modules:
            if isinstance(module, dict) and module.get("type") == "sentence_transformers.models.Pooling":
                path = module.get("path")
                if not isinstance(path, str):
                    raise ConvertError("modules.json: the Pooling module has no path")
                pooling = self.directory.read_json_object(f"{path}/config.json" if path else "config.json")
                if pooling is None:
                    return gguf.PoolingType.MEAN
                if pooling.get("pooling_mode_mean_tokens"):
                    return gguf.PoolingType.MEAN
                if pooling.get("pooling_mode_cls_token"):
                    return gguf.PoolingType.CLS
                if pooling.get("pooling_mode_lasttoken"):
                    return gguf.PoolingType.LAST
                raise ConvertError("only mean, CLS and last-token pooling are supported")
        return gguf.PoolingType.MEAN

    def set_parameters(self, writer: gguf.GGUFWriter) -> None:
        writer.add_block_count(self.n_layer)
        writer.add_context_length(self.n_pos)
        writer.add_embedding_length(self.hidden)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        eps = _cfg_float(self.config, "layer_norm_eps", 1e-12)
        assert eps is not None
        writer.add_layer_norm_eps(eps)
        writer.add_causal_attention(False)
        writer.add_pooling_type(self._pooling_type())

    def vocab(self) -> Vocab:
        return bert_vocab(self.directory, load_tokenizer(self.directory), self.vocab_size, self.type_vocab)


def _permute(n_head: int) -> Callable[[npt.NDArray[Any]], npt.NDArray[Any]]:
    """llama.cpp's Q/K row permutation: HF's rotate-half layout -> GGML's interleaved RoPE pairs."""

    def apply(w: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.ascontiguousarray(
            w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        )

    return apply


class LlamaArchitecture(Architecture):
    """Decoder-only Llama family (llama.cpp ``LlamaModel``)."""

    gguf_arch = gguf.MODEL_ARCH.LLAMA
    hf_names = ("LlamaForCausalLM", "MistralForCausalLM")

    def __init__(self, config: dict[str, Any], directory: ModelDirectory) -> None:
        super().__init__(config, directory)
        self.n_ff = _cfg_int(config, "intermediate_size")
        self.n_head = _cfg_int(config, "num_attention_heads")
        self.n_head_kv = _cfg_int(config, "num_key_value_heads", self.n_head)
        self.n_ctx = _cfg_int(config, "max_position_embeddings")
        if config.get("num_local_experts") or config.get("num_experts"):
            raise ConvertError("mixture-of-experts Llama models are not supported yet")
        explicit_head_dim = config.get("head_dim")
        self.head_dim = _cfg_int(config, "head_dim") if explicit_head_dim is not None else 0
        if not self.head_dim:
            if self.hidden % self.n_head:
                raise ConvertError("config.json: hidden_size is not a multiple of num_attention_heads")
            self.head_dim = self.hidden // self.n_head
        if self.head_dim % 2 or self.n_head % self.n_head_kv:
            raise ConvertError("config.json: inconsistent attention head sizes")
        self.explicit_head_dim = explicit_head_dim is not None
        self.rope_scaling = config.get("rope_scaling") or None
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, dict):
            raise ConvertError("config.json: rope_scaling must be an object")

    def normalize_name(self, name: str) -> str | None:
        if name.endswith((".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")):
            return None
        return name

    def expected_shape(self, name: str) -> tuple[int, ...] | None:
        h, ff = self.hidden, self.n_ff
        q, kv = self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        fixed: dict[str, tuple[int, ...]] = {
            "token_embd.weight": (self.vocab_size, h),
            "output.weight": (self.vocab_size, h),
            "output_norm.weight": (h,),
        }
        if name in fixed:
            return fixed[name]
        per_layer: dict[str, tuple[int, ...]] = {
            "attn_norm.weight": (h,), "ffn_norm.weight": (h,),
            "attn_q.weight": (q, h), "attn_q.bias": (q,),
            "attn_k.weight": (kv, h), "attn_k.bias": (kv,),
            "attn_v.weight": (kv, h), "attn_v.bias": (kv,),
            "attn_output.weight": (h, q), "attn_output.bias": (h,),
            "ffn_gate.weight": (ff, h), "ffn_gate.bias": (ff,),
            "ffn_up.weight": (ff, h), "ffn_up.bias": (ff,),
            "ffn_down.weight": (h, ff), "ffn_down.bias": (h,),
        }
        if _layer(name) is not None:
            return per_layer.get(name.split(".", 2)[2])
        return None

    def required(self) -> list[str]:
        names = ["token_embd.weight", "output_norm.weight"]
        for i in range(self.n_layer):
            for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                         "ffn_down"):
                names.append(f"blk.{i}.{part}.weight")
        return names

    def transform(self, name: str) -> Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None:
        part = name.split(".", 2)[2] if _layer(name) is not None else ""
        if part in ("attn_q.weight", "attn_q.bias"):
            return _permute(self.n_head)
        if part in ("attn_k.weight", "attn_k.bias"):
            return _permute(self.n_head_kv)
        return None

    def _rope_type(self) -> str:
        if self.rope_scaling is None:
            return ""
        kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", ""))
        return kind.lower() if isinstance(kind, str) else ""

    def extra_tensors(self) -> list[PlannedTensor]:
        """Llama 3.1's frequency-dependent RoPE scaling, baked into ``rope_freqs`` as llama.cpp does."""
        if self._rope_type() != "llama3":
            return []
        assert self.rope_scaling is not None
        base = _cfg_float(self.config, "rope_theta", 10000.0) or 10000.0
        factor = _cfg_float(self.rope_scaling, "factor", 8.0) or 8.0
        low = _cfg_float(self.rope_scaling, "low_freq_factor", 1.0) or 1.0
        high = _cfg_float(self.rope_scaling, "high_freq_factor", 4.0) or 4.0
        old_ctx = _cfg_float(self.rope_scaling, "original_max_position_embeddings", 8192) or 8192.0
        if high == low:
            raise ConvertError("config.json: rope_scaling low_freq_factor equals high_freq_factor")
        dim = self.head_dim
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        wavelen = 2 * math.pi / freqs
        smooth = (old_ctx / wavelen - low) / (high - low)
        blended = 1 / ((1 - smooth) / factor + smooth)
        factors = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, blended))
        factors = factors.astype(np.float32)
        return [PlannedTensor("rope_freqs.weight", factors.shape, F32, data=factors)]

    def set_parameters(self, writer: gguf.GGUFWriter) -> None:
        writer.add_block_count(self.n_layer)
        writer.add_context_length(self.n_ctx)
        writer.add_embedding_length(self.hidden)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head_kv)
        theta = _cfg_float(self.config, "rope_theta")
        if theta is not None:
            writer.add_rope_freq_base(theta)
        eps = _cfg_float(self.config, "rms_norm_eps", 1e-6)
        assert eps is not None
        writer.add_layer_norm_rms_eps(eps)
        if self.explicit_head_dim:
            writer.add_key_length(self.head_dim)
            writer.add_value_length(self.head_dim)
        writer.add_vocab_size(self.vocab_size)
        writer.add_rope_dimension_count(self.head_dim)
        kind = self._rope_type()
        if kind == "linear":
            assert self.rope_scaling is not None
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(_cfg_float(self.rope_scaling, "factor", 1.0) or 1.0)
        elif kind not in ("", "default", "llama3"):
            raise ConvertError(f"RoPE scaling type {kind[:40]!r} is not supported yet")

    def vocab(self) -> Vocab:
        return gpt2_vocab(self.directory, load_tokenizer(self.directory), self.vocab_size)


ARCHITECTURES: tuple[type[Architecture], ...] = (BertArchitecture, LlamaArchitecture)


def _architecture(config: dict[str, Any], directory: ModelDirectory) -> Architecture:
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConvertError("config.json: architectures is missing")
    for cls in ARCHITECTURES:
        if names[0] in cls.hf_names:
            return cls(config, directory)
    supported = ", ".join(n for cls in ARCHITECTURES for n in cls.hf_names)
    raise ConvertError(f"unsupported architecture {names[0][:80]!r} (supported: {supported})")


def _out_type(requested: str, tensors: dict[str, TensorEntry]) -> gguf.GGMLQuantizationType:
    """llama.cpp's "auto": BF16 checkpoints stay BF16, everything else becomes F16."""
    if requested != "auto":
        try:
            return _OUTTYPES[requested.lower()]
        except KeyError:
            raise ConvertError(f"unsupported output type {requested!r} (use f32, f16, bf16 or auto)") from None
    for entry in tensors.values():
        if entry.dtype in FLOAT_DTYPES:
            return BF16 if entry.dtype == "BF16" else F16
    return F16


def _plan(
    arch: Architecture, tensors: dict[str, TensorEntry], outtype: gguf.GGMLQuantizationType
) -> list[PlannedTensor]:
    plan: list[PlannedTensor] = []
    seen: set[str] = set()
    for hf_name, entry in tensors.items():
        normalized = arch.normalize_name(hf_name)
        if normalized is None:
            continue
        name = arch.map_name(normalized)
        if name in seen:
            raise ConvertError(f"two tensors map to {name!r}")
        seen.add(name)
        expected = arch.expected_shape(name)
        if expected is None:
            raise ConvertError(f"tensor {hf_name[:120]!r} ({name}) is not used by architecture {arch.arch_name}")
        if entry.shape != expected:
            raise ConvertError(f"tensor {hf_name[:120]!r} has shape {list(entry.shape)}, expected {list(expected)}")
        if entry.dtype not in FLOAT_DTYPES:
            raise ConvertError(f"tensor {hf_name[:120]!r} has dtype {entry.dtype}, expected a floating-point type")
        # llama.cpp keeps 1-D tensors, norms and some embeddings in F32: the engine only reads those as F32.
        qtype = F32 if len(expected) <= 1 or name.endswith("_norm.weight") or arch.always_f32(name) else outtype
        plan.append(PlannedTensor(name, expected, qtype, source=entry, transform=arch.transform(name)))
    missing = [n for n in arch.required() if n not in seen]
    if missing:
        raise ConvertError(f"the model is missing tensor {missing[0]!r}")
    plan.extend(arch.extra_tensors())
    return plan


def _to_bf16(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """float32 -> bfloat16 bits, rounding to nearest even and keeping NaNs quiet (ggml's conversion)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = ((bits.astype(np.uint64) + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(nan, ((bits >> 16) | 64).astype(np.uint16), rounded)


def _tensor_data(t: PlannedTensor) -> npt.NDArray[Any]:
    """The bytes of one output tensor, converted from its stored dtype only when the type differs."""
    if t.data is not None:
        return t.data
    assert t.source is not None
    raw = t.source.raw()
    native = {"F32": F32, "F16": F16, "BF16": BF16}.get(t.source.dtype)
    if native == t.qtype:
        data: npt.NDArray[Any] = raw
    else:
        values = t.source.to_float32(raw)
        if t.qtype == F32:
            data = values
        elif t.qtype == F16:
            data = values.astype(np.float16)
        else:
            data = _to_bf16(values)
    if t.transform is not None:
        data = t.transform(data)
    return np.ascontiguousarray(data)


def _writer_dtype(qtype: gguf.GGMLQuantizationType) -> tuple[np.dtype[Any], gguf.GGMLQuantizationType | None]:
    if qtype == F32:
        return np.dtype(np.float32), None
    if qtype == F16:
        return np.dtype(np.float16), None
    return np.dtype(np.uint16), BF16


def _model_name(config: dict[str, Any], src: Path) -> str:
    name = config.get("_name_or_path")
    if isinstance(name, str) and name.strip():
        return name.rstrip("/").rsplit("/", 1)[-1][:200]
    return src.name[:200]


@contextlib.contextmanager
def quiet_gguf_logs() -> Iterator[None]:
    """The gguf package logs every file it writes and warns about source quirks; neither helps a Corral user."""
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def convert_directory(
    src: Path, dst: Path, progress: ProgressFn | None = None, *, outtype: str = "auto"
) -> None:
    """Convert the Hugging Face model directory ``src`` into one GGUF file ``dst`` (written atomically).

    ``progress("converting model", done, total)`` is called before the first and after every tensor. Anything
    unsupported, malformed or hostile raises :class:`ConvertError` (a ``ValueError``) and leaves ``dst`` alone.
    ``outtype`` is ``auto`` (BF16 stays BF16, else F16), ``f16``, ``bf16`` or ``f32``; 1-D tensors are always F32.
    """
    dst = Path(dst)
    directory = ModelDirectory(Path(src))
    tmp: Path | None = None
    with quiet_gguf_logs():
        try:
            config = directory.read_json_object("config.json", required=True)
            assert config is not None
            arch = _architecture(config, directory)
            tensors = directory.open_weights()
            out_qtype = _out_type(outtype, tensors)
            plan = _plan(arch, tensors, out_qtype)
            vocab = arch.vocab()

            fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            writer = gguf.GGUFWriter(tmp, arch.arch_name)
            try:
                writer.add_name(_model_name(config, directory.root))
                arch.set_parameters(writer)
                writer.add_file_type(_FILE_TYPES[out_qtype])
                writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
                vocab.add_to(writer)
                for t in plan:
                    dtype, raw_dtype = _writer_dtype(t.qtype)
                    writer.add_tensor_info(t.name, t.shape, dtype, t.nbytes, raw_dtype=raw_dtype)
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                total = len(plan)
                report(progress, "converting model", 0, total)
                for done, t in enumerate(plan, 1):
                    writer.write_tensor_data(_tensor_data(t))
                    report(progress, "converting model", done, total)
                assert writer.fout is not None
                for f in writer.fout:
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                writer.close()
            publish(tmp, dst)
            tmp = None
        except ConvertError:
            raise
        except CallbackFailed as exc:
            raise exc.original from None
        except OSError as exc:
            raise ConvertError(f"cannot write the GGUF file: {exc.strerror or type(exc).__name__}") from None
        except Exception as exc:  # the contract: a bad model directory is a ValueError, whatever tripped on it
            raise ConvertError(f"conversion failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        finally:
            directory.close()
            if tmp is not None:
                tmp.unlink(missing_ok=True)
