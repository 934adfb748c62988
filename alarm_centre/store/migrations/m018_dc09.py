"""SIA DC-09 units in the registry: the account a unit reports as (unique, like a unit's other
addresses) and its write-only AES key."""

from __future__ import annotations

SQL = """
ALTER TABLE devices ADD COLUMN dc09_account TEXT;
ALTER TABLE devices ADD COLUMN dc09_key TEXT;
CREATE UNIQUE INDEX devices_dc09_account ON devices(dc09_account);
"""

MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (18, SQL),
]
