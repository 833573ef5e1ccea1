"""The one parser for numbers that arrive as text: Range, Content-Range, Content-Length, `n`, ...

`int()` accepts what HTTP does not (signs, spaces, `_`, Unicode digits such as "٣") and raises
ValueError past 4,300 digits, which surfaced as 500s. Here a number is 1-19 ASCII digits and at most
`maximum`; anything else is None, and each caller raises its own catalogue error (416 or 400).
"""

from __future__ import annotations

MAX_DIGITS = 19
MAX_VALUE = 2**63 - 1  # fits a signed 64-bit column and every size a storage driver reports


def parse_count(text: str | None, *, maximum: int = MAX_VALUE) -> int | None:
    """`text` as a non-negative integer, or None if it is not 1-19 ASCII digits or exceeds `maximum`."""
    if text is None or not 0 < len(text) <= MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None
