"""PARAMETER values: typed as Ollama's ``api.FormatParams`` types them, and written back for ``show --modelfile``.

The option types come from :mod:`corral.inference.options`; which names a Modelfile may set, and which old names are
accepted with a warning and dropped, follow Ollama's ``api.Options`` and ``parser.deprecatedParameters``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import numpy as np

from corral.errors import ModelfileError
from corral.inference import options
from corral.modelfile.parser import COMMANDS, Command

# The json tags of Ollama's api.Options (plus its embedded Runner) that a Modelfile may set.
PARAMETERS = frozenset({
    "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n", "temperature",
    "repeat_penalty", "presence_penalty", "frequency_penalty", "stop", "num_ctx", "num_batch", "num_gpu", "main_gpu",
    "use_mmap", "num_thread", "draft_num_predict",
})
# Accepted in old Modelfiles; Ollama prints a warning and drops them.
DEPRECATED = frozenset({
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat", "mirostat_tau",
    "mirostat_eta",
})

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_HEX_FLOAT_RE = re.compile(r"[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_INT64 = 2**63


def kind(name: str) -> str | None:
    """``int``, ``float``, ``bool`` or ``list`` for a Modelfile parameter; ``None`` for an unknown name."""
    if name not in PARAMETERS:
        return None
    if name in options.INT_OPTIONS:
        return "int"
    if name in options.FLOAT_OPTIONS:
        return "float"
    if name in options.BOOL_OPTIONS:
        return "bool"
    return "list"


def float32(value: float) -> float:
    """The float32 nearest ``value``, as the shortest decimal that reads back to it (what Go's JSON writes)."""
    with np.errstate(over="ignore"):  # out of range becomes inf, which the caller refuses
        return float(str(np.float32(value)))


def parse_value(name: str, raw: str) -> Any:
    """One PARAMETER value typed like ``strconv.ParseInt/ParseFloat(.., 32)/ParseBool``; raises
    :class:`ModelfileError` with Ollama's message (``unknown parameter 'x'``, ``invalid int value [x]``...)."""
    what = kind(name)
    if what is None:
        raise ModelfileError(f"unknown parameter '{name}'")
    if what == "list":
        return raw
    if what == "int":
        if _INT_RE.fullmatch(raw) and -_INT64 <= int(raw) < _INT64:
            return int(raw)
        raise ModelfileError(f"invalid int value [{raw}]")
    if what == "float":
        try:
            if _FLOAT_RE.fullmatch(raw):
                number = float(raw)
            elif _HEX_FLOAT_RE.fullmatch(raw):
                number = float.fromhex(raw)
            else:
                raise ValueError(raw)
        except (ValueError, OverflowError):
            raise ModelfileError(f"invalid float value [{raw}]") from None
        narrowed = float32(number)
        if not math.isfinite(narrowed):  # out of float32 range: Go reports a range error
            raise ModelfileError(f"invalid float value [{raw}]")
        return narrowed
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ModelfileError(f"invalid bool value [{raw}]")


def typed_parameters(commands: Iterable[Command]) -> tuple[dict[str, Any], list[str]]:
    """The PARAMETER commands as a request's ``parameters`` map, plus the warnings for deprecated names.

    Repeated names collect into a list for ``stop`` and keep the last value otherwise. Errors name the line."""
    params: dict[str, Any] = {}
    warnings: list[str] = []
    for command in commands:
        if command.name in COMMANDS or command.name == "model":
            continue
        if command.name in DEPRECATED:
            warnings.append(f"warning: parameter {command.name} is deprecated")
            continue
        try:
            value = parse_value(command.name, command.args)
        except ModelfileError as exc:
            raise ModelfileError(exc.message, command.line) from None
        if kind(command.name) == "list":
            params.setdefault(command.name, []).append(value)
        else:
            params[command.name] = value
    return params, warnings


def _go_g(value: float) -> str:
    """Go's ``%v`` for a float64: shortest digits, exponent form below 1e-4 or from 1e6 on (``1e+06``)."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # digits before the decimal point
    exp = point - 1
    lead = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{lead}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{lead}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{lead}{text}{'0' * (point - len(text))}"
    return f"{lead}{text[:point]}.{text[point:]}"


def format_value(name: str, value: Any) -> str:
    """A params-layer value as a PARAMETER argument (Go's ``%v``), so that parsing it gives the value back.

    Integer options print as integers even when the JSON holds ``4096.0`` (Ollama would print ``1e+06`` for a
    million, which its own parser then refuses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and kind(name) == "int" and float(value).is_integer():
        return str(int(value))
    if isinstance(value, float):
        return _go_g(value)
    return str(value)
