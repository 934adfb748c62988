"""Erasure on request: remove a resident and anonymise what must be kept, in one transaction, and record
that it was done (``telecare-bridge privacy erase``, ``POST /api/v1/privacy/residents/{id}/erase``).

- Refused while any alert of the resident (or of one of their devices) is open: help may be needed
  now, and the operator handling it needs the card. The refusal names the alerts.
- The resident's record, check-in schedule, voice check-ins and Echo links are deleted; their units are
  unlinked (they go back to stock) and the units' device events deleted.
- Their alerts are anonymised (:func:`alarm_centre.privacy.anonymise.anonymise_alerts`): the rows that
  service-level statistics count stay, with no resident, unit, note, data, timeline or notifications.
- The audit of reads keeps its rows (who looked, when, why: the centre's accountability) with the
  resident's id replaced by ``erased-<n>``.
- ``erasures`` gets a row: who, when, the request's reference, the counts -- never the resident's id
  or name; the registry's log says ``resident_erased`` under ``erasure:<n>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from alarm_centre.alerts.model import iso
from alarm_centre.escalation.states import marks
from alarm_centre.privacy.anonymise import RESOLVED, anonymise_alerts
from alarm_centre.store.tx import Conflict, Database, NotFound, PostCommit, Tx
from devices.registry import DeviceKind

#: Alerts anonymised per statement (keeps ``IN (...)`` lists short).
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure did."""

    id: int
    at: float
    reference: str
    counts: dict[str, int]

    @property
    def token(self) -> str:
        """What the resident's id became in the audit of reads."""
        return f"erased-{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {"erasure": self.id, "at": iso(self.at), "reference": self.reference, "counts": self.counts}


async def _open_alerts(tx: Tx, resident_id: str, device_ids: tuple[str, ...]) -> list[str]:
    sql = "SELECT id FROM alerts WHERE state <> ? AND (resident_id = ?"
    args: list[Any] = [RESOLVED, resident_id]
    if device_ids:
        sql += f" OR device_id IN ({marks(device_ids)})"
        args += device_ids
    rows = await tx.fetchall(sql + ") ORDER BY id", *args)
    return [str(r["id"]) for r in rows]


async def erase_resident(
    store: Database, resident_id: str, *, actor: str, source: str, reference: str, now: float
) -> Erasure:
    """Erase ``resident_id`` (see the module's docstring). NotFound if there is no such resident;
    Conflict naming the open alerts while any is open."""

    async def work(tx: Tx, post: PostCommit) -> Erasure:
        if await tx.fetchone("SELECT id FROM residents WHERE id = ?", resident_id) is None:
            raise NotFound(f"no resident {resident_id!r}")
        devices = await tx.fetchall("SELECT id, kind FROM devices WHERE resident_id = ?", resident_id)
        device_ids = tuple(str(d["id"]) for d in devices)
        still_open = await _open_alerts(tx, resident_id, device_ids)
        if still_open:
            raise Conflict(
                f"resident {resident_id} has open alert(s) {', '.join(still_open)}: a resident is not "
                "erased while help may be needed; resolve the alert(s) first, then erase"
            )
        row = await tx.fetchone(
            "INSERT INTO erasures (at, actor, source, reference, counts) "
            "VALUES (?, ?, ?, ?, '{}') RETURNING id",
            now,
            actor,
            source,
            reference,
        )
        assert row is not None
        erasure_id = int(row["id"])
        token = f"erased-{erasure_id}"
        counts: dict[str, int] = {}
        alert_ids = [
            int(r["id"])
            for r in await tx.fetchall("SELECT id FROM alerts WHERE resident_id = ? ORDER BY id", resident_id)
        ]
        anonymised = 0
        for start in range(0, len(alert_ids), CHUNK):
            anonymised += await anonymise_alerts(tx, alert_ids[start : start + CHUNK], now)
        counts["alerts_anonymised"] = anonymised
        counts["device_events_deleted"] = (
            await tx.execute(f"DELETE FROM events WHERE device_id IN ({marks(device_ids)})", *device_ids)
            if device_ids
            else 0
        )
        counts["voice_check_ins_deleted"] = await tx.execute(
            "DELETE FROM voice_checkins WHERE resident_id = ?", resident_id
        )
        counts["check_in_schedules_deleted"] = await tx.execute(
            "DELETE FROM checkin_schedules WHERE resident_id = ?", resident_id
        )
        counts["echo_links_deleted"] = await tx.execute(
            "DELETE FROM devices WHERE resident_id = ? AND kind = ?", resident_id, DeviceKind.ALEXA.value
        )
        counts["units_unlinked"] = await tx.execute(
            "UPDATE devices SET resident_id = NULL WHERE resident_id = ?", resident_id
        )
        counts["registry_history_cleared"] = await tx.execute(
            "UPDATE registry_log SET subject = ?, detail = '{}' WHERE subject = ?",
            f"erasure:{erasure_id}",
            f"resident:{resident_id}",
        )
        if device_ids:  # a unit's history keeps its entries, without the resident's id in them
            counts["registry_history_cleared"] += await tx.execute(
                f"UPDATE registry_log SET detail = '{{}}' WHERE subject IN ({marks(device_ids)}) "
                "AND detail LIKE ?",
                *(f"device:{d}" for d in device_ids),
                f"%{resident_id}%",
            )
        counts["reads_pseudonymised"] = await tx.execute(
            "UPDATE personal_data_reads SET resident_id = ? WHERE resident_id = ?", token, resident_id
        )
        counts["residents_deleted"] = await tx.execute("DELETE FROM residents WHERE id = ?", resident_id)
        await tx.execute("UPDATE erasures SET counts = ? WHERE id = ?", json.dumps(counts), erasure_id)
        await tx.execute(
            "INSERT INTO registry_log (at, actor, source, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
            now,
            actor,
            source,
            "resident_erased",
            f"erasure:{erasure_id}",
            json.dumps({"reference": reference, "counts": counts}),
        )
        return Erasure(erasure_id, now, reference, counts)

    result: Erasure = await store.transaction(work)
    return result


async def erasures(store: Database, limit: int = 100) -> list[dict[str, Any]]:
    """The erasures done, newest first."""
    async with store.read() as tx:
        rows = await tx.fetchall("SELECT * FROM erasures ORDER BY id DESC LIMIT ?", limit)
    return [
        Erasure(int(r["id"]), float(r["at"]), r["reference"], json.loads(r["counts"])).to_json()
        | {"actor": r["actor"], "source": r["source"]}
        for r in rows
    ]
