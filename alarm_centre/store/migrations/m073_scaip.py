"""SCAIP units in the registry: the caller id (``cid``) a unit reports as (unique, like a unit's other
addresses), how it wants its answers, and the write-only password of its SIP identity (digest)."""

from __future__ import annotations

SQL = """
ALTER TABLE devices ADD COLUMN scaip_cid TEXT;
ALTER TABLE devices ADD COLUMN scaip_answer TEXT;
ALTER TABLE devices ADD COLUMN scaip_password TEXT;
CREATE UNIQUE INDEX devices_scaip_cid ON devices(scaip_cid);
"""

MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (73, SQL),
]
