"""Tokenizer metadata for GGUF, read from a Hugging Face ``tokenizer.json`` without the ``tokenizers`` library.

llama.cpp's converter builds the token list through ``transformers.AutoTokenizer``; every fact it uses is in
``tokenizer.json`` itself (the model vocabulary plus the added tokens), so reading the JSON gives the same list
without a heavy dependency. Special token ids, ``add_bos``/``add_eos``, merges and the chat template come from the
``gguf`` package's own ``SpecialVocab`` (the code llama.cpp's converter runs), fed from a private copy of the
checked files so it never follows a path out of the model directory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from corral.convert.source import ModelDirectory
from corral.errors import ConvertError

MAX_VOCAB = 4 * 1024 * 1024
_PHANTOM_SPACE = "\u2581"

# The files SpecialVocab reads (it also globs additional_chat_templates/, which is deliberately not staged).
_SPECIAL_VOCAB_FILES = ["tokenizer.json", "tokenizer_config.json", "config.json", "chat_template.jinja",
                        "chat_template.json", "merges.txt"]

# Pre-tokenizer regexes llama.cpp knows by name (llama.cpp picks the name by hashing a tokenization; matching the
# declared regex gives the same answer for these families without running a tokenizer).
_LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


@dataclass
class Vocab:
    """The token list and its types, as they go into ``tokenizer.ggml.*``."""

    model: str  # tokenizer.ggml.model: "bert" (WordPiece) or "gpt2" (byte-level BPE)
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    toktypes: list[int]
    token_type_count: int | None = None  # BERT's segment embeddings
    special: gguf.SpecialVocab | None = field(default=None, repr=False)

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.toktypes)
        if self.token_type_count is not None:
            writer.add_token_type_count(self.token_type_count)
        if self.special is not None:
            self.special.add_to_gguf(writer, quiet=True)


def _looks_special(token: str) -> bool:
    """llama.cpp's ``does_token_look_special``: added tokens spelled like control tokens are control tokens."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
        or (token.startswith("<start_of_") and token.endswith(">"))
        or (token.startswith("<end_of_") and token.endswith(">"))
    )


def _model_section(tokenizer: dict[str, Any]) -> dict[str, Any]:
    model = tokenizer.get("model")
    if not isinstance(model, dict):
        raise ConvertError("tokenizer.json: missing model section")
    return model


def tokenizer_kind(tokenizer: dict[str, Any]) -> str:
    """The tokenizer.json model type ("BPE", "WordPiece", "Unigram", ...)."""
    kind = _model_section(tokenizer).get("type")
    if not isinstance(kind, str):
        # Old tokenizer.json files omit the type; a merges list means BPE, "##" continuation means WordPiece.
        model = _model_section(tokenizer)
        if "merges" in model:
            return "BPE"
        if "continuing_subword_prefix" in model:
            return "WordPiece"
        raise ConvertError("tokenizer.json: unknown tokenizer model type")
    return kind


def base_tokens(tokenizer: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """llama.cpp's ``get_vocab_base``: tokens by id, with added tokens typed CONTROL or USER_DEFINED."""
    if not 0 < vocab_size <= MAX_VOCAB:
        raise ConvertError(f"vocabulary size {vocab_size} is out of range")
    vocab = _model_section(tokenizer).get("vocab")
    if not isinstance(vocab, dict):
        raise ConvertError("tokenizer.json: the model vocabulary must be a token -> id map")
    by_id: dict[int, str] = {}
    for token, token_id in vocab.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise ConvertError("tokenizer.json: token ids must be non-negative integers")
        if token_id < vocab_size:
            by_id[token_id] = token
    added_special: dict[int, bool] = {}
    added = tokenizer.get("added_tokens") or []
    if not isinstance(added, list):
        raise ConvertError("tokenizer.json: added_tokens must be a list")
    for entry in added:
        if not isinstance(entry, dict):
            raise ConvertError("tokenizer.json: malformed added token")
        token_id, content = entry.get("id"), entry.get("content")
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0 or not isinstance(content, str):
            raise ConvertError("tokenizer.json: malformed added token")
        if token_id < vocab_size:
            by_id[token_id] = content
            added_special[token_id] = bool(entry.get("special"))

    tokens: list[str] = []
    toktypes: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
        elif i in added_special:
            if added_special[i] or _looks_special(token):
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace(_PHANTOM_SPACE, " ")  # llama.cpp expects user-defined tokens pre-normalized
                toktypes.append(gguf.TokenType.USER_DEFINED)
            tokens.append(token)
        else:
            tokens.append(token)
            toktypes.append(gguf.TokenType.NORMAL)
    return tokens, toktypes


def _pre_tokenizer_name(tokenizer: dict[str, Any]) -> str:
    """``tokenizer.ggml.pre`` from the declared pre-tokenizer (see ``_LLAMA3_REGEX``)."""
    pre = tokenizer.get("pre_tokenizer")
    steps = pre.get("pretokenizers", [pre]) if isinstance(pre, dict) else []
    regexes: list[str] = []
    byte_level_regex = False
    individual_digits = False
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        kind = step.get("type")
        if kind == "Split" and isinstance(step.get("pattern"), dict):
            regex = step["pattern"].get("Regex")
            if isinstance(regex, str):
                regexes.append(regex)
        elif kind == "ByteLevel":
            byte_level_regex = step.get("use_regex", True) is not False
        elif kind == "Digits":
            individual_digits = step.get("individual_digits") is True
    if regexes == [_LLAMA3_REGEX]:
        return "llama-bpe"
    if not regexes and byte_level_regex:
        return "smollm" if individual_digits else "gpt-2"
    return "default"


def _special_vocab(directory: ModelDirectory, n_vocab: int, load_merges: bool) -> gguf.SpecialVocab:
    """Run gguf's SpecialVocab on checked copies of the tokenizer files (it opens paths itself)."""
    with tempfile.TemporaryDirectory(prefix="corral-vocab-") as tmp:
        for name, data in directory.iter_existing(_SPECIAL_VOCAB_FILES):
            (Path(tmp) / name).write_bytes(data)
        try:
            return gguf.SpecialVocab(tmp, load_merges=load_merges, n_vocab=n_vocab)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, UnicodeDecodeError, RecursionError) as exc:
            raise ConvertError(f"malformed tokenizer files: {str(exc)[:200]}") from None


def load_tokenizer(directory: ModelDirectory) -> dict[str, Any]:
    tokenizer = directory.read_json_object("tokenizer.json")
    if tokenizer is None:
        raise ConvertError("tokenizer.json is missing from the model directory (tokenizer.model is not supported)")
    return tokenizer


def bert_vocab(directory: ModelDirectory, tokenizer: dict[str, Any], vocab_size: int, type_vocab_size: int) -> Vocab:
    """WordPiece vocabulary in llama.cpp's "phantom space" form: ``##x`` -> ``x``, a word start ``x`` -> ``▁x``."""
    if tokenizer_kind(tokenizer) != "WordPiece":
        raise ConvertError("a BERT model needs a WordPiece tokenizer.json")
    tokens, toktypes = base_tokens(tokenizer, vocab_size)
    phantom = [
        tok if kind == gguf.TokenType.CONTROL else tok[2:] if tok.startswith("##") else _PHANTOM_SPACE + tok
        for tok, kind in zip(tokens, toktypes, strict=True)
    ]
    special = _special_vocab(directory, len(phantom), load_merges=False)
    return Vocab("bert", "default", phantom, toktypes, token_type_count=type_vocab_size, special=special)


def gpt2_vocab(directory: ModelDirectory, tokenizer: dict[str, Any], vocab_size: int) -> Vocab:
    """Byte-level BPE vocabulary with merges (llama.cpp's ``_set_vocab_gpt2``)."""
    if tokenizer_kind(tokenizer) != "BPE":
        raise ConvertError("only byte-level BPE tokenizers (tokenizer.json) are supported for this model")
    model = _model_section(tokenizer)
    if model.get("byte_fallback") is True:
        raise ConvertError("SentencePiece-style BPE tokenizers (byte_fallback) are not supported yet")
    tokens, toktypes = base_tokens(tokenizer, vocab_size)
    special = _special_vocab(directory, len(tokens), load_merges=True)
    if not special.merges:
        raise ConvertError("tokenizer.json has no BPE merges")
    return Vocab("gpt2", _pre_tokenizer_name(tokenizer), tokens, toktypes, special=special)

