"""Numbers for people, written as Ollama's ``format`` package writes them (shared by ``/api/show`` and the CLI)."""

from __future__ import annotations

import math


def human_number(n: int) -> str:
    """``format.HumanNumber`` (parameter counts): 134515008 -> "134.52M", 8030261248 -> "8.0B", 7000000000 -> "7B",
    500000 -> "500K"."""
    if n >= 1_000_000_000:
        value = n / 1_000_000_000
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= 1_000_000:
        value = n / 1_000_000
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)
