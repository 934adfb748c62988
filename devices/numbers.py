"""Whole numbers as text from outside (HTTP paths and queries, modem answers, command lines): one rule.

``str.isdigit`` and ``int`` accept far more than a protocol means by a number: ``"³"`` is a digit to
``isdigit`` (and ``int`` refuses it), ``int`` takes ``"٣"``, ``" 7 "``, ``"+7"`` and ``"1_0"``, and a
number past a signed 64-bit integer cannot reach SQLite or PostgreSQL at all.
"""

from __future__ import annotations

#: The largest integer a database column holds (signed 64-bit).
MAX_INT64 = 2**63 - 1
_ASCII_DIGITS = frozenset("0123456789")


def whole_number(text: str, *, low: int = 0, high: int = MAX_INT64) -> int | None:
    """``text`` as an integer when it is ASCII digits only and within ``low``..``high``; else None."""
    if not text or len(text) > 19 or not _ASCII_DIGITS.issuperset(text):
        return None
    value = int(text)
    return value if low <= value <= high else None
