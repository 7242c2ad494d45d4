"""Human-readable numbers, sizes, times and plain tables, written to match Ollama's CLI output byte for byte.

Ollama's output is read by people and by scripts (``ollama list | awk``), so the exact rules matter: decimal units,
truncation rather than rounding where Go truncates, Go's ``time.Duration`` and ``%g`` spellings, and the column
layout of the ``tablewriter`` package as Ollama configures it.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

_KB = 1000
_MB = _KB * 1000
_GB = _MB * 1000
_TB = _GB * 1000


def human_bytes(n: int) -> str:
    """``format.HumanBytes``: decimal units; whole numbers from 10 up, one decimal below 10 unless whole."""
    for limit, name in ((_TB, "TB"), (_GB, "GB"), (_MB, "MB"), (_KB, "KB")):
        if n >= limit:
            value, unit = n / limit, name
            break
    else:
        return f"{n} B"
    if value >= 10 or value == math.trunc(value):
        return f"{int(value)} {unit}"
    return f"{value:.1f} {unit}"


def _go_round(x: float) -> int:
    """Go's ``math.Round``: halves away from zero (Python's ``round`` goes to even)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def _trunc_div(a: int, b: int) -> int:
    """Go's integer division, which truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def human_duration(seconds: float) -> str:
    """``format.humanDuration``: "Less than a second", "About a minute", "3 hours", "2 weeks", ..."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _go_round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def parse_time(value: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp as the server sends it; Go's zero time and garbage read as ``None``."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Go writes up to nine fractional digits; Python keeps six.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{(digits + '000000')[:6]}{rest}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.year <= 1:
        return None
    return parsed


def human_time(when: datetime | None, zero: str, now: datetime | None = None) -> str:
    """``format.HumanTime``: "2 hours ago", "4 minutes from now", "Forever" (over 20 years ahead), or ``zero``."""
    if when is None:
        return zero
    now = now or datetime.now(UTC)
    delta = (now - when).total_seconds()
    if _trunc_div(_trunc_div(int(delta / 3600), 24), 365) < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def _frac_digits(value: int, prec: int) -> tuple[str, int]:
    """The fraction of ``value / 10**prec`` without trailing zeros (Go's ``fmtFrac``) and the integer part."""
    digits = ""
    printed = False
    for _ in range(prec):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        value //= 10
    return ("." + digits if printed else ""), value


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String``: ``1.5s``, ``2m3.004s``, ``1h0m0s``, ``350.2ms``, ``12µs``, ``0s``."""
    neg = nanoseconds < 0
    u = -nanoseconds if neg else nanoseconds
    if u < 1_000_000_000:
        if u == 0:
            return "0s"
        if u < 1_000:
            out = f"{u}ns"
        elif u < 1_000_000:
            frac, whole = _frac_digits(u, 3)
            out = f"{whole}{frac}µs"
        else:
            frac, whole = _frac_digits(u, 6)
            out = f"{whole}{frac}ms"
    else:
        frac, secs = _frac_digits(u, 9)
        out = f"{secs % 60}{frac}s"
        minutes = secs // 60
        if minutes > 0:
            out = f"{minutes % 60}m{out}"
            hours = minutes // 60
            if hours > 0:
                out = f"{hours}h{out}"
    return "-" + out if neg else out


def go_g(value: float) -> str:
    """Go's ``%g``/``%v`` for a float64: shortest digits, exponent form below 1e-4 and from 1e6 (``1e+06``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent  # position of the decimal point relative to the first digit
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:  # strconv's 'g' with shortest precision decides with precision 6
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{prefix}{digits}{'0' * (point - len(digits))}"
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def display_width(text: str) -> int:
    """Terminal cells a string takes (East Asian wide characters count two), as ``go-runewidth`` counts."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def wrap_words(words: Sequence[str], limit: int, penalty: int = 100_000) -> list[list[str]]:
    """Minimum-raggedness line breaking (``kr/text.WrapWords``), which ``tablewriter`` uses to wrap cells."""
    n = len(words)
    if n == 0:
        return []
    widths = [display_width(w) for w in words]
    length = [[0] * n for _ in range(n)]
    for i in range(n):
        length[i][i] = widths[i]
        for j in range(i + 1, n):
            length[i][j] = length[i][j - 1] + 1 + widths[j]
    cost = [2**31 - 1] * n
    breaks = [0] * n
    for i in range(n - 1, -1, -1):
        if length[i][n - 1] <= limit:
            cost[i], breaks[i] = 0, n
            continue
        breaks[i] = i + 1  # a single word wider than the limit stands alone
        for j in range(i + 1, n):
            d = limit - length[i][j - 1]
            c = d * d + cost[j]
            if length[i][j - 1] > limit:
                c += penalty
            if c < cost[i]:
                cost[i], breaks[i] = c, j
    lines: list[list[str]] = []
    i = 0
    while i < n:
        lines.append(list(words[i : breaks[i]]))
        i = breaks[i]
    return lines


def _wrap_cell(text: str, max_width: int) -> list[str]:
    """One cell's lines: each paragraph reflowed into one and wrapped at ``max_width`` (tablewriter's autowrap)."""
    raw = text.split("\n")
    width = min(max(display_width(line) for line in raw), max_width)
    words = " ".join(raw).replace("\n", " ").split(" ")
    width = max([width, *(display_width(w) for w in words)])
    return [" ".join(line) for line in wrap_words(words, width)] or [""]


def render_table(
    rows: Sequence[Sequence[str]],
    header: Sequence[str] | None = None,
    *,
    padding: str = "    ",
    max_width: int = 30,
) -> str:
    """Rows laid out as Ollama's borderless ``tablewriter`` does: left aligned, cells padded to the column width,
    each followed by ``padding`` (the header's last cell by a single space), long cells word-wrapped."""
    widths: dict[int, int] = {}
    cells: list[list[list[str]]] = []
    all_rows = ([list(header)] if header is not None else []) + [list(r) for r in rows]
    for row in all_rows:
        wrapped = [_wrap_cell(cell, max_width) for cell in row]
        for col, lines in enumerate(wrapped):
            widths[col] = max(widths.get(col, 0), *(display_width(line) for line in lines))
        cells.append(wrapped)
    out: list[str] = []
    for index, row_cells in enumerate(cells):
        is_header = header is not None and index == 0
        height = max((len(c) for c in row_cells), default=1)
        for line_no in range(height):
            parts: list[str] = []
            for col, lines in enumerate(row_cells):
                # tablewriter fills a shorter cell of a multi-line row with two spaces, even in a zero-width column
                text = lines[line_no] if line_no < len(lines) else "  "
                pad = " " * max(0, widths[col] - display_width(text))
                sep = " " if is_header and col == len(row_cells) - 1 else padding
                parts.append(text + pad + sep)
            out.append("".join(parts))
    return "".join(line + "\n" for line in out)
