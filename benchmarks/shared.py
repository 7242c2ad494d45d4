"""What the benchmark harnesses share: where results go, the decode prompt, filler prose cut to token counts, the
median, and N clients started together."""

from __future__ import annotations

import random
import statistics
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.clients import TIMEOUT, Stream

RESULTS = Path(__file__).resolve().parent / "results"
DECODE_PROMPT = "Count from 1 to 300, separated by commas."


def median(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


class Texts:
    """Deterministic filler prose, cut to exact token counts with the engine's own tokenizer."""

    WORDS = ("river mountain quiet engine library window garden market winter summer letter bridge village "
             "teacher student history science music painting harbor island forest desert morning evening "
             "kitchen journey doctor farmer sailor castle candle silver copper paper stone cloud storm "
             "answer question number story lesson machine signal orange yellow purple simple careful "
             "gentle ancient modern narrow distant")

    def __init__(self, engine_url: str) -> None:
        rng = random.Random(1234)
        sentences = []
        for i in range(700):
            vocab = self.WORDS.split()
            words = [rng.choice(vocab) for _ in range(rng.randint(6, 14))]
            sentences.append(f"{words[0].capitalize()} {' '.join(words[1:])} ({i}).")
        self._http = httpx.Client(base_url=engine_url, timeout=TIMEOUT)
        self._tokens: list[int] = self._http.post("/tokenize", json={"content": " ".join(sentences)}).json()["tokens"]

    def take(self, n: int, offset: int = 0) -> str:
        """About ``n`` tokens of prose starting ``offset`` tokens in."""
        offset %= max(1, len(self._tokens) - n)
        toks = self._tokens[offset:offset + n]
        return str(self._http.post("/detokenize", json={"tokens": toks}).json()["content"]).strip()

    def count(self, text: str) -> int:
        return len(self._http.post("/tokenize", json={"content": text}).json()["tokens"])


def concurrent(n: int, one: Callable[[int, httpx.Client], Stream], base_url: str, ping: str) -> dict[str, float]:
    """``n`` clients (threads, one connection each) start together; aggregate generated tokens per wall second."""
    barrier = threading.Barrier(n)
    results: list[Stream | BaseException] = [RuntimeError("not run")] * n

    def worker(k: int) -> None:
        with httpx.Client(base_url=base_url, timeout=TIMEOUT) as http:
            http.get(ping)  # open the connection before the clock starts
            barrier.wait()
            try:
                results[k] = one(k, http)
            except BaseException as exc:
                results[k] = exc

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    streams = [r for r in results if isinstance(r, Stream)]
    if len(streams) != n:
        raise RuntimeError(f"concurrent clients failed: {[r for r in results if not isinstance(r, Stream)]}")
    wall = max(s.done for s in streams) - min(s.sent for s in streams)
    tokens = sum(s.eval_count for s in streams)
    return {"tok_s": tokens / wall, "tokens": tokens, "wall_s": wall}
