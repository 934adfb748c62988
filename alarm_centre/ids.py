"""Row ids as clients write them: one rule for every alert and incident id in a path, a query or a cursor.

Every id the API reads goes through :func:`row_id` (the number rule is :func:`devices.numbers.whole_number`:
ASCII digits only, within a signed 64-bit integer), so ``"³"``, ``"٣"``, ``"+7"`` or
``99999999999999999999`` name no row instead of raising a 500 in the driver.
"""

from __future__ import annotations

from devices.numbers import MAX_INT64, whole_number

#: The largest id a database column holds (signed 64-bit).
MAX_ROW_ID = MAX_INT64

__all__ = ["MAX_ROW_ID", "row_id"]


def row_id(text: str) -> int | None:
    """A database row id (1 .. 2**63-1) from a client's text, or None when it cannot name a row."""
    return whole_number(str(text), low=1)
