"""The outbox: side effects produced inside a commit (device commands) and performed after it.

Items are added in the transaction that decided them, claimed with a lease by the senders, checked just
before sending (never after their alert is resolved), and closed by the unit's ``cmd_result``, by the
transport, by a resolve, or after too many attempts.

Each attempt goes on the alert's timeline as ``command_sent`` once, before the unit's answer to it. The
sender records it after the transport took the command, but the unit can answer first (a loaded node,
or another node storing the answer): the answer's transaction then records the send ahead of the
answer (the answer proves it went out), and the sender's later record finds it there and adds nothing.
Both lock the item's row first, so on PostgreSQL the two cannot both miss the other's entry.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import Source
from alarm_centre.alerts.model import OutboxItem
from alarm_centre.store.tx import Database, PostCommit, Row, Tx, log_action
from alarm_centre.store.tx import dumps as _j
from alarm_centre.store.tx import now as _now

log = logging.getLogger(__name__)

COMMAND_RETRY_S = (15.0, 30.0, 60.0, 120.0, 300.0)
COMMAND_MAX_ATTEMPTS = 8


def new_cmd_id() -> str:
    """A command's id, which the unit's ``cmd_result`` quotes back."""
    return "c" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class OutboxCommand:
    """One command to a unit, decided in a transaction."""

    channel: str
    target: str
    cmd: str
    args: dict[str, Any]
    alert_id: int | None
    #: Set for a command the answer to the unit's own event carries (:attr:`Outbox.in_band`): the
    #: item is closed at once with this result.
    closed_with: dict[str, Any] | None = None
    cmd_id: str = field(default_factory=new_cmd_id)

    @property
    def payload(self) -> str:
        return _j({"cmd": self.cmd, "args": self.args})

    @property
    def sent_detail(self) -> dict[str, Any]:
        """The timeline detail of a command closed in band (``command_sent``)."""
        return {**_attempt(self.cmd, self.cmd_id, self.target, 1), **(self.closed_with or {})}


class Outbox:
    """The outbox table's one home (``store.outbox``)."""

    def __init__(self, store: Database) -> None:
        self._store = store
        #: Commands a channel carries in its answer to the unit's own event (SCAIP's ``mrs`` tells the
        #: unit to open its speech call): (channel, cmd) -> what such an item is closed with. A command
        #: to the unit whose event decided it is then closed, and logged sent, in that event's
        #: transaction: no claim, send and close of its own (three more commits per help alert).
        self.in_band: dict[tuple[str, str], dict[str, Any]] = {}

    async def add_command(
        self,
        tx: Tx,
        post: PostCommit,
        channel: str,
        device_id: str,
        cmd: str,
        args: dict[str, Any],
        alert_id: int | None,
        now: float,
    ) -> str:
        """Queue a command to a unit in the transaction that decided it; returns its ``cmd_id``."""
        command = OutboxCommand(channel, device_id, cmd, args, alert_id)
        await tx.execute(
            "INSERT INTO outbox (kind, channel, target, alert_id, cmd_id, payload, created_at, "
            "next_attempt_at) VALUES ('device_command', ?, ?, ?, ?, ?, ?, ?)",
            channel,
            device_id,
            alert_id,
            command.cmd_id,
            command.payload,
            now,
            now,
        )
        post.outbox = True
        return command.cmd_id

    async def add_in_band(
        self,
        tx: Tx,
        post: PostCommit,
        alert: Row,
        channel: str,
        device_id: str,
        cmd: str,
        args: dict[str, Any],
        result: dict[str, Any],
        now: float,
    ) -> str:
        """Record a command the answer to the unit's own event carries (see :attr:`in_band`): closed
        at once with ``result`` and logged sent on the alert's timeline, in the event's transaction."""
        command = OutboxCommand(channel, device_id, cmd, args, int(alert["id"]), result)
        await tx.execute(
            "INSERT INTO outbox (kind, channel, target, alert_id, cmd_id, payload, created_at, "
            "next_attempt_at, attempts, done_at, result) "
            "VALUES ('device_command', ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            channel,
            device_id,
            alert["id"],
            command.cmd_id,
            command.payload,
            now,
            now,
            now,
            _j(result),
        )
        await log_action(
            tx, post, alert, AuditAction.COMMAND_SENT, "system", Source.SYSTEM, command.sent_detail, now
        )
        return command.cmd_id

    async def add_many(self, tx: Tx, post: PostCommit, commands: Sequence[OutboxCommand], now: float) -> None:
        """Queue several commands in one statement (PostgreSQL arrays; the set-based ingest), each as
        :meth:`add_command` would, or closed at once as :meth:`add_in_band` would (its ``command_sent``
        entry is the caller's to write)."""
        if not commands:
            return
        closed = [c.closed_with is not None for c in commands]
        await tx.execute(
            "INSERT INTO outbox (kind, channel, target, alert_id, cmd_id, payload, created_at, "
            "next_attempt_at, attempts, done_at, result) "
            "SELECT 'device_command', c.channel, c.target, c.alert_id, c.cmd_id, c.payload, ?, ?, "
            "CASE WHEN c.closed THEN 1 ELSE 0 END, CASE WHEN c.closed THEN ?::float8 END, c.result "
            "FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::bool[], ?::text[]) "
            "WITH ORDINALITY AS c(channel, target, alert_id, cmd_id, payload, closed, result, n) "
            "ORDER BY c.n",
            now,
            now,
            now,
            [c.channel for c in commands],
            [c.target for c in commands],
            [c.alert_id for c in commands],
            [c.cmd_id for c in commands],
            [c.payload for c in commands],
            closed,
            [None if c.closed_with is None else _j(c.closed_with) for c in commands],
        )
        if not all(closed):
            post.outbox = True

    async def claim(
        self, *, limit: int = 100, lease_s: float = 15.0, now: float | None = None
    ) -> list[OutboxItem]:
        """Take due outbox items, pushing their next attempt out by a lease so no one else takes them.

        An item whose alert is already resolved is closed here instead of handed out (resolving
        cancels them too; this catches any left behind).
        """

        async def work(tx: Tx, post: PostCommit) -> list[OutboxItem]:
            at = _now() if now is None else now
            rows = await tx.fetchall(
                "SELECT * FROM outbox WHERE done_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?"
                + self._store.skip_locked(),
                at,
                limit,
            )
            resolved = await self._resolved_among(tx, [r["alert_id"] for r in rows])
            items = []
            for r in rows:
                if r["alert_id"] is not None and int(r["alert_id"]) in resolved:
                    await tx.execute(
                        "UPDATE outbox SET done_at = ?, last_error = ? WHERE id = ?",
                        at,
                        "cancelled: alert resolved",
                        r["id"],
                    )
                    continue
                attempts = int(r["attempts"]) + 1
                if attempts > COMMAND_MAX_ATTEMPTS:
                    await tx.execute(
                        "UPDATE outbox SET done_at = ?, last_error = ? WHERE id = ?",
                        at,
                        "gave up: no cmd_result after retries",
                        r["id"],
                    )
                    if r["alert_id"] is not None:
                        alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", r["alert_id"])
                        if alert is not None:
                            await log_action(
                                tx,
                                post,
                                alert,
                                AuditAction.COMMAND_FAILED,
                                "system",
                                Source.SYSTEM,
                                {
                                    "cmd_id": r["cmd_id"],
                                    "target": r["target"],
                                    "reason": "the unit never confirmed the command",
                                },
                                at,
                            )
                    continue
                delay = COMMAND_RETRY_S[min(attempts - 1, len(COMMAND_RETRY_S) - 1)]
                await tx.execute(
                    "UPDATE outbox SET attempts = ?, next_attempt_at = ? WHERE id = ?",
                    attempts,
                    at + max(delay, lease_s),
                    r["id"],
                )
                items.append(
                    OutboxItem(
                        id=int(r["id"]),
                        kind=r["kind"],
                        channel=r["channel"],
                        target=r["target"],
                        alert_id=None if r["alert_id"] is None else str(r["alert_id"]),
                        cmd_id=r["cmd_id"],
                        payload=json.loads(r["payload"]),
                        attempts=attempts,
                    )
                )
            return items

        result: list[OutboxItem] = await self._store.transaction(work)
        return result

    async def _resolved_among(self, tx: Tx, alert_ids: Sequence[Any]) -> set[int]:
        keys = sorted({int(a) for a in alert_ids if a is not None})
        if not keys:
            return set()
        marks = ", ".join("?" for _ in keys)
        rows = await tx.fetchall(f"SELECT id FROM alerts WHERE state = 'resolved' AND id IN ({marks})", *keys)
        return {int(r["id"]) for r in rows}

    async def void_reason(self, item: OutboxItem) -> str | None:
        """Why a claimed item must not be sent now (closed meanwhile, its alert resolved), or None.

        The sender asks just before sending, so a command claimed before a resolve never goes out
        after it.
        """
        async with self._store.read() as tx:
            row = await tx.fetchone("SELECT done_at, last_error FROM outbox WHERE id = ?", item.id)
            if row is None:
                return "the item is gone"
            if row["done_at"] is not None:
                return str(row["last_error"] or "the item is already done")
            if item.alert_id is not None and await self._resolved_among(tx, [item.alert_id]):
                return "cancelled: alert resolved"
        return None

    async def sent(self, item: OutboxItem, *, error: str | None = None) -> None:
        """Record one attempt at an outbox item on its alert's timeline, unless the unit's answer to
        that attempt already recorded it (see the module docstring)."""
        if item.alert_id is None:
            if error:
                log.warning("outbox item %s failed: %s", item.id, error)
            return

        async def work(tx: Tx, post: PostCommit) -> None:
            await self._lock(tx, item.id)
            alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", int(item.alert_id or 0))
            if error is not None:
                await tx.execute("UPDATE outbox SET last_error = ? WHERE id = ?", error, item.id)
            if alert is None or await self._send_logged(tx, alert["id"], item.cmd_id, item.attempts):
                return
            detail = _attempt(item.payload.get("cmd"), item.cmd_id, item.target, item.attempts)
            if error:
                detail["error"] = error
            await log_action(
                tx,
                post,
                alert,
                AuditAction.COMMAND_FAILED if error else AuditAction.COMMAND_SENT,
                "system",
                Source.SYSTEM,
                detail,
                _now(),
            )

        await self._store.transaction(work)

    async def answered(self, tx: Tx, post: PostCommit, alert: Row, item: Row, now: float) -> None:
        """The unit answered ``item`` (in the answer's transaction, before the answer is logged): make
        sure the attempt it answers is on the timeline as sent, ahead of the answer."""
        await self._lock(tx, item["id"])
        row = await tx.fetchone("SELECT attempts FROM outbox WHERE id = ?", item["id"])
        attempt = int(row["attempts"]) if row is not None else 0
        if attempt < 1 or await self._send_logged(tx, alert["id"], item["cmd_id"], attempt):
            return  # never handed to a transport (a guessed or stale cmd_id), or already recorded
        command = json.loads(item["payload"]).get("cmd")
        detail = _attempt(command, item["cmd_id"], item["target"], attempt)
        await log_action(tx, post, alert, AuditAction.COMMAND_SENT, "system", Source.SYSTEM, detail, now)

    async def _lock(self, tx: Tx, item_id: Any) -> None:
        """Hold the item's row until the commit (a no-op update: portable, and it waits on PostgreSQL
        for the other writer of that attempt's timeline entry to commit)."""
        await tx.execute("UPDATE outbox SET attempts = attempts WHERE id = ?", item_id)

    async def _send_logged(self, tx: Tx, alert_id: Any, cmd_id: str | None, attempt: int) -> bool:
        """Whether this attempt at ``cmd_id`` is already on the alert's timeline."""
        rows = await tx.fetchall(
            "SELECT detail FROM alert_log WHERE alert_id = ? AND action IN (?, ?) ORDER BY id DESC",
            alert_id,
            AuditAction.COMMAND_SENT.value,
            AuditAction.COMMAND_FAILED.value,
        )
        for row in rows:
            detail = json.loads(row["detail"])
            if (
                isinstance(detail, dict)
                and detail.get("cmd_id") == cmd_id
                and detail.get("attempt") == attempt
            ):
                return True
        return False

    async def pending(self) -> int:
        async with self._store.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE done_at IS NULL")
        return int(row["n"]) if row else 0

    async def confirm(
        self, tx: Tx, device_id: str, cmd_id: str, result: dict[str, Any], now: float
    ) -> Row | None:
        """A unit's ``cmd_result`` for one of its commands: close the item with the result (in the
        event's transaction); returns the item, or None if the unit has no such command."""
        item = await tx.fetchone("SELECT * FROM outbox WHERE cmd_id = ? AND target = ?", cmd_id, device_id)
        if item is None:
            return None
        await tx.execute(
            "UPDATE outbox SET done_at = ?, result = ? WHERE id = ? AND done_at IS NULL",
            now,
            _j(result),
            item["id"],
        )
        return item

    async def finish(self, item: OutboxItem, result: dict[str, Any]) -> None:
        """Close a sent item with what the transport learnt (for transports with no ``cmd_result``,
        such as SMS)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "UPDATE outbox SET done_at = ?, result = ? WHERE id = ? AND done_at IS NULL",
                _now(),
                _j(result),
                item.id,
            )

        await self._store.transaction(work)

    async def cancel_for_alert(self, tx: Tx, alert_id: Any, reason: str, now: float) -> list[Row]:
        """Close an alert's pending items (it was resolved), in that transaction; returns them."""
        commands = await tx.fetchall(
            "SELECT id, cmd_id, target, payload FROM outbox WHERE alert_id = ? AND done_at IS NULL "
            "ORDER BY id",
            alert_id,
        )
        if commands:
            await tx.execute(
                "UPDATE outbox SET done_at = ?, last_error = ? WHERE alert_id = ? AND done_at IS NULL",
                now,
                f"cancelled: {reason}",
                alert_id,
            )
        return commands


def _attempt(cmd: Any, cmd_id: str | None, target: str, attempt: int) -> dict[str, Any]:
    """A command attempt as its timeline entry names it."""
    return {"cmd": cmd, "cmd_id": cmd_id, "target": target, "attempt": attempt}
