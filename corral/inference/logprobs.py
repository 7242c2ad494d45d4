"""Token log probabilities: asked of the engine, read from its events, and written in each API family's shape.

The engine computes them from the model's raw distribution before sampling (llama-server's ``n_probs`` on
``/completion``, ``logprobs``/``top_logprobs`` on ``/v1/chat/completions``), as Ollama's runner does from the
logits, so under greedy decoding the chosen token is the top one. Internally every entry has Ollama's shape
(``api.Logprob``): ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}``, the
alternatives only when ``top_logprobs`` > 0.

A token may end inside a UTF-8 character (byte-level vocabularies split emoji and CJK); the chosen tokens' text is
decoded incrementally from their bytes, so a token that ends mid-character has the text "" and the next one
carries the whole character: the tokens' texts always concatenate to the generated text. ``bytes`` keeps each
token's own bytes.
"""

from __future__ import annotations

import codecs
from typing import Any

MAX_TOP = 20


def completion_fields(top: int) -> dict[str, Any]:
    """Fields for ``/completion``: the engine returns the chosen token and its ``n_probs`` best alternatives (at
    least one: see :func:`chat_fields`)."""
    return {"n_probs": max(top, 1)}


def chat_fields(top: int) -> dict[str, Any]:
    """Fields for ``/v1/chat/completions``; at least one alternative, or the engine sends no logprobs at all (and
    the chosen token's own entry among the alternatives is how held-back tokens get their text back)."""
    return {"logprobs": True, "top_logprobs": max(top, 1)}


class Reader:
    """Turns the engine's per-token entries into Ollama's.

    While the engine holds text back (it might start a stop string), the tokens it holds come with no text, and the
    token that releases them carries all of it; Reader holds those entries too and gives each its own text again
    (from its entry among the alternatives, which names the same token id), so every token keeps its own text. Held
    tokens that are never released (a stop string's, which is cut from the answer, or the end-of-generation token,
    which has no text) are dropped, as Ollama drops their logprobs.
    """

    def __init__(self, top: int) -> None:
        self.top = top
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held: list[dict[str, Any]] = []

    def completion(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """``/completion``'s ``completion_probabilities`` for one streamed event."""
        return self._take(event.get("completion_probabilities") or ())

    def chat(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        """``/v1/chat/completions``: a streamed choice's ``logprobs.content``."""
        return self._take((choice.get("logprobs") or {}).get("content") or ())

    def _take(self, entries: Any) -> list[dict[str, Any]]:
        out = []
        for e in entries:
            if not isinstance(e, dict):
                continue
            raw = _bytes(e)
            if raw == b"":
                self._held.append(e)
                continue
            if self._held:
                owns = [_own(h) for h in self._held]
                prefix = b"".join(o or b"" for o in owns)
                if all(owns) and raw is not None and raw.startswith(prefix):
                    out += [self._entry(h, o) for h, o in zip(self._held, owns, strict=True)]
                    raw = raw[len(prefix):]
                else:  # the release keeps the whole text, so the texts still join up
                    out += [self._entry(h, b"") for h in self._held]
                self._held = []
            out.append(self._entry(e, raw))
        return out

    def _entry(self, e: dict[str, Any], raw: bytes | None) -> dict[str, Any]:
        token = self._decoder.decode(raw) if raw is not None else str(e.get("token", ""))
        out: dict[str, Any] = {"token": token, "logprob": float(e.get("logprob", 0.0)),
                               "bytes": list(raw) if raw is not None else list(token.encode())}
        if self.top > 0:
            out["top_logprobs"] = [_alternative(a) for a in (e.get("top_logprobs") or [])[:self.top]
                                   if isinstance(a, dict)]
        return out


def _own(e: dict[str, Any]) -> bytes | None:
    """A token's own bytes, from its entry among the alternatives (the same id), when it is there."""
    for a in e.get("top_logprobs") or ():
        if isinstance(a, dict) and a.get("id") == e.get("id") and e.get("id") is not None:
            return _bytes(a)
    return None


def _bytes(e: dict[str, Any]) -> bytes | None:
    value = e.get("bytes")
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    return None


def _alternative(a: dict[str, Any]) -> dict[str, Any]:
    raw = _bytes(a)
    token = raw.decode("utf-8", errors="replace") if raw is not None else str(a.get("token", ""))
    return {"token": token, "logprob": float(a.get("logprob", 0.0)),
            "bytes": list(raw) if raw is not None else list(token.encode())}


# -- the API families' shapes ------------------------------------------------------------------------------------


def openai_content(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's chat ``logprobs.content`` (and the Responses API's ``logprobs``): ``top_logprobs`` is always a
    list."""
    return [{"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"],
             "top_logprobs": e.get("top_logprobs", [])} for e in entries]


def openai_legacy(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object; ``text_offset`` counts characters of the generated text from
    ``offset`` (where the earlier chunks' tokens ended)."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    top = [{a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in entries] \
        if entries and "top_logprobs" in entries[0] else None
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": top, "text_offset": offsets}
