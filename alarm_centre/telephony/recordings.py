"""Call recordings: on the alert's timeline as soon as Twilio reports them, played to supervisors only
through the bridge, and deleted at Twilio and here after ``retention_days``.

The audio never leaves Twilio except through ``GET /api/v1/recordings/{id}/audio`` (the routes), which
fetches it with the account's credentials and logs the playing on the alert's timeline. Retention is the
telephony's own setting (``telephony.retention_days``): the runner deletes what is due, at Twilio first,
then marks the row deleted here (its length and dates stay, for the audit's record).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import Source
from alarm_centre.alerts.model import iso
from alarm_centre.store.alerts import alert_row
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import NotFound, PostCommit, Row, Tx
from alarm_centre.telephony import store as sql
from alarm_centre.telephony.batch import TransactionBatcher

RETENTION_BATCH = 50


@dataclass(frozen=True, slots=True)
class DueDeletion:
    recording_id: int
    sid: str


class Recordings:
    """Recording rows and their timeline entries; ``clock`` is wall-clock seconds."""

    def __init__(
        self,
        store: AlertStore,
        *,
        retention_s: float,
        lease_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        batcher: TransactionBatcher | None = None,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.lease_s = lease_s
        self.clock = clock
        #: Webhook writes go through the batcher when there is one (group commit: see batch.py).
        self.transaction = batcher.run if batcher is not None else store.transaction

    async def on_recording(
        self,
        *,
        call_id: int,
        sid: str,
        status: str,
        duration_s: int,
        channels: int,
        media_url: str,
        before: Callable[[Tx], Awaitable[None]] | None = None,
    ) -> int | None:
        """Twilio reports a finished recording of a call's conference: stored once, and said on the
        alert's timeline (id, duration, channels). Returns the recording's id (None for an unknown call
        or a recording that is not complete)."""

        async def work(tx: Tx, post: PostCommit) -> int | None:
            if before is not None:
                await before(tx)
            if status != "completed":
                return None
            now = self.clock()
            call = await sql.call(tx, call_id)
            if call is None:
                return None
            row = await sql.add_recording(
                tx,
                sid=sid,
                call_id=call_id,
                alert_id=int(call["alert_id"]),
                duration_s=duration_s,
                channels=channels,
                status=status,
                media_url=media_url,
                now=now,
                delete_due_at=now + self.retention_s,
            )
            if row is None:
                return None  # reported before
            alert = await alert_row(tx, int(call["alert_id"]))
            if alert is not None:
                detail = {
                    "call_id": str(call_id),
                    "recording_id": str(row["id"]),
                    "recording_sid": sid,
                    "duration_s": duration_s,
                    "channels": channels,
                    "delete_due_at": iso(float(row["delete_due_at"])),
                }
                await self.store.alerts.log_action(
                    tx, post, alert, AuditAction.CALL_RECORDED, "twilio", Source.VOICE, detail, now
                )
            return int(row["id"])

        result: int | None = await self.transaction(work)
        return result

    async def for_playing(self, recording_id: int, *, user: str, source: str) -> Row:
        """The recording a supervisor plays (NotFound when there is none, or its audio was deleted);
        the playing is written on the alert's timeline first: who listened, and when."""

        async def work(tx: Tx, post: PostCommit) -> Row:
            row = await sql.recording(tx, recording_id)
            if row is None or row["deleted_at"] is not None:
                raise NotFound(f"no recording {recording_id}" + (" (deleted)" if row is not None else ""))
            alert = await alert_row(tx, int(row["alert_id"]))
            if alert is not None:
                detail: dict[str, Any] = {"recording_id": str(recording_id), "call_id": str(row["call_id"])}
                await self.store.alerts.log_action(
                    tx, post, alert, AuditAction.CALL_RECORDING_PLAYED, user, source, detail, self.clock()
                )
            return row

        result: Row = await self.store.transaction(work)
        return result

    async def claim_due(self, *, limit: int = RETENTION_BATCH) -> list[DueDeletion]:
        """Recordings past retention, each leased to this node while it is deleted at Twilio."""
        async with self.store.read() as tx:
            if not await sql.recordings_due(tx, self.clock(), 1, ""):
                return []

        async def work(tx: Tx, post: PostCommit) -> list[DueDeletion]:
            now = self.clock()
            rows = await sql.recordings_due(tx, now, limit, self.store.skip_locked())
            for row in rows:
                await sql.lease_recording(tx, int(row["id"]), now + self.lease_s)
            return [DueDeletion(int(r["id"]), str(r["sid"])) for r in rows]

        result: list[DueDeletion] = await self.store.transaction(work)
        return result

    async def deleted(self, recording_id: int) -> None:
        """Twilio deleted the audio (or no longer has it): forget it here and say so on the timeline."""

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            row = await sql.recording(tx, recording_id)
            if row is None or not await sql.recording_deleted(tx, recording_id, now):
                return
            alert = await alert_row(tx, int(row["alert_id"]))
            if alert is not None:
                detail = {
                    "recording_id": str(recording_id),
                    "recording_sid": row["sid"],
                    "reason": f"kept {round(self.retention_s / 86400)} days (telephony.retention_days)",
                }
                await self.store.alerts.log_action(
                    tx, post, alert, AuditAction.CALL_RECORDING_DELETED, "system", Source.SYSTEM, detail, now
                )

        await self.store.transaction(work)
