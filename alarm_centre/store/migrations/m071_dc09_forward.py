"""SIA DC-09 forwarding to an upstream monitoring centre: the account the centre knows a resident by
(unique, like a unit's ``dc09_account``), and the durable queue of frames still to be forwarded.

``dc09_forwards`` holds one row per alert and kind (``alarm``, ``restore``), written in the transaction
that raised or resolved the alert and sent after commit. Its ``sequence`` is fixed when the row is
written, so every resend (after a timeout, a NAK, a restart) carries the same number. A sender claims a
row by pushing ``next_attempt_at`` out by a lease (``claimed_by`` names the node): a crash means a retry,
never a loss.
"""

from __future__ import annotations

SQL = """
ALTER TABLE residents ADD COLUMN dc09_account TEXT;
CREATE UNIQUE INDEX residents_dc09_account ON residents(dc09_account);
CREATE TABLE dc09_forwards (
    id {pk},
    alert_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    event_type TEXT NOT NULL,
    device_id TEXT NOT NULL,
    account TEXT,
    sequence INTEGER NOT NULL DEFAULT 0,
    created_at {real} NOT NULL,
    next_attempt_at {real} NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    done_at {real},
    result TEXT,
    last_error TEXT
);
CREATE UNIQUE INDEX dc09_forwards_once ON dc09_forwards(alert_id, kind);
CREATE INDEX dc09_forwards_due ON dc09_forwards(done_at, next_attempt_at);
"""

MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (71, SQL),
]
