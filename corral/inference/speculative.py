"""Speculative decoding: which of the engine's drafting methods a runner starts with, and whether a draft fits.

Two sources of drafts, both verified by the model itself in one batch, so greedy output never changes:

* a draft model stored in the model's manifest (Modelfile ``DRAFT``, layer ``application/vnd.ollama.image.draft``),
  proposing up to ``draft_num_predict`` tokens per step (Ollama's parameter: default 4, 0 turns drafting off);
* the engine's draftless n-gram lookup over the tokens already in the context (``CORRAL_SPECULATIVE=ngram``),
  which pays off when the output copies the prompt (editing code, repeating a list, quoting a document).

Both are load-time settings: they are part of the runner's ``LaunchSpec``, so changing them starts a new runner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral import config
from corral.store.gguf_info import GGUFInfo

log = logging.getLogger("corral.inference.speculative")

DRAFT_NUM_PREDICT_DEFAULT = 4  # Ollama's default for a separate draft model

# The engine's draftless methods (llama-server --spec-type names); "ngram" means the one that did best in
# benchmarks/speculative.py on this 2-core CPU (docs/benchmarks.md).
NGRAM_TYPES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod")
NGRAM_DEFAULT = "ngram-map-k"
_OFF = ("", "0", "off", "none", "false", "no")

# Draft model architectures that are not stand-alone language models, and the engine method that runs each.
_DRAFT_KINDS = (("-assistant", "draft-mtp"), ("eagle3", "draft-eagle3"), ("dflash", "draft-dflash"),
                ("dspark", "draft-dspark"))

# llama.cpp's rule for a draft model's vocabulary (common_speculative_are_compatible): the same tokenizer type
# and special tokens, sizes within this many entries, and the same text for every token from this id on.
VOCAB_MAX_SIZE_DIFFERENCE = 128
VOCAB_CHECK_START_ID = 5


@dataclass(frozen=True)
class Speculation:
    """What a runner is started with: engine method names, the draft model's path and its draft length."""

    types: list[str] = field(default_factory=list)
    draft: str | None = None
    draft_max: int = 0


def ngram_type() -> str | None:
    """``CORRAL_SPECULATIVE``: ``ngram`` (the default n-gram method), one of :data:`NGRAM_TYPES`, or off."""
    value = (config.speculative() or "").strip().lower()
    if value in _OFF:
        return None
    if value == "ngram":
        return NGRAM_DEFAULT
    if value in NGRAM_TYPES:
        return value
    log.warning("CORRAL_SPECULATIVE=%r is not one of ngram, %s, off: speculative decoding stays off",
                value, ", ".join(NGRAM_TYPES))
    return None


def draft_type(info: GGUFInfo) -> str:
    """The engine method for a draft GGUF: a plain small model drafts on its own (``draft-simple``); MTP heads,
    EAGLE-3 and DFlash drafters run against the target model's hidden states."""
    arch = info.architecture.lower()
    for marker, kind in _DRAFT_KINDS:
        if marker in arch:
            return kind
    return "draft-simple"


def draft_num_predict(opts: Mapping[str, Any]) -> int:
    value = opts.get("draft_num_predict")
    return DRAFT_NUM_PREDICT_DEFAULT if value is None else max(0, int(value))


def settings(opts: Mapping[str, Any], draft: GGUFInfo | None, *, embedding: bool = False) -> Speculation:
    """The speculative decoding a generation runner starts with (none for embedding and rerank runners)."""
    if embedding:
        return Speculation()
    types: list[str] = []
    path: str | None = None
    n_max = 0
    if draft is not None:
        n_max = draft_num_predict(opts)
        if n_max > 0:
            types.append(draft_type(draft))
            path = str(draft.path)
    ngram = ngram_type()
    if ngram:
        types.append(ngram)
    return Speculation(types=types, draft=path, draft_max=n_max if path else 0)


def vocab_mismatch(target: GGUFInfo, draft: GGUFInfo) -> str | None:
    """Why ``draft`` cannot draft for ``target`` (a sentence for an HTTP 400), or None when the vocabularies agree.

    Drafters that read the target's hidden states (EAGLE-3, DFlash) may map a smaller vocabulary of their own, so
    only stand-alone drafts and MTP heads are held to the rule."""
    if draft_type(draft) not in ("draft-simple", "draft-mtp"):
        return None
    t_kind, d_kind = target.metadata.get("tokenizer.ggml.model"), draft.metadata.get("tokenizer.ggml.model")
    if t_kind != d_kind:
        return f"the draft model's tokenizer type is {d_kind!r}, the model's is {t_kind!r}"
    for key, what in (("tokenizer.ggml.bos_token_id", "BOS token"), ("tokenizer.ggml.eos_token_id", "EOS token"),
                      ("tokenizer.ggml.add_bos_token", "add-BOS setting"),
                      ("tokenizer.ggml.add_eos_token", "add-EOS setting")):
        if target.metadata.get(key) != draft.metadata.get(key):
            return f"the draft model's {what} ({draft.metadata.get(key)!r}) differs from the model's " \
                   f"({target.metadata.get(key)!r})"
    t_tokens, d_tokens = target.get("tokenizer.ggml.tokens"), draft.get("tokenizer.ggml.tokens")
    if not isinstance(t_tokens, list) or not isinstance(d_tokens, list):
        return "the draft model or the model has no vocabulary (tokenizer.ggml.tokens)"
    if abs(len(t_tokens) - len(d_tokens)) > VOCAB_MAX_SIZE_DIFFERENCE:
        return f"the draft model has {len(d_tokens)} tokens and the model {len(t_tokens)}"
    for i in range(VOCAB_CHECK_START_ID, min(len(t_tokens), len(d_tokens))):
        if t_tokens[i] != d_tokens[i]:
            return f"token {i} is {d_tokens[i]!r} in the draft model and {t_tokens[i]!r} in the model"
    return None
