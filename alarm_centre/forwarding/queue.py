"""The forwarding queue's one home: every statement on ``dc09_forwards`` (migration 71).

A row is added in the transaction that raised (``alarm``) or resolved (``restore``) its alert, at most
one of each per alert, with its DC-09 sequence number fixed there and then. The forwarder claims due rows
with a lease (pushing ``next_attempt_at`` out, naming its node in ``claimed_by``), so a crash means a
later retry with the same sequence, never a loss; a node that restarts takes its own leases back at once.
A restore is never claimed while its alarm is still pending (the centre hears them in order). The rows
are never closed by a resolve: a forward goes out whatever happens to the alert afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import Source
from alarm_centre.store.tx import Database, PostCommit, Row, Tx, log_action

#: Seconds before a forward no path answered is tried again, by attempt (the last repeats).
RETRY_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
#: DC-09 sequence numbers run 0001-9999.
SEQUENCES = 9999


class ForwardKind(StrEnum):
    """What a queued forward tells the centre."""

    ALARM = "alarm"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class ForwardItem:
    """One claimed forward."""

    id: int
    alert_id: int
    kind: ForwardKind
    event_type: str
    device_id: str
    account: str | None
    sequence: int
    attempts: int


#: One timeline entry to write: when, what, and its detail.
TimelineEntry = tuple[float, AuditAction, dict[str, Any]]


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return RETRY_S[min(max(attempts, 1), len(RETRY_S)) - 1]


async def add(
    tx: Tx,
    post: PostCommit,
    *,
    alert_id: int,
    kind: ForwardKind,
    event_type: str,
    device_id: str,
    account: str | None,
    now: float,
) -> bool:
    """Queue one forward in the caller's transaction (at most one per alert and kind); True when added.
    Its sequence is fixed here, from its row id, so every send of it carries the same number."""
    added = await tx.execute(
        "INSERT INTO dc09_forwards (alert_id, kind, event_type, device_id, account, created_at, "
        "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id, kind) DO NOTHING",
        alert_id,
        kind.value,
        event_type,
        device_id,
        account,
        now,
        now,
    )
    if not added:
        return False
    await tx.execute(
        f"UPDATE dc09_forwards SET sequence = (id % {SEQUENCES}) + 1 WHERE alert_id = ? AND kind = ?",
        alert_id,
        kind.value,
    )
    post.outbox = True  # wakes the forwarder (and the outbox) on every node once this commits
    return True


@dataclass(frozen=True, slots=True)
class Forward:
    """One forward to queue (:func:`add`'s arguments)."""

    alert_id: int
    kind: ForwardKind
    event_type: str
    device_id: str
    account: str | None


async def add_many(tx: Tx, post: PostCommit, forwards: Sequence[Forward], *, now: float) -> None:
    """Queue forwards as :func:`add` does each, in order, in two statements (PostgreSQL arrays: the
    set-based ingest)."""
    if not forwards:
        return
    rows = await tx.fetchall(
        "INSERT INTO dc09_forwards (alert_id, kind, event_type, device_id, account, created_at, "
        "next_attempt_at) SELECT f.alert_id, f.kind, f.event_type, f.device_id, f.account, ?, ? "
        "FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY "
        "AS f(alert_id, kind, event_type, device_id, account, n) ORDER BY f.n "
        "ON CONFLICT (alert_id, kind) DO NOTHING RETURNING id",
        now,
        now,
        [f.alert_id for f in forwards],
        [f.kind.value for f in forwards],
        [f.event_type for f in forwards],
        [f.device_id for f in forwards],
        [f.account for f in forwards],
    )
    if not rows:
        return
    await tx.execute(
        f"UPDATE dc09_forwards SET sequence = (id % {SEQUENCES}) + 1 WHERE id = ANY(?::bigint[])",
        [int(r["id"]) for r in rows],
    )
    post.outbox = True


async def resident_accounts(tx: Tx, resident_ids: Sequence[str]) -> dict[str, str]:
    """:func:`resident_account` of several residents, in one statement: account by resident (those
    with one)."""
    if not resident_ids:
        return {}
    rows = await tx.fetchall(
        "SELECT id, dc09_account FROM residents WHERE id = ANY(?::text[]) AND dc09_account IS NOT NULL",
        list(resident_ids),
    )
    return {str(r["id"]): str(r["dc09_account"]) for r in rows if r["dc09_account"]}


async def has_alarm(tx: Tx, alert_id: int) -> bool:
    """Whether the alert's raise was queued for forwarding (only then is its restore)."""
    row = await tx.fetchone(
        "SELECT id FROM dc09_forwards WHERE alert_id = ? AND kind = ?", alert_id, ForwardKind.ALARM.value
    )
    return row is not None


async def resident_account(tx: Tx, resident_id: str | None) -> str | None:
    """The account the centre knows a resident by, or None."""
    if resident_id is None:
        return None
    row = await tx.fetchone("SELECT dc09_account FROM residents WHERE id = ?", resident_id)
    return None if row is None or not row["dc09_account"] else str(row["dc09_account"])


async def alert_outcome(tx: Tx, alert_id: int) -> str | None:
    """The outcome an alert was resolved with (read inside the resolving transaction)."""
    row = await tx.fetchone("SELECT outcome FROM alerts WHERE id = ?", alert_id)
    return None if row is None or row["outcome"] is None else str(row["outcome"])


class ForwardQueue:
    """Claiming and closing forwards (``dc09_forwards``) for one node."""

    def __init__(self, store: Database, node: str) -> None:
        self._store = store
        self._node = node

    async def release_own(self, now: float) -> int:
        """Make this node's leased rows due now (it restarted: nobody is sending them)."""

        async def work(tx: Tx, post: PostCommit) -> int:
            return await tx.execute(
                "UPDATE dc09_forwards SET next_attempt_at = ?, claimed_by = NULL "
                "WHERE done_at IS NULL AND claimed_by = ?",
                now,
                self._node,
            )

        released: int = await self._store.transaction(work)
        return released

    async def claim(self, *, now: float, lease_s: float, limit: int = 10) -> list[ForwardItem]:
        """Due forwards in queue order, leased to this node for ``lease_s``."""

        async def work(tx: Tx, post: PostCommit) -> list[ForwardItem]:
            rows = await tx.fetchall(
                "SELECT * FROM dc09_forwards f WHERE f.done_at IS NULL AND f.next_attempt_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM dc09_forwards e WHERE e.alert_id = f.alert_id "
                "AND e.id < f.id AND e.done_at IS NULL) ORDER BY f.id LIMIT ?" + self._store.skip_locked(),
                now,
                limit,
            )
            items = []
            for r in rows:
                attempts = int(r["attempts"]) + 1
                await tx.execute(
                    "UPDATE dc09_forwards SET attempts = ?, next_attempt_at = ?, claimed_by = ? WHERE id = ?",
                    attempts,
                    now + lease_s,
                    self._node,
                    r["id"],
                )
                items.append(_item(r, attempts))
            return items

        claimed: list[ForwardItem] = await self._store.transaction(work)
        return claimed

    async def finish(
        self, item: ForwardItem, result: str, entries: Sequence[TimelineEntry], now: float
    ) -> None:
        """Close a forward the centre answered (``ack``, ``duh``) or that cannot be sent (``error``),
        writing its steps on the alert's timeline in the same transaction."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "UPDATE dc09_forwards SET done_at = ?, result = ?, claimed_by = NULL WHERE id = ?",
                now,
                result,
                item.id,
            )
            await _timeline(tx, post, item.alert_id, entries)

        await self._store.transaction(work)

    async def retry(
        self, item: ForwardItem, error: str, entries: Sequence[TimelineEntry], *, at: float
    ) -> None:
        """No path answered: try again at ``at`` (same sequence), writing the steps on the timeline."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "UPDATE dc09_forwards SET next_attempt_at = ?, last_error = ?, claimed_by = NULL "
                "WHERE id = ?",
                at,
                error,
                item.id,
            )
            await _timeline(tx, post, item.alert_id, entries)

        await self._store.transaction(work)

    async def pending(self) -> int:
        """Forwards not yet answered."""
        async with self._store.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM dc09_forwards WHERE done_at IS NULL")
        return int(row["n"]) if row else 0

    async def of_alert(self, alert_id: int) -> list[Row]:
        """An alert's forwards, oldest first (for the API and tests)."""
        async with self._store.read() as tx:
            return await tx.fetchall("SELECT * FROM dc09_forwards WHERE alert_id = ? ORDER BY id", alert_id)


async def _timeline(tx: Tx, post: PostCommit, alert_id: int, entries: Sequence[TimelineEntry]) -> None:
    if not entries:
        return
    alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", alert_id)
    if alert is None:
        return
    for at, action, detail in entries:
        await log_action(tx, post, alert, action, "system", Source.SYSTEM, detail, at)


def _item(r: Row, attempts: int) -> ForwardItem:
    return ForwardItem(
        id=int(r["id"]),
        alert_id=int(r["alert_id"]),
        kind=ForwardKind(r["kind"]),
        event_type=str(r["event_type"]),
        device_id=str(r["device_id"]),
        account=None if r["account"] is None else str(r["account"]),
        sequence=int(r["sequence"]),
        attempts=attempts,
    )
