"""The installers' registry: residents, devices, links, commissioning visits, heartbeat supervision
state, remote configuration versions and per-device credentials.

The SQL is in ``store.py``, the visit states in ``commissioning.py``, the configuration states in
``config.py``; this module decides. Changes go through ``store.transaction`` and are written to
``registry_log`` (who, when, from where). :meth:`Registry.on_event` is the store event hook that
keeps heartbeat deadlines, records commissioning test presses and applied configuration versions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from alarm_centre.alerts.lifecycle import Outcome, Source
from alarm_centre.alerts.model import iso
from alarm_centre.host import HookOrder
from alarm_centre.registry import store as sql
from alarm_centre.registry.commissioning import (
    VisitAction,
    checklist_for,
    match_press,
    next_state,
    state_of,
    summary_of,
)
from alarm_centre.registry.config import config_state
from alarm_centre.store.alerts import alert_row
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import (
    Conflict,
    InvalidRequest,
    NotFound,
    PostCommit,
    Row,
    Stored,
    T,
    Tx,
    Work,
    lost_unique_race,
)
from devices.csv_yaml import Batch, RowError
from devices.events import DeviceEvent
from devices.registry import UNIT_KINDS, Device, DeviceKind, Resident, UnitSettings
from devices.strict_json import column_text as _j
from devices.vocabulary import EventType

DEVICE_COLUMNS = (
    "kind",
    "resident_id",
    "channel",
    "phone",
    "imei",
    "alexa_device_id",
    "heartbeat_interval_s",
    "heartbeat_grace_s",
)

log = logging.getLogger(__name__)


class ImportAborted(Conflict):
    """Carries an import report out of a transaction that must not commit (dry run, or bad rows)."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("import not applied")
        self.report = report


@dataclass
class ImportReport:
    dry_run: bool
    errors: list[RowError] = field(default_factory=list)
    created: dict[str, int] = field(default_factory=lambda: {"residents": 0, "devices": 0})
    updated: dict[str, int] = field(default_factory=lambda: {"residents": 0, "devices": 0})

    @property
    def applied(self) -> bool:
        return not self.dry_run and not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "applied": self.applied,
            "created": self.created,
            "updated": self.updated,
            "errors": [e.to_json() for e in self.errors],
        }


class Registry:
    """Registry operations on one store. ``clock`` is injectable for benches and tests."""

    def __init__(
        self,
        store: AlertStore,
        *,
        default_interval_s: int = 900,
        default_grace_s: int = 120,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.default_interval_s = default_interval_s
        self.default_grace_s = default_grace_s
        self.clock = clock

    async def _transaction(self, work: Work[T]) -> T:
        """``store.transaction(work)``, run once more when a concurrent write won a unique-index race,
        so the work's own checks name the clash (resident id, account, phone) instead of a 500."""
        try:
            return await self.store.transaction(work)
        except Exception as exc:
            if not lost_unique_race(exc):
                raise
            log.info("registry write met a concurrent write of the same key; checking again")
            return await self.store.transaction(work)

    def install(self) -> None:
        """Register the event hook on the store (once)."""
        self.store.add_event_hook(self.on_event, HookOrder.REGISTRY, self.on_events)

    # -- audit -----------------------------------------------------------------------------------
    async def _log(
        self, tx: Tx, actor: str, source: str, action: str, subject: str, detail: dict[str, Any], now: float
    ) -> None:
        await sql.log_change(tx, now, actor, str(source), action, subject, _j(detail))

    async def history(self, subject: str, limit: int = 100) -> list[dict[str, Any]]:
        async with self.store.read() as tx:
            rows = await sql.history(tx, subject, limit)
        return [
            {
                "at": iso(r["at"]),
                "actor": r["actor"],
                "source": r["source"],
                "action": r["action"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]

    # -- residents -------------------------------------------------------------------------------
    async def _resident_row(self, tx: Tx, resident_id: str) -> Row:
        row = await sql.resident(tx, resident_id)
        if row is None:
            raise NotFound(f"no resident {resident_id[:64]!r}")
        return row

    async def _resident_problem(self, tx: Tx, r: Resident) -> str | None:
        """Why a resident cannot be written as it is (an account another resident has), or None."""
        if r.dc09_account is None:
            return None
        other = await sql.resident_with_dc09_account(tx, r.dc09_account, r.id)
        if other is None:
            return None
        return f"{r.dc09_account} is already used by resident {other['id']!r}"

    async def _write_resident(self, tx: Tx, r: Resident, *, create: bool, now: float) -> None:
        if (problem := await self._resident_problem(tx, r)) is not None:
            raise InvalidRequest(f"dc09_account: {problem}")
        if create:
            await sql.insert_resident(tx, r, _j(r.data()), now)
        else:
            # Keep keys other features put in residents.data (escalation state, console notes, ...).
            row = await self._resident_row(tx, r.id)
            data = {**json.loads(row["data"] or "{}"), **r.data()}
            await sql.update_resident(tx, r, _j(data))

    async def create_resident(self, r: Resident, *, actor: str, source: str) -> Resident:
        async def work(tx: Tx, post: PostCommit) -> None:
            if await sql.resident_exists(tx, r.id):
                raise Conflict(f"resident {r.id!r} is already registered; edit it instead")
            now = self.clock()
            await self._write_resident(tx, r, create=True, now=now)
            await self._log(tx, actor, source, "resident_created", f"resident:{r.id}", {"name": r.name}, now)

        await self._transaction(work)
        return r

    async def update_resident(self, r: Resident, *, actor: str, source: str) -> Resident:
        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            await self._write_resident(tx, r, create=False, now=now)
            await self._log(tx, actor, source, "resident_updated", f"resident:{r.id}", {}, now)

        await self._transaction(work)
        return r

    async def get_resident(self, resident_id: str) -> Resident:
        async with self.store.read() as tx:
            return Resident.from_row(await self._resident_row(tx, resident_id))

    async def list_residents(self) -> list[tuple[Resident, int]]:
        """Every resident with the number of active devices linked to them."""
        async with self.store.read() as tx:
            rows = await sql.residents(tx)
            n = await sql.active_device_counts(tx)
        return [(Resident.from_row(r), n.get(r["id"], 0)) for r in rows]

    async def resident_names(self) -> dict[str, str]:
        """Every resident's name by id (the console shows people by name)."""
        async with self.store.read() as tx:
            return await sql.resident_names(tx)

    # -- devices ---------------------------------------------------------------------------------
    async def _device_row(self, tx: Tx, device_id: str) -> Row:
        row = await sql.device(tx, device_id)
        if row is None:
            raise NotFound(f"no device {device_id[:64]!r}")
        return row

    async def _check_device(
        self, tx: Tx, d: Device, known_residents: Sequence[str] = ()
    ) -> list[tuple[str, str]]:
        """Problems with a device's references and unique addresses, as ``(field, message)``."""
        problems = []
        if (
            d.resident_id is not None
            and d.resident_id not in known_residents
            and not await sql.resident_exists(tx, d.resident_id)
        ):
            problems.append(("resident_id", f"no resident {d.resident_id!r}; register the resident first"))
        if d.channel == "dc09" and d.dc09_account is None:  # a write rule: retiring frees the account
            problems.append(("dc09_account", "a unit on channel dc09 needs its dc09_account"))
        if d.channel == "scaip" and d.scaip_cid is None:
            problems.append(("scaip_cid", "a unit on channel scaip needs its scaip_cid"))
        for column in sql.ADDRESS_COLUMNS:
            value = getattr(d, column)
            if value is None:
                continue
            other = await sql.device_with_address(tx, column, value, d.id)
            if other is not None:
                problems.append((column, f"{value} is already used by device {other['id']!r}"))
        return problems

    def _due(self, d: Device | Row, since: float) -> float | None:
        kind = d.kind if isinstance(d, Device) else d["kind"]
        if kind not in UNIT_KINDS:
            return None
        interval = d.heartbeat_interval_s if isinstance(d, Device) else d["heartbeat_interval_s"]
        grace = d.heartbeat_grace_s if isinstance(d, Device) else d["heartbeat_grace_s"]
        channel = d.channel if isinstance(d, Device) else d["channel"]
        if interval is None and channel != "mqtt":
            # Serial and SMS units report on their own schedule (a daily test call, say): supervised only
            # when the installer gives them an interval.
            return None
        return (
            since + (interval or self.default_interval_s) + (self.default_grace_s if grace is None else grace)
        )

    async def _insert_device(self, tx: Tx, d: Device, now: float) -> None:
        await sql.insert_device(tx, d, self._due(d, now), _j(d.data()), now)

    async def _update_device(self, tx: Tx, d: Device, row: Row, now: float) -> None:
        data = {**json.loads(row["data"] or "{}"), **d.data()}
        due = row["heartbeat_due_at"]
        if (d.heartbeat_interval_s, d.heartbeat_grace_s) != (
            row["heartbeat_interval_s"],
            row["heartbeat_grace_s"],
        ) and due is not None:
            due = self._due(d, row["last_seen_at"] or now)
        await sql.update_device(tx, d, due, _j(data))

    async def create_device(self, d: Device, *, actor: str, source: str) -> dict[str, Any]:
        async def work(tx: Tx, post: PostCommit) -> None:
            existing = await sql.device(tx, d.id)
            if existing is not None:
                state = "a retired device" if existing["status"] == "retired" else "already registered"
                raise Conflict(f"device {d.id!r} is {state}; device ids are never reused")
            problems = await self._check_device(tx, d)
            if problems:
                raise InvalidRequest("; ".join(f"{f}: {m}" for f, m in problems))
            now = self.clock()
            await self._insert_device(tx, d, now)
            await self._log(
                tx,
                actor,
                source,
                "device_registered",
                f"device:{d.id}",
                {"kind": d.kind.value, "resident_id": d.resident_id},
                now,
            )

        await self._transaction(work)
        return await self.get_device(d.id)

    async def update_device(self, d: Device, *, actor: str, source: str) -> dict[str, Any]:
        async def work(tx: Tx, post: PostCommit) -> None:
            row = await self._device_row(tx, d.id)
            if row["status"] != "active":
                raise Conflict(f"device {d.id!r} is retired and cannot be changed")
            problems = await self._check_device(tx, d)
            if problems:
                raise InvalidRequest("; ".join(f"{f}: {m}" for f, m in problems))
            now = self.clock()
            await self._update_device(tx, d, row, now)
            await self._log(tx, actor, source, "device_updated", f"device:{d.id}", {}, now)

        await self._transaction(work)
        return await self.get_device(d.id)

    async def device_model(self, device_id: str) -> Device:
        async with self.store.read() as tx:
            return Device.from_row(await self._device_row(tx, device_id))

    async def get_device(self, device_id: str) -> dict[str, Any]:
        async with self.store.read() as tx:
            row = await self._device_row(tx, device_id)
            credential = await sql.has_credential(tx, device_id)
        return self.device_json(row, credential=credential)

    def device_json(self, row: Row, *, credential: bool | None = None) -> dict[str, Any]:
        out: dict[str, Any] = Device.from_row(row).model_dump(
            mode="json", exclude={"dc09_key", "scaip_password"}
        )
        out["dc09_key_set"] = bool(row["dc09_key"])  # the key itself is write-only
        out["scaip_password_set"] = bool(row["scaip_password"])  # so is the password
        out.update(
            {
                "status": row["status"],
                "online": None if row["online"] is None else bool(row["online"]),
                "last_seen_at": iso(row["last_seen_at"]),
                "test_mode_until": iso(row["test_mode_until"]),
                "heartbeat_due_at": iso(row["heartbeat_due_at"]),
                "created_at": iso(row["created_at"]),
                "retired_at": iso(row["retired_at"]),
                "config": {
                    "version": int(row["config_version"]),
                    "applied_version": int(row["config_applied_version"]),
                    "pending": int(row["config_version"]) > int(row["config_applied_version"]),
                },
            }
        )
        if row["kind"] in UNIT_KINDS and (row["heartbeat_interval_s"] or row["channel"] == "mqtt"):
            out["effective_heartbeat"] = {
                "interval_s": row["heartbeat_interval_s"] or self.default_interval_s,
                "grace_s": self.default_grace_s
                if row["heartbeat_grace_s"] is None
                else row["heartbeat_grace_s"],
            }
        if credential is not None:
            out["credential"] = credential
        return out

    async def list_devices(
        self, *, resident_id: str | None = None, status: str = "active"
    ) -> list[dict[str, Any]]:
        if status not in ("active", "retired", "all"):
            raise InvalidRequest("status must be active, retired or all")
        async with self.store.read() as tx:
            rows = await sql.devices(tx, status=None if status == "all" else status, resident_id=resident_id)
        return [self.device_json(r) for r in rows]

    async def link(
        self, device_id: str, resident_id: str | None, *, actor: str, source: str
    ) -> dict[str, Any]:
        """Link a device (unit or Alexa device) to a resident, or unlink it with ``None``."""

        async def work(tx: Tx, post: PostCommit) -> None:
            row = await sql.device(tx, device_id)
            if row is None:
                raise InvalidRequest(f"device_id: no device {device_id[:64]!r}")
            if row["status"] != "active":
                raise Conflict(f"device {device_id!r} is retired; it cannot be linked")
            if resident_id is not None and not await sql.resident_exists(tx, resident_id):
                raise InvalidRequest(f"resident_id: no resident {resident_id[:64]!r}")
            now = self.clock()
            await sql.link(tx, device_id, resident_id)
            await self._log(
                tx,
                actor,
                source,
                "linked" if resident_id else "unlinked",
                f"device:{device_id}",
                {"resident_id": resident_id, "was": row["resident_id"]},
                now,
            )

        await self._transaction(work)
        return await self.get_device(device_id)

    async def retire(self, device_id: str, *, actor: str, source: str, reason: str = "") -> dict[str, Any]:
        """Retire a device: refused while it has an open alert. Its credential is revoked."""

        async def work(tx: Tx, post: PostCommit) -> None:
            row = await self._device_row(tx, device_id)
            if row["status"] == "retired":
                raise Conflict(f"device {device_id!r} is already retired")
            open_alerts = await sql.open_alerts_of(tx, device_id)
            if open_alerts:
                listed = ", ".join(f"{a['id']} ({a['type']}, {a['state']})" for a in open_alerts)
                raise Conflict(
                    f"device {device_id!r} has open alerts: {listed}; they must be resolved "
                    "before the device is retired"
                )
            now = self.clock()
            data = json.loads(row["data"] or "{}")
            data["retired_addresses"] = {k: row[k] for k in sql.ADDRESS_COLUMNS if row[k]}
            data["retired_reason"] = reason
            await sql.retire(tx, device_id, _j(data), now)
            await sql.revoke_credential(tx, device_id, now)
            await self._supersede_configs(tx, device_id, None, now)
            for visit in await sql.visits_in_progress(tx, device_id):
                await self._close_visit(tx, post, visit, VisitAction.RETIRE_DEVICE, actor, now)
            await self._log(
                tx, actor, source, "device_retired", f"device:{device_id}", {"reason": reason}, now
            )

        await self._transaction(work)
        return await self.get_device(device_id)

    # -- bulk import / export --------------------------------------------------------------------
    async def import_batch(
        self,
        batch: Batch,
        *,
        dry_run: bool,
        update: bool,
        actor: str,
        source: str,
        progress: Callable[[int, int], None] | None = None,
        keep: Collection[str] = (),
    ) -> ImportReport:
        """Apply a parsed batch in one transaction, or nothing at all when any row is bad (or dry run).

        ``progress(done, total)`` is called as rows are checked, for a progress bar. ``keep`` names
        resident fields an update leaves as stored: the fields the importer's role may not see, which
        its export left out (docs/data-protection.md).
        """
        report = ImportReport(dry_run=dry_run, errors=list(batch.errors))
        total = len(batch.residents) + len(batch.devices)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            batch_residents = [r.id for _, r in batch.residents]
            for line, r in batch.residents:
                tick()
                exists = await sql.resident_exists(tx, r.id)
                if exists and not update:
                    report.errors.append(
                        RowError(
                            line,
                            "id",
                            f"resident {r.id!r} is already registered (import with update to change it)",
                            "residents",
                        )
                    )
                    continue
                if exists and keep:
                    stored = Resident.from_row(await self._resident_row(tx, r.id))
                    r = r.model_copy(
                        update={k: getattr(stored, k) for k in keep if k in Resident.model_fields}
                    )
                if (problem := await self._resident_problem(tx, r)) is not None:
                    report.errors.append(RowError(line, "dc09_account", problem, "residents"))
                    continue
                await self._write_resident(tx, r, create=not exists, now=now)
                report.updated["residents"] += int(exists)
                report.created["residents"] += int(not exists)
            seen: dict[tuple[str, str], int] = {}
            for line, d in batch.devices:
                tick()
                row = await sql.device(tx, d.id)
                if row is not None and (not update or row["status"] != "active"):
                    why = (
                        "retired" if row["status"] != "active" else "already registered (import with update)"
                    )
                    report.errors.append(RowError(line, "id", f"device {d.id!r} is {why}", "devices"))
                    continue
                bad = False
                for column in sql.ADDRESS_COLUMNS:
                    value = getattr(d, column)
                    if value is not None and (column, value) in seen:
                        report.errors.append(
                            RowError(
                                line, column, f"{value} is also on line {seen[(column, value)]}", "devices"
                            )
                        )
                        bad = True
                    elif value is not None:
                        seen[(column, value)] = line
                for fld, message in await self._check_device(tx, d, batch_residents):
                    report.errors.append(RowError(line, fld, message, "devices"))
                    bad = True
                if bad:
                    continue
                if row is None:
                    await self._insert_device(tx, d, now)
                    report.created["devices"] += 1
                else:
                    await self._update_device(tx, d, row, now)
                    report.updated["devices"] += 1
            report.errors.sort(key=lambda e: (e.kind, e.line))
            if report.errors or dry_run:
                raise ImportAborted(report)
            await self._log(
                tx,
                actor,
                source,
                "imported",
                "registry",
                {"created": report.created, "updated": report.updated},
                now,
            )

        try:
            await self._transaction(work)
        except ImportAborted as aborted:
            return aborted.report
        return report

    async def export(self) -> tuple[list[Resident], list[Device]]:
        async with self.store.read() as tx:
            residents = [Resident.from_row(r) for r in await sql.residents(tx)]
            devices = [Device.from_row(r) for r in await sql.devices(tx, status="active", resident_id=None)]
        return residents, devices

    # -- commissioning ---------------------------------------------------------------------------
    async def start_visit(
        self, device_id: str, *, installer: str, minutes: float, peripherals: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Put a unit into test mode for ``minutes`` with a checklist of its peripherals to press."""

        async def work(tx: Tx, post: PostCommit) -> int:
            row = await self._device_row(tx, device_id)
            if row["status"] != "active" or row["kind"] not in UNIT_KINDS:
                raise Conflict(f"device {device_id!r} is not an active unit; only units are commissioned")
            if await sql.visit_in_progress(tx, device_id) is not None:
                raise Conflict(f"device {device_id!r} is already in test mode; finish that visit first")
            device = Device.from_row(row)
            chosen = [p for p in device.peripherals if not peripherals or p.id in peripherals]
            unknown = sorted(set(peripherals or ()) - {p.id for p in device.peripherals})
            if unknown:
                raise InvalidRequest(f"peripherals: {device_id} has no peripheral {', '.join(unknown)}")
            checklist = checklist_for(chosen)
            now = self.clock()
            ends = now + minutes * 60
            visit_id = await sql.insert_visit(tx, device_id, installer, now, ends, _j(checklist))
            await sql.set_test_mode(tx, device_id, ends)
            await self._log(
                tx,
                installer,
                Source.API,
                "test_mode_started",
                f"device:{device_id}",
                {"visit_id": visit_id, "until": iso(ends)},
                now,
            )
            return visit_id

        visit_id: int = await self._transaction(work)
        return await self.visit(device_id, visit_id)

    async def visit(self, device_id: str, visit_id: int | None = None) -> dict[str, Any]:
        """A visit's progress (the latest visit of the device by default)."""
        async with self.store.read() as tx:
            row = await sql.visit(tx, device_id, visit_id)
            if row is None:
                raise NotFound(f"no commissioning visit for device {device_id[:64]!r}")
            checks = await sql.visit_checks(tx, int(row["id"]))
        return self._visit_json(row, checks)

    def _visit_json(self, row: Row, checks: Sequence[Row]) -> dict[str, Any]:
        checklist = json.loads(row["checklist"])
        for item in checklist:
            item["confirmed_at"] = iso(item["confirmed_at"])
        confirmed = sum(1 for item in checklist if item["confirmed_at"])
        return {
            "visit_id": int(row["id"]),
            "device_id": row["device_id"],
            "installer": row["installer"],
            "started_at": iso(row["started_at"]),
            "ends_at": iso(row["ends_at"]),
            "finished_at": iso(row["finished_at"]),
            "finish_reason": row["finish_reason"],
            "in_test_mode": row["finished_at"] is None and row["ends_at"] > self.clock(),
            "checklist": checklist,
            "confirmed": confirmed,
            "total": len(checklist),
            "complete": confirmed == len(checklist),
            "events": [
                {
                    "event_id": c["event_id"],
                    "type": c["type"],
                    "peripheral_id": c["peripheral_id"],
                    "alert_id": None if c["alert_id"] is None else str(c["alert_id"]),
                    "at": iso(c["at"]),
                }
                for c in checks
            ],
            "note": row["note"],
            "summary": json.loads(row["summary"]) if row["summary"] else None,
        }

    async def finish_visit(self, device_id: str, *, actor: str, note: str | None = None) -> dict[str, Any]:
        """End test mode now and store the visit's summary."""

        async def work(tx: Tx, post: PostCommit) -> int:
            visit = await sql.visit_in_progress(tx, device_id)
            if visit is None:
                raise Conflict(f"device {device_id[:64]!r} has no visit in progress")
            await self._close_visit(tx, post, visit, VisitAction.FINISH, actor, self.clock(), note=note)
            return int(visit["id"])

        visit_id: int = await self._transaction(work)
        return await self.visit(device_id, visit_id)

    async def expire_visits(self) -> int:
        """Close visits whose test mode has timed out (test mode itself ends by its deadline)."""
        async with self.store.read() as tx:  # most sweeps find none: no write transaction for them
            if not await sql.any_visit_timed_out(tx, self.clock()):
                return 0

        async def work(tx: Tx, post: PostCommit) -> int:
            now = self.clock()
            rows = await sql.visits_timed_out(tx, now, 100)
            for visit in rows:
                await self._close_visit(tx, post, visit, VisitAction.TIME_OUT, "system", now)
            return len(rows)

        n: int = await self._transaction(work)
        return n

    async def _close_visit(
        self,
        tx: Tx,
        post: PostCommit,
        visit: Row,
        action: VisitAction,
        actor: str,
        now: float,
        *,
        note: str | None = None,
    ) -> None:
        """End a visit in progress by ``action``: its summary stored, test mode off, test alerts resolved."""
        reason = next_state(state_of(visit), action)
        checklist = json.loads(visit["checklist"])
        checks = await sql.visit_checks(tx, int(visit["id"]))
        summary = summary_of(visit, checklist, len(checks), reason, now)
        await sql.close_visit(tx, int(visit["id"]), now, reason.value, note, _j(summary))
        await sql.end_test_mode(tx, visit["device_id"], visit["ends_at"])
        for alert in await sql.raised_test_alerts(tx, visit["device_id"]):
            await self.store.alerts.system_resolve(
                tx, post, alert, Outcome.TEST, f"commissioning visit {visit['id']} {reason}", now
            )
        await self._log(
            tx,
            actor,
            Source.SYSTEM if actor == "system" else Source.API,
            "visit_closed",
            f"device:{visit['device_id']}",
            {"visit_id": visit["id"], **summary},
            now,
        )

    async def _record_test(self, tx: Tx, ev: DeviceEvent, alert_id: int | None) -> None:
        visit = await sql.visit_in_progress(tx, ev.device_id)
        if visit is None:
            return
        checklist = json.loads(visit["checklist"])
        wanted = ev.data.get("peripheral") or ev.data.get("peripheral_id")
        match = match_press(checklist, ev.type.value, wanted)
        at = ev.received_at.timestamp()
        if match is not None:
            match.update(
                confirmed_at=at, event_id=ev.event_id, alert_id=None if alert_id is None else str(alert_id)
            )
            await sql.save_checklist(tx, int(visit["id"]), _j(checklist))
        await sql.record_check(
            tx,
            int(visit["id"]),
            ev.event_id,
            ev.type.value,
            match["peripheral_id"] if match else wanted,
            alert_id,
            at,
        )

    # -- remote configuration --------------------------------------------------------------------
    async def request_config(
        self, device_id: str, settings: UnitSettings, *, actor: str, source: str
    ) -> dict[str, Any]:
        """Queue a ``configure`` command with the next version; older pending versions are superseded."""
        values = settings.model_dump(mode="json", exclude_none=True)
        if not values:
            raise InvalidRequest("settings: give at least one setting to change")

        async def work(tx: Tx, post: PostCommit) -> None:
            row = await self._device_row(tx, device_id)
            if row["status"] != "active" or row["kind"] not in UNIT_KINDS:
                raise Conflict(f"device {device_id!r} is not an active unit; only units take settings")
            version = int(row["config_version"]) + 1
            now = self.clock()
            await self._supersede_configs(tx, device_id, version, now)
            cmd_id = await self.store.outbox.add_command(
                tx,
                post,
                row["channel"],
                device_id,
                "configure",
                {"version": version, "settings": values},
                None,
                now,
            )
            await sql.insert_config(tx, device_id, version, _j(values), actor, now, cmd_id)
            await self._log(
                tx,
                actor,
                source,
                "config_requested",
                f"device:{device_id}",
                {"version": version, "settings": values},
                now,
            )

        await self._transaction(work)
        return await self.config_status(device_id)

    async def _supersede_configs(self, tx: Tx, device_id: str, version: int | None, now: float) -> None:
        for p in await sql.pending_configs(tx, device_id):
            why = f"superseded by version {version}" if version else "device retired"
            await sql.supersede_config(tx, device_id, p["version"], p["cmd_id"], why, now)

    async def config_status(self, device_id: str) -> dict[str, Any]:
        async with self.store.read() as tx:
            row = await self._device_row(tx, device_id)
            versions = await sql.config_history(tx, device_id, 20)
        history = []
        for v in versions:
            history.append(
                {
                    "version": int(v["version"]),
                    "state": config_state(v).value,
                    "settings": json.loads(v["settings"]),
                    "requested_by": v["requested_by"],
                    "requested_at": iso(v["requested_at"]),
                    "applied_at": iso(v["applied_at"]),
                    "attempts": v["attempts"],
                    "last_error": v["last_error"],
                }
            )
        return {
            "device_id": device_id,
            "version": int(row["config_version"]),
            "applied_version": int(row["config_applied_version"]),
            "pending": int(row["config_version"]) > int(row["config_applied_version"]),
            "history": history,
        }

    async def _config_result(self, tx: Tx, ev: DeviceEvent, device: Row) -> None:
        cmd_id = ev.data.get("cmd_id")
        if not isinstance(cmd_id, str):
            return
        config = await sql.config_by_command(tx, ev.device_id, cmd_id)
        if config is None or config["applied_at"] is not None:
            return
        now = ev.received_at.timestamp()
        if ev.data.get("ok") is False:
            await self._log(
                tx,
                f"device:{ev.device_id}",
                Source.DEVICE,
                "config_refused",
                f"device:{ev.device_id}",
                {"version": config["version"], "data": ev.data},
                now,
            )
            return
        version = int(config["version"])
        settings = json.loads(config["settings"])
        interval = settings.get("heartbeat_interval_s", device["heartbeat_interval_s"])
        due = device["heartbeat_due_at"]
        if due is not None and interval != device["heartbeat_interval_s"]:
            grace = (
                self.default_grace_s if device["heartbeat_grace_s"] is None else device["heartbeat_grace_s"]
            )
            due = now + interval + grace
        await sql.apply_config(tx, ev.device_id, version, interval, due, now)
        await self._log(
            tx,
            f"device:{ev.device_id}",
            Source.DEVICE,
            "config_applied",
            f"device:{ev.device_id}",
            {"version": version},
            now,
        )

    # -- credentials -----------------------------------------------------------------------------
    async def store_credential(self, device_id: str, password_hash: str, *, actor: str, source: str) -> None:
        async def work(tx: Tx, post: PostCommit) -> None:
            row = await self._device_row(tx, device_id)
            if row["status"] != "active" or row["kind"] not in UNIT_KINDS:
                raise Conflict(f"device {device_id!r} is not an active unit; only units get MQTT credentials")
            now = self.clock()
            await sql.save_credential(tx, device_id, password_hash, actor, now)
            await self._log(tx, actor, source, "credential_issued", f"device:{device_id}", {}, now)

        await self._transaction(work)

    async def active_credentials(self) -> list[tuple[str, str]]:
        """``(device_id, mosquitto hash)`` of every active unit that holds a credential."""
        async with self.store.read() as tx:
            rows = await sql.active_credentials(tx)
        return [(r["device_id"], r["password_hash"]) for r in rows]

    # -- heartbeat supervision -------------------------------------------------------------------
    async def due_heartbeats(self, now: float, limit: int) -> list[Row]:
        """Units whose heartbeat deadline has passed, oldest first (an index range scan)."""
        async with self.store.read() as tx:
            return await sql.due_heartbeats(tx, now, limit)

    # -- the store event hook --------------------------------------------------------------------
    async def on_event(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row | None, alert_id: int | None
    ) -> None:
        """Runs in the ingest transaction for each newly stored event."""
        if device is None:
            return
        if ev.source == "system":
            if ev.type is EventType.NO_HEARTBEAT:
                await self._no_heartbeat_raised(tx, post, ev, device, alert_id)
            return
        received = ev.received_at.timestamp()
        if device["kind"] in UNIT_KINDS:  # anything from the unit proves it is alive
            await sql.set_heartbeat_due(tx, ev.device_id, self._due(device, received))
        if ev.type is EventType.CMD_RESULT:
            await self._config_result(tx, ev, device)
        if ev.test and device["test_mode_until"] and device["test_mode_until"] > received:
            await self._record_test(tx, ev, alert_id)

    async def on_events(self, tx: Tx, post: PostCommit, stored: Sequence[Stored]) -> None:
        """:meth:`on_event`'s batch form (PostgreSQL's set-based ingest): the units' new heartbeat
        deadlines in one statement; a system event, a command result or a test event goes through
        :meth:`on_event` on its own."""
        due: dict[str, float | None] = {}
        for item in stored:
            ev, device = item.event, item.device
            if device is None:
                continue
            received = ev.received_at.timestamp()
            in_test = ev.test and device["test_mode_until"] and device["test_mode_until"] > received
            if ev.source == "system" or ev.type is EventType.CMD_RESULT or in_test:
                await self.on_event(tx, post, ev, device, item.alert_id)
            elif device["kind"] in UNIT_KINDS:
                due[ev.device_id] = self._due(device, received)
        await sql.set_heartbeats_due(tx, due)

    async def _no_heartbeat_raised(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row, alert_id: int | None
    ) -> None:
        # The core marks every stored event as "seen"; a silent unit was not seen, so put that back.
        await sql.unsee(tx, ev.device_id, device["last_seen_at"], device["online"])
        due = ev.data.get("due_at")
        current = device["heartbeat_due_at"]
        if alert_id is not None and isinstance(due, (int, float)) and current is not None and current > due:
            # A heartbeat arrived between the sweep and this commit: the alarm is already void.
            await sql.set_heartbeat_due(tx, ev.device_id, current)
            alert = await alert_row(tx, alert_id)
            if alert is not None and alert["state"] == "raised":
                await self.store.alerts.system_resolve(
                    tx,
                    post,
                    alert,
                    Outcome.CLEARED_BY_DEVICE,
                    "a heartbeat arrived as the alarm was raised",
                    self.clock(),
                )


__all__ = ["DeviceKind", "ImportAborted", "ImportReport", "Registry"]
