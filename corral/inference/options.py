"""Ollama's model options: validation, precedence, and translation to the engine's request fields.

Options come from three places, in rising precedence: Ollama's defaults, the model's params layer (Modelfile
PARAMETER lines), and the request's ``options``. Runner options change how the engine is loaded (a reload); the rest
travel with each request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral import config
from corral.errors import OptionError

log = logging.getLogger("corral.inference.options")

INT_OPTIONS = {
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat",
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "draft_num_predict",
}
FLOAT_OPTIONS = {
    "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty",
    "mirostat_tau", "mirostat_eta",
}
BOOL_OPTIONS = {"use_mmap", "numa", "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock"}
LIST_OPTIONS = {"stop"}
KNOWN_OPTIONS = INT_OPTIONS | FLOAT_OPTIONS | BOOL_OPTIONS | LIST_OPTIONS

# Options that change how the engine is loaded; a change means a new runner.
RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict")

DEFAULTS: dict[str, Any] = {
    "num_keep": 4,
    "seed": -1,
    "num_predict": -1,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "temperature": 0.8,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
    "num_batch": 512,
    "num_gpu": -1,
    "num_thread": 0,
}


# Ranges for the integer options, so the engine is never started or asked with a value it would assert on or
# overflow (num_batch -1 killed a runner through a GGML_ASSERT; 2**31 threads failed the load). Wide enough for
# every real use: num_gpu 999 means "all layers", as in Ollama's Modelfiles.
_I32 = 2**31 - 1
INT_RANGES: dict[str, tuple[int, int]] = {
    "num_ctx": (1, 1 << 24),
    "num_batch": (1, 1 << 16),
    "num_thread": (0, 1024),
    "num_gpu": (-1, 1 << 20),
    "main_gpu": (0, 1024),
    "num_keep": (-1, _I32),
    "num_predict": (-2, _I32),
    "top_k": (-_I32, _I32),
    "repeat_last_n": (-1, _I32),
    "mirostat": (0, 2),
    "draft_num_predict": (0, 1024),
    "seed": (-(2**63), 2**63 - 1),
}


def _coerce(key: str, value: Any) -> Any:
    if key in INT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OptionError(f'option "{key}" must be of type integer')
        number = int(value)  # Ollama truncates a float given for an integer option
        low, high = INT_RANGES.get(key, (-(2**63), 2**63 - 1))
        if not low <= number <= high:
            raise OptionError(f'option "{key}" must be between {low} and {high}')
        return number
    if key in FLOAT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OptionError(f'option "{key}" must be of type float32')
        if abs(value) > 3.4e38:
            raise OptionError(f'option "{key}" is out of range for a float32')
        return float(value)
    if key in BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise OptionError(f'option "{key}" must be of type boolean')
        return value
    if key in LIST_OPTIONS:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise OptionError(f'option "{key}" must be of type array of strings')
        return list(value)
    return value


def validate(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Type-check known options; unknown keys are dropped with a warning, as Ollama does; ``None`` means unset."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in KNOWN_OPTIONS:
            log.warning("invalid option provided: %s", key)
            continue
        if value is None:
            continue
        out[key] = _coerce(key, value)
    return out


def merge(params: Mapping[str, Any] | None, request: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults < model params < request options."""
    merged = dict(DEFAULTS)
    merged["num_ctx"] = config.context_length_default()
    merged.update(validate(params))
    merged.update(validate(request))
    return merged


@dataclass(frozen=True)
class RunnerOptions:
    """What a runner was loaded with; two requests share a runner only when these are equal."""

    num_ctx: int
    num_batch: int
    num_thread: int
    use_mmap: bool | None

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], *, model_ctx: int | None = None) -> RunnerOptions:
        num_ctx = max(4, int(opts.get("num_ctx") or config.context_length_default()))
        if model_ctx:
            num_ctx = min(num_ctx, model_ctx)
        num_thread = int(opts.get("num_thread") or 0) or config.num_threads()
        return cls(
            num_ctx=num_ctx,
            num_batch=max(1, int(opts.get("num_batch") or 512)),
            num_thread=num_thread,
            use_mmap=opts.get("use_mmap"),
        )


def engine_sampling(opts: Mapping[str, Any], num_ctx: int) -> dict[str, Any]:
    """Translate merged Ollama options into llama-server request fields (``/completion`` and ``/v1/chat``)."""
    num_predict = int(opts.get("num_predict", -1))
    if num_predict == -2:
        n_predict = num_ctx
    elif num_predict < 0:
        n_predict = 10 * num_ctx  # Ollama bounds "infinite" generation to 10x the context
    else:
        n_predict = num_predict
    fields: dict[str, Any] = {
        "n_predict": n_predict,
        "temperature": opts["temperature"],
        "top_k": opts["top_k"],
        "top_p": opts["top_p"],
        "min_p": opts["min_p"],
        "typical_p": opts["typical_p"],
        "repeat_last_n": opts["repeat_last_n"],
        "repeat_penalty": opts["repeat_penalty"],
        "presence_penalty": opts["presence_penalty"],
        "frequency_penalty": opts["frequency_penalty"],
        "mirostat": opts.get("mirostat", 0),
        "mirostat_tau": opts.get("mirostat_tau", 5.0),
        "mirostat_eta": opts.get("mirostat_eta", 0.1),
        "n_keep": opts.get("num_keep", 4),
    }
    seed = int(opts.get("seed", -1))
    if seed >= 0:
        fields["seed"] = seed & 0xFFFFFFFF  # the engine's seed is 32 bits: what a C cast of Ollama's int gives
    stop = opts.get("stop")
    if stop:
        fields["stop"] = list(stop)
    return fields
