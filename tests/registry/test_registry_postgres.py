"""The registry's SQL on PostgreSQL: every store path (registry, import, commissioning, configuration,
credentials, supervision, retiring) on a fresh database. Skips locally without PostgreSQL, fails in CI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import postgres_database

from alarm_centre.alerts.intake import GroupCommitter
from alarm_centre.registry import store as sql
from alarm_centre.registry.service import Registry
from alarm_centre.registry.supervision import HeartbeatSupervisor
from alarm_centre.store import open_store
from alarm_centre.store.tx import Conflict, InvalidRequest
from devices.csv_yaml import parse_yaml
from devices.events import DeviceEvent
from devices.registry import Device, Resident, UnitSettings
from devices.vocabulary import EventType

SITE = """residents:
  - {id: r1, name: Ada, responders: [{name: Tom, phone: "+447700900123"}]}
devices:
  - {id: u1, kind: gsm_unit, resident_id: r1, imei: "490154203237518", heartbeat_interval_s: 60,
     heartbeat_grace_s: 0, peripherals: [{id: p1, type: pendant}]}
  - {id: u2, kind: ip_unit, resident_id: r1, heartbeat_interval_s: 60, heartbeat_grace_s: 0}
"""


async def test_registry_on_postgres() -> None:
    async with postgres_database() as url, open_store(url) as store, GroupCommitter(store) as intake:
        now = [datetime.now(UTC).timestamp()]
        registry = Registry(store, clock=lambda: now[0])
        registry.install()
        report = await registry.import_batch(
            parse_yaml(SITE), dry_run=True, update=False, actor="t", source="api"
        )
        assert not report.errors and not report.applied
        report = await registry.import_batch(
            parse_yaml(SITE), dry_run=False, update=False, actor="t", source="api"
        )
        assert report.applied and report.created == {"residents": 1, "devices": 2}
        await registry.create_resident(Resident(id="r2", name="Bob"), actor="t", source="api")
        await registry.create_device(Device(id="e1", kind="alexa"), actor="t", source="api")
        await registry.link("e1", "r2", actor="t", source="api")
        assert [d["id"] for d in await registry.list_devices(resident_id="r1")] == ["u1", "u2"]
        # Commissioning.
        await registry.start_visit("u1", installer="t", minutes=5)
        result = await intake.submit(DeviceEvent("u1", "t1", EventType.PENDANT, datetime.now(UTC), test=True))
        visit = await registry.visit("u1")
        assert visit["confirmed"] == 1 and visit["checklist"][0]["alert_id"] == result.alert_id
        visit = await registry.finish_visit("u1", actor="t")
        assert visit["summary"]["passed"]
        # Remote configuration, confirmed by the unit's cmd_result.
        status = await registry.request_config("u1", UnitSettings(volume=4), actor="t", source="api")
        async with store.read() as tx:
            cmd = await tx.fetchone("SELECT cmd_id FROM device_configs WHERE device_id = 'u1'")
        await intake.submit(
            DeviceEvent(
                "u1",
                "c1",
                EventType.CMD_RESULT,
                datetime.now(UTC),
                data={"cmd_id": cmd["cmd_id"], "ok": True},
            )
        )
        status = await registry.config_status("u1")
        assert status["applied_version"] == 1 and not status["pending"]
        # Credentials.
        await registry.store_credential("u1", "$7$101$x$y", actor="t", source="api")
        assert await registry.active_credentials() == [("u1", "$7$101$x$y")]
        # Supervision: u2 has been silent since registration.
        await intake.submit(
            DeviceEvent("u1", "hb1", EventType.HEARTBEAT, datetime.fromtimestamp(now[0] + 50, UTC))
        )
        now[0] += 61
        supervisor = HeartbeatSupervisor(registry, intake)
        assert await supervisor.sweep() == 1
        assert await supervisor.sweep() == 0
        # Retiring: refused with the open no_heartbeat alert, allowed once it is resolved by a heartbeat.
        try:
            await registry.retire("u2", actor="t", source="api")
        except Exception as exc:
            assert "open alerts" in str(exc)
        else:
            raise AssertionError("retire should have been refused")
        await intake.submit(DeviceEvent("u2", "hb2", EventType.HEARTBEAT, datetime.now(UTC)))
        body = await registry.retire("u1", actor="t", source="api", reason="done")
        assert body["status"] == "retired" and await registry.active_credentials() == []


async def test_concurrent_writes_of_one_key_name_the_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two installers create residents with one DC-09 account (or one resident id) at the same moment.

    Both checks run before either insert (a barrier holds the first check until the second has run), so
    the unique index refuses the later insert: the loser gets the registry's own 422/409 reason, not a
    500, and exactly one row is written."""
    async with postgres_database() as url, open_store(url) as store:
        registry = Registry(store)
        checks = {
            "resident_with_dc09_account": sql.resident_with_dc09_account,
            "resident_exists": sql.resident_exists,
        }
        barriers = {name: asyncio.Barrier(2) for name in checks}
        calls = dict.fromkeys(checks, 0)

        def held(name: str) -> Any:
            real = checks[name]

            async def check(*args: Any) -> Any:
                result = await real(*args)
                calls[name] += 1
                if calls[name] <= 2:  # the two first checks meet; the retry's own check runs alone
                    await barriers[name].wait()
                return result

            return check

        for name in checks:
            monkeypatch.setattr(sql, name, held(name))
        first = Resident(id="r1", name="Ada", dc09_account="ACC1")
        second = Resident(id="r2", name="Bob", dc09_account="ACC1")
        results = await asyncio.gather(
            registry.create_resident(first, actor="t", source="api"),
            registry.create_resident(second, actor="t", source="api"),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1 and isinstance(refused[0], InvalidRequest), results
        assert "ACC1 is already used by resident" in str(refused[0])
        calls["resident_exists"] = 0
        barriers["resident_exists"] = asyncio.Barrier(2)
        results = await asyncio.gather(
            registry.create_resident(Resident(id="r3", name="Cy"), actor="t", source="api"),
            registry.create_resident(Resident(id="r3", name="Di"), actor="t", source="api"),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1 and isinstance(refused[0], Conflict), results
        async with store.read() as tx:
            rows = await tx.fetchall("SELECT id FROM residents ORDER BY id")
        assert [r["id"] for r in rows] == ["r1", "r3"] or [r["id"] for r in rows] == ["r2", "r3"]
