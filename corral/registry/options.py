"""The knobs of a transfer, defaulting to Ollama's values; tests shrink them to keep faults fast."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1000 * 1000  # Ollama sizes parts in decimal megabytes


@dataclass(frozen=True)
class TransferOptions:
    """Part sizes, concurrency, retries and timeouts of a pull or push."""

    parts: int = 16  # a blob is split into this many ranged parts (before clamping), fetched at most this many at once
    min_part: int = 100 * MB
    max_part: int = 1000 * MB
    part_retries: int = 6  # failed attempts per part (reset whenever an attempt made progress)
    retry_base: float = 1.0  # seconds before the first retry of a part; doubles each time
    retry_max: float = 30.0
    stall_timeout: float = 30.0  # a part that receives nothing for this long is dropped and re-requested
    max_stalls: int = 10  # stalls per part before giving up, so a registry that never sends cannot hang a pull
    api_attempts: int = 3  # manifest, HEAD, upload calls: attempts on 5xx or a dropped connection
    api_retry_base: float = 0.5
    connect_timeout: float = 15.0
    progress_interval: float = 0.06  # Ollama reports a blob's progress every 60 ms, never per chunk
    state_interval: float = 0.5  # how often part progress is written next to a partial download

    def part_size(self, total: int) -> int:
        """``total/parts`` clamped to ``[min_part, max_part]``: small blobs come in one part, huge ones in 1 GB ones."""
        return max(self.min_part, min(self.max_part, total // max(self.parts, 1)))

    def backoff(self, attempt: int, base: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): base, 2*base, 4*base, ... capped."""
        start = self.retry_base if base is None else base
        return float(min(self.retry_max, start * (2 ** max(attempt - 1, 0))))


DEFAULT_OPTIONS = TransferOptions()
