"""Row ids as clients write them: one rule for every alert, incident and priority number in a path or query.

``str.isdigit`` and ``int`` accept far more than the API means by a number: ``"³"`` is a digit to
``isdigit`` (and ``int`` refuses it), ``int`` takes ``"٣"``, ``" 7 "``, ``"+7"`` and ``"1_0"``, and a
number past a signed 64-bit integer cannot reach SQLite or PostgreSQL at all. Every id the API reads goes
through :func:`row_id` first.
"""

from __future__ import annotations

#: The largest id a database column holds (signed 64-bit).
MAX_ROW_ID = 2**63 - 1
_ASCII_DIGITS = frozenset("0123456789")


def whole_number(text: str, *, low: int = 0, high: int = MAX_ROW_ID) -> int | None:
    """``text`` as an integer when it is ASCII digits only and within ``low``..``high``; else None."""
    if not text or len(text) > 19 or not _ASCII_DIGITS.issuperset(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def row_id(text: str) -> int | None:
    """A database row id (1 .. 2**63-1) from a client's text, or None when it cannot name a row."""
    return whole_number(str(text), low=1)
