"""A batch of raises written set-based on PostgreSQL keeps every per-event guarantee.

The same batches go through three stores with every feature's hooks installed (escalation, floods,
DC-09 forwarding, the registry, in-band call-backs): PostgreSQL storing set-based, PostgreSQL made to
store event by event (the per-event path), and SQLite. What they leave -- alerts, timelines, escalation
steps, incidents, forwards, outbox commands, event links, units' deadlines, the answers -- must be the
same. Beside that: exactly once under two nodes at once, a poisoned event failing alone, repeats joining
open alerts within a batch and across batches, and statements per batch that do not grow with it.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clock import SteppedClock
from harness import eventually, postgres_database

from alarm_centre.alerts.intake import IngestResult
from alarm_centre.alerts.model import AlertChange
from alarm_centre.escalation.engine import Escalation, EscalationSettings
from alarm_centre.escalation.policy import PolicyStep
from alarm_centre.escalation.states import StepAction
from alarm_centre.floods.grouping import FloodGrouper
from alarm_centre.floods.model import FloodRules
from alarm_centre.forwarding.hooks import ForwardHooks
from alarm_centre.host import HookOrder
from alarm_centre.registry.service import Registry
from alarm_centre.store.base import AlertStore
from alarm_centre.store.ingest_sets import BatchStart
from alarm_centre.store.postgres import PostgresStore
from alarm_centre.store.sqlite import SqliteStore
from alarm_centre.store.tx import PostCommit, Raised, Row, Tx
from devices.events import DeviceEvent
from devices.vocabulary import EventType, restored_data

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class EventByEvent(PostgresStore):
    """PostgreSQL made to store each event on its own: the per-event path, to compare with."""

    async def start_batch(self, tx: Tx, events: Sequence[DeviceEvent]) -> BatchStart | None:  # type: ignore[override]
        return None


def ev(
    device_id: str,
    kind: str,
    event_id: str,
    at_s: float,
    *,
    source: str = "mqtt",
    test: bool = False,
    data: dict[str, Any] | None = None,
    ts_offset_s: float | None = None,
) -> DeviceEvent:
    received = T0 + timedelta(seconds=at_s)
    return DeviceEvent(
        device_id=device_id,
        event_id=event_id,
        type=EventType(kind),
        received_at=received,
        ts=None if ts_offset_s is None else received + timedelta(seconds=ts_offset_s),
        source=source,
        test=test,
        data=data or {},
    )


class Heard:
    def __init__(self) -> None:
        self.changes: list[AlertChange] = []

    def __call__(self, changes: Sequence[AlertChange]) -> None:
        self.changes.extend(changes)


async def with_features(store: AlertStore) -> Heard:
    """Every feature that hooks into the ingest transaction, as the bridge installs them."""
    clock = SteppedClock(T0.timestamp())
    escalation = Escalation(store, EscalationSettings(), clock=clock)
    store.add_raise_hook(escalation.on_raise, HookOrder.ESCALATION, escalation.on_raises)
    await escalation.sync_policies(
        {
            1: [PolicyStep(30, StepAction.HIGHLIGHT), PolicyStep(60, StepAction.SMS)],
            2: [PolicyStep(60, StepAction.HIGHLIGHT)],
            3: [PolicyStep(600, StepAction.HIGHLIGHT)],
        }
    )
    FloodGrouper(store, FloodRules(threshold=5, window_s=60.0)).install()
    forwarding = ForwardHooks(clock)
    store.add_raise_hook(forwarding.on_raise, HookOrder.FORWARDING, forwarding.on_raises)
    store.add_event_hook(forwarding.on_event, HookOrder.FORWARDING)
    Registry(store, clock=clock).install()
    store.outbox.in_band["scaip", "call_centre"] = {"status": "sent"}
    heard = Heard()
    store.add_listener(heard)
    return heard


async def registry(store: AlertStore) -> None:
    """Residents with units, an Echo, a SCAIP unit, and a unit in test mode."""
    for resident in ("ann", "bob", "cat", "dan"):
        await store.devices.upsert_resident(resident, resident.title())
    await store.devices.upsert_device("ann-unit", "gsm_unit", resident_id="ann")
    await store.devices.upsert_device("ann-echo", "alexa", resident_id="ann")
    await store.devices.upsert_device("bob-unit", "gsm_unit", resident_id="bob")
    await store.devices.upsert_device("cat-echo", "alexa", resident_id="cat")  # no unit: nobody to call
    await store.devices.upsert_device("dan-scaip", "ip_unit", resident_id="dan", channel="scaip")
    await store.devices.upsert_device("tester", "gsm_unit")
    for n in range(12):
        await store.devices.upsert_device(f"reg{n}", "gsm_unit")

    async def work(tx: Tx, post: PostCommit) -> None:
        await tx.execute("UPDATE residents SET dc09_account = 'A1234' WHERE id = 'bob'")
        await tx.execute("UPDATE devices SET test_mode_until = ? WHERE id = 'tester'", T0.timestamp() + 3600)

    await store.transaction(work)


def batches() -> list[list[DeviceEvent]]:
    """Batches that cross every path: raises, joins, duplicates, a flood reaching its threshold in the
    middle of a batch, restores and heartbeats between raises, help from a resident's two devices."""
    one = [
        ev("reg0", "mains_fail", "a1", 0),
        ev("u1", "mains_fail", "a2", 1),
        ev("ann-echo", "voice_help", "a3", 2, source="voice"),  # the resident's unit is told to call
        ev("ann-unit", "pendant", "a4", 3),  # the same resident: joins the help alert raised just before
        ev("reg1", "mains_fail", "a5", 4, ts_offset_s=900),  # its clock is a quarter of an hour ahead
        ev("reg2", "heartbeat", "a6", 5),
        ev("u1", "mains_fail", "a2", 1),  # a duplicate within the batch
        ev("cat-echo", "voice_help", "a7", 6, source="voice"),  # nobody to call back
        ev("dan-scaip", "fall", "a8", 7, source="scaip"),  # told to call in band
        ev("tester", "pendant", "a9", 8, test=True),  # a test
        ev("u2", "low_battery", "a10", 9, data={"level": 5}),
    ]
    two = [
        ev("u1", "mains_fail", "a2", 1),  # a duplicate of an earlier batch
        ev("reg3", "mains_fail", "b1", 20),
        ev("reg4", "mains_fail", "b2", 21),  # the fifth in the window: the flood becomes an incident
        ev("reg0", "mains_fail", "b3", 22),  # joins its open alert
        ev("reg5", "mains_fail", "b4", 23),  # joins the incident
        ev("reg1", "mains_restored", "b5", 24),  # clears reg1's alert, on its own
        ev("reg6", "mains_fail", "b6", 25),
        ev("u2", "low_battery", "b7", 26),  # joins
        ev("reg6", "heartbeat", "b8", 26),  # a unit's second event in the batch
        ev("bob-unit", "smoke", "b9", 27),  # forwarded with the resident's account
        ev("x9", "tamper", "b10", 28),
        ev("ann-unit", "fall", "b11", 29),  # joins the open help alert of an earlier batch
    ]
    silent = [ev("reg7", "no_heartbeat", "s1", 30, source="system", data={"due_at": T0.timestamp()})]
    three = [
        ev("reg7", "heartbeat", "c1", 40),  # clears the silent-unit alert
        ev("reg8", "heartbeat", "c2", 41),
        ev("reg9", "mains_fail", "c3", 42),
        ev("reg1", "mains_fail", "c4", 43),  # raises anew: its last one was cleared
        ev("bob-unit", "cancel", "c5", 44),  # the resident cancels on the unit
        ev("reg10", "mains_fail", "c6", 45),
        ev("reg11", "unknown_signal", "c7", 46, data={"protocol": "dc09", "code": "1999"}),
        ev("reg11", "restored", "c8", 47, data=restored_data(EventType.MAINS_FAIL)),
        *(ev(f"s{n}", "sensor_fault", f"d{n}", 48 + n) for n in range(7)),  # a flood opens mid-run
    ]
    return [one, two, silent, three]


def _rank(ids: Sequence[Any]) -> dict[Any, int]:
    return {v: n for n, v in enumerate(sorted(ids))}


_CMD_ID = re.compile(r"c[0-9a-f]{16}")


async def snapshot(store: AlertStore) -> dict[str, Any]:
    """What the store holds, with ids turned into ranks (serials differ between paths: PostgreSQL
    spends one on each insert that conflicts) and times the store's own clock wrote left out."""
    async with store.read() as tx:
        alerts = await tx.fetchall("SELECT * FROM alerts ORDER BY id")
        log = await tx.fetchall("SELECT * FROM alert_log ORDER BY id")
        steps = await tx.fetchall("SELECT * FROM escalation_steps ORDER BY alert_id, seq")
        incidents = await tx.fetchall("SELECT * FROM incidents ORDER BY id")
        forwards = await tx.fetchall("SELECT * FROM dc09_forwards ORDER BY alert_id, kind")
        outbox = await tx.fetchall("SELECT * FROM outbox ORDER BY alert_id, id")
        events = await tx.fetchall("SELECT * FROM events ORDER BY device_id, event_id")
        devices = await tx.fetchall("SELECT * FROM devices ORDER BY id")
    a = _rank([r["id"] for r in alerts])
    i = _rank([r["id"] for r in incidents])

    def text(value: str | None) -> Any:
        if value is None:
            return None
        data = json.loads(value)
        if isinstance(data, dict):
            if "incident_id" in data:
                data["incident_id"] = i[int(data["incident_id"])]
            if "alert_id" in data:
                data["alert_id"] = a[int(data["alert_id"])]
            if "cmd_id" in data:
                data["cmd_id"] = bool(_CMD_ID.fullmatch(data["cmd_id"]))
            if isinstance(data.get("args"), dict) and "alert_id" in data["args"]:
                data["args"]["alert_id"] = a[int(data["args"]["alert_id"])]
        return data

    def alert_of(value: Any) -> int | None:
        return None if value is None else a[int(value)]

    keep = ("device_id", "resident_id", "type", "priority", "state", "open_key", "raised_at", "outcome")
    flags = ("repeat_count", "test", "unregistered", "clock_skew")
    return {
        "alerts": [
            {
                **{k: r[k] for k in keep},
                **{k: int(r[k]) for k in flags},
                "data": text(r["data"]),
                "incident": None if r["incident_id"] is None else i[int(r["incident_id"])],
            }
            for r in alerts
        ],
        "timelines": {
            n: [
                (e["action"], e["actor"], e["source"], text(e["detail"]))
                for e in log
                if e["alert_id"] in a and a[e["alert_id"]] == n
            ]
            for n in a.values()
        },
        "steps": [
            (
                alert_of(s["alert_id"]),
                s["kind"],
                s["seq"],
                s["action"],
                json.loads(s["target"]),
                s["due_at"],
                s["state"],
            )
            for s in steps
        ],
        "incidents": [
            (r["type"], r["priority"], r["state"], r["opened_at"], r["closed_at"], r["closed_reason"])
            for r in incidents
        ],
        "forwards": [
            (
                alert_of(f["alert_id"]),
                f["kind"],
                f["event_type"],
                f["device_id"],
                f["account"],
                f["sequence"] == f["id"] % 9999 + 1,
            )
            for f in forwards
        ],
        "outbox": [
            (
                o["channel"],
                o["target"],
                alert_of(o["alert_id"]),
                text(o["payload"]),
                o["attempts"],
                o["done_at"] is None,
                text(o["result"]),
            )
            for o in outbox
        ],
        "events": [(e["device_id"], e["event_id"], e["type"], alert_of(e["alert_id"])) for e in events],
        "devices": [(d["id"], d["last_seen_at"], d["online"], d["heartbeat_due_at"]) for d in devices],
    }


def answers(results: list[IngestResult], ids: dict[Any, int]) -> list[tuple[str, int | None, str | None]]:
    return [(r.result, None if r.alert_id is None else ids[int(r.alert_id)], r.error) for r in results]


Ran = tuple[dict[str, Any], list[Any], list[tuple[int, str, int, str]], int]


async def run_all(store: AlertStore) -> Ran:
    """The batches through ``store``: what it holds, its answers, what listeners heard, and the
    statements the batches cost (PostgreSQL)."""
    await registry(store)
    heard = await with_features(store)
    before = store.round_trip_counts().get("write", 0)
    results = [await store.ingest(batch) for batch in batches()]
    trips = store.round_trip_counts().get("write", 0) - before
    shot = await snapshot(store)
    async with store.read() as tx:
        a = _rank([r["id"] for r in await tx.fetchall("SELECT id FROM alerts")])
    told = sorted((a[int(c.alert_id)], c.action, c.priority, c.state) for c in heard.changes)
    return shot, [answers(r, a) for r in results], told, trips


@asynccontextmanager
async def three_stores(tmp_path: Path) -> AsyncIterator[dict[str, AlertStore]]:
    async with AsyncExitStack() as stack:
        set_based = await stack.enter_async_context(
            PostgresStore(await stack.enter_async_context(postgres_database()))
        )
        one_by_one = await stack.enter_async_context(
            EventByEvent(await stack.enter_async_context(postgres_database()))
        )
        sqlite = await stack.enter_async_context(SqliteStore(tmp_path / "bridge.db"))
        yield {"set-based": set_based, "event by event": one_by_one, "sqlite": sqlite}


async def test_a_set_based_batch_leaves_what_event_by_event_leaves(tmp_path: Path) -> None:
    """Alerts, timelines, escalation steps, incidents, forwards, call-backs, links, units and answers:
    the same whether PostgreSQL writes a batch's raises together or one by one, and as on SQLite."""
    async with three_stores(tmp_path) as stores:
        ran = {name: await run_all(store) for name, store in stores.items()}
    reference, reference_answers, reference_told, one_by_one = ran["event by event"]
    # The scenario reaches what it is meant to (so the comparison is not of two empty stores).
    actions = {e[0] for timeline in reference["timelines"].values() for e in timeline}
    assert {
        "raised",
        "repeat",
        "grouped",
        "escalation_scheduled",
        "command_sent",
        "no_unit_to_call",
    } <= actions
    assert {"resident_cancelled", "resolved"} <= actions
    assert [(i[0], i[2]) for i in reference["incidents"]] == [
        ("mains_fail", "open"),
        ("sensor_fault", "open"),
    ]
    assert len(reference["forwards"]) >= 10 and any(f[4] == "A1234" for f in reference["forwards"])
    assert sum(1 for a in reference["alerts"] if a["incident"] is not None) >= 7
    for name in ("set-based", "sqlite"):
        shot, results, told, _ = ran[name]
        for part in reference:
            assert shot[part] == reference[part], (name, part)
        assert results == reference_answers, name
        assert told == reference_told, name
    trips = ran["set-based"][3]
    assert 0 < trips < one_by_one / 2, (trips, one_by_one)


async def test_a_flood_that_closed_is_closed_and_counted_anew(tmp_path: Path) -> None:
    """An open incident none of whose alerts is open (operators resolved them) is closed by the next
    alert of its type, which starts counting again: the same on both paths, within one batch."""
    async with three_stores(tmp_path) as stores:
        shots = {}
        for name, store in stores.items():
            await with_features(store)
            raised = await store.ingest([ev(f"f{n}", "mains_fail", f"x{n}", n) for n in range(5)])
            for result in raised:
                alert_id = str(result.alert_id)
                await store.acknowledge(alert_id, actor="op", source="api")
                await store.resolve(alert_id, outcome="resident_ok", note=None, actor="op", source="api")
            await store.ingest([ev(f"g{n}", "mains_fail", f"z{n}", 20 + n) for n in range(7)])
            shots[name] = await snapshot(store)
    reference = shots["event by event"]
    assert [(i[2], i[5]) for i in reference["incidents"]] == [
        ("closed", "all alerts closed"),
        ("open", None),
    ]
    assert shots["set-based"] == reference and shots["sqlite"] == reference


def unit_event(device_id: str, kind: str = "mains_fail", event_id: str | None = None) -> DeviceEvent:
    return DeviceEvent(
        device_id=device_id,
        event_id=event_id or uuid.uuid4().hex[:16],
        type=EventType(kind),
        received_at=datetime.now(UTC),
    )


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


async def test_two_nodes_storing_the_same_storm_store_each_event_once(pg_url: str) -> None:
    """Two nodes take the same storm of new alerts (each event delivered to both, in different orders,
    as a retry on the other node would be), plus calls for help from a resident's two devices split
    between the nodes: every event stored once and answered with the same alert on both, one alert
    per key, one open incident."""
    async with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        for store in (a, b):
            await with_features(store)
        for r in range(40):
            await a.devices.upsert_resident(f"r{r}", f"R{r}")
            await a.devices.upsert_device(f"r{r}-unit", "gsm_unit", resident_id=f"r{r}")
            await a.devices.upsert_device(f"r{r}-echo", "alexa", resident_id=f"r{r}")
        storm = [unit_event(f"n{k}", "mains_fail", f"e{k}") for k in range(300)]
        unit_help = [unit_event(f"r{r}-unit", "pendant", f"h{r}") for r in range(40)]
        echo_help = [unit_event(f"r{r}-echo", "voice_help", f"v{r}") for r in range(40)]
        on_a = [*storm, *unit_help]
        on_b = [*reversed(storm), *echo_help]

        async def in_batches(
            store: AlertStore, events: list[DeviceEvent]
        ) -> dict[tuple[str, str], IngestResult]:
            out: dict[tuple[str, str], IngestResult] = {}
            for start in range(0, len(events), 50):
                chunk = events[start : start + 50]
                for e, r in zip(chunk, await store.ingest(chunk), strict=True):
                    out[e.device_id, e.event_id] = r
            return out

        got_a, got_b = await asyncio.gather(in_batches(a, on_a), in_batches(b, on_b))
        for e in storm:
            ra, rb = got_a[e.device_id, e.event_id], got_b[e.device_id, e.event_id]
            assert {ra.result, rb.result} == {"accepted", "duplicate"}, (ra, rb)
            assert ra.alert_id == rb.alert_id is not None
        for r in range(40):
            pendant, voice = got_a[f"r{r}-unit", f"h{r}"], got_b[f"r{r}-echo", f"v{r}"]
            assert pendant.result == voice.result == "accepted"
            assert pendant.alert_id == voice.alert_id, "a resident's help is one alert, whichever node"
        assert await a.event_count() == 300 + 80
        async with a.read() as tx:
            per_key = await tx.fetchall("SELECT open_key, COUNT(*) AS n FROM alerts GROUP BY open_key")
            help_repeats = await tx.fetchall(
                "SELECT repeat_count FROM alerts WHERE type IN ('pendant', 'voice_help')"
            )
            incidents = await tx.fetchall("SELECT * FROM incidents WHERE state = 'open'")
            raised_logs = await tx.fetchone("SELECT COUNT(*) AS n FROM alert_log WHERE action = 'raised'")
            steps = await tx.fetchone("SELECT COUNT(*) AS n FROM escalation_steps")
        assert all(r["n"] == 1 for r in per_key) and len(per_key) == 340
        assert sorted(r["repeat_count"] for r in help_repeats) == [1] * 40
        assert len(incidents) == 1
        assert raised_logs is not None and raised_logs["n"] == 340
        assert steps is not None and steps["n"] == 300 + 40 * 2, "each alert's policy copied once"


async def test_a_poisoned_raise_fails_alone(pg_url: str) -> None:
    """A feature's raise hook fails on one alert of a set-based batch, after writing: the batch is
    stored again event by event, that event alone is rejected, and nothing it half wrote remains."""
    async with PostgresStore(pg_url) as store:
        await with_features(store)
        batch_forms: list[int] = []

        async def failing(tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
            if event.device_id == "poison":
                await tx.execute(
                    "INSERT INTO alert_log (alert_id, at, action, actor, source) "
                    "VALUES (?, 0, 'half-done', 'x', 'x')",
                    alert["id"],
                )
                raise RuntimeError("injected")

        async def failing_batch(tx: Tx, post: PostCommit, raised: Sequence[Raised]) -> None:
            batch_forms.append(len(raised))
            for item in raised:
                await failing(tx, post, item.alert, item.event)

        store.add_raise_hook(failing, HookOrder.FLOODS, failing_batch)
        batch = [unit_event("good-1"), unit_event("poison", "pendant"), unit_event("good-2", "fall")]
        results = await store.ingest(batch)
        assert batch_forms == [3], "the batch was tried set-based first"
        assert [r.result for r in results] == ["accepted", "rejected", "accepted"]
        assert results[1].error == "internal error: RuntimeError"
        assert await store.event_count() == 2
        async with store.read() as tx:
            half = await tx.fetchone("SELECT COUNT(*) AS n FROM alert_log WHERE action = 'half-done'")
            alerts = await tx.fetchall("SELECT device_id FROM alerts ORDER BY id")
        assert half is not None and half["n"] == 0
        assert [r["device_id"] for r in alerts] == ["good-1", "good-2"]


async def test_repeats_join_open_alerts_within_a_batch_and_across_batches(pg_url: str) -> None:
    """A key raised by one event of a batch is joined by a later one (a resident's Echo after the
    unit); in the next batch both join again, and a repeat of a cleared alert raises a new one."""
    async with PostgresStore(pg_url) as store:
        await with_features(store)
        await store.devices.upsert_resident("eve", "Eve")
        await store.devices.upsert_device("eve-unit", "gsm_unit", resident_id="eve")
        await store.devices.upsert_device("eve-echo", "alexa", resident_id="eve")
        first = await store.ingest(
            [
                unit_event("eve-unit", "pendant"),
                unit_event("m1", "mains_fail"),
                unit_event("eve-echo", "voice_help"),
                unit_event("m2", "mains_fail"),
            ]
        )
        assert first[0].alert_id == first[2].alert_id
        second = await store.ingest(
            [
                unit_event("eve-echo", "voice_help"),
                unit_event("m1", "mains_restored"),
                unit_event("eve-unit", "fall"),
                unit_event("m2", "mains_fail"),
            ]
        )
        assert second[0].alert_id == second[2].alert_id == first[0].alert_id
        assert second[1].alert_id == first[1].alert_id and second[3].alert_id == first[3].alert_id
        third = await store.ingest([unit_event("m1", "mains_fail")])
        assert third[0].alert_id not in (None, first[1].alert_id)
        help_alert, timeline = await store.get_alert(str(first[0].alert_id))
        assert help_alert.repeat_count == 3
        assert [t.action for t in timeline if t.action in ("raised", "repeat")] == [
            "raised",
            "repeat",
            "repeat",
            "repeat",
        ]
        m2, _ = await store.get_alert(str(first[3].alert_id))
        assert m2.repeat_count == 1
        outbox = await store.outbox.pending()
        assert outbox == 1, "one call-back for the resident's one help alert"


async def _write_trips(store: PostgresStore, events: list[DeviceEvent]) -> int:
    before = store.round_trips.total
    results = await store.ingest(events)
    assert all(r.result == "accepted" for r in results)
    return store.round_trips.total - before


async def test_a_batch_of_new_alerts_costs_the_same_statements_whatever_its_size(pg_url: str) -> None:
    """New alerts from registered units (the flood incident open, escalation and forwarding on), and
    heartbeats: a batch of 10 and one of 50 cost the same statements; a batch of heartbeats four."""
    async with PostgresStore(pg_url) as store:
        await with_features(store)
        for n in range(200):
            await store.devices.upsert_device(f"t{n}", "gsm_unit")
        await store.ingest([unit_event(f"t{n}") for n in range(100, 130)])  # the incident opens
        small = await _write_trips(store, [unit_event(f"t{n}") for n in range(10)])
        large = await _write_trips(store, [unit_event(f"t{n}") for n in range(10, 60)])
        assert small == large <= 16, (small, large)
        beats_small = await _write_trips(store, [unit_event(f"t{n}", "heartbeat") for n in range(130, 140)])
        beats_large = await _write_trips(store, [unit_event(f"t{n}", "heartbeat") for n in range(140, 190)])
        # BEGIN, the batch's start (one function: claims, events, units, seen, open alerts), the
        # heartbeat deadlines, COMMIT.
        assert beats_small == beats_large == 4, (beats_small, beats_large)
        help_small = await _write_trips(store, [unit_event(f"t{n}", "pendant") for n in range(60, 70)])
        help_large = await _write_trips(store, [unit_event(f"t{n}", "pendant") for n in range(70, 100)])
        assert help_small == help_large <= 20, (help_small, help_large)
        async with store.read() as tx:
            due = await tx.fetchone("SELECT COUNT(*) AS n FROM devices WHERE heartbeat_due_at IS NOT NULL")
        assert due is not None and due["n"] == 190, "every unit heard from has its next deadline"


async def test_a_call_for_help_is_stored_beside_a_batch_and_waits_only_for_its_own_unit(pg_url: str) -> None:
    """The intake on PostgreSQL stores calls for help alongside a batch of others in progress: a fall
    from another unit is stored while the batch is held open; a fall from a unit whose event that
    batch holds waits for the batch's commit (the unit lock), then is stored."""
    from alarm_centre.alerts.intake import GroupCommitter

    async with PostgresStore(pg_url) as store:
        heard = Heard()
        store.add_listener(heard)
        entered, release = asyncio.Event(), asyncio.Event()

        async def holding(tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
            if event.device_id == "busy" and event.type is EventType.MAINS_FAIL:
                entered.set()
                await release.wait()

        store.add_raise_hook(holding, HookOrder.FLOODS)
        async with GroupCommitter(store, help_alongside=True) as intake:
            batch = asyncio.create_task(intake.submit_many([unit_event("busy"), unit_event("other-1")]))
            async with asyncio.timeout(20):
                await entered.wait()
            async with asyncio.timeout(20):  # stored while the batch is held
                elsewhere = await intake.submit(unit_event("free", "fall"))
            assert elsewhere.result == "accepted"
            same_unit = asyncio.create_task(intake.submit(unit_event("busy", "fall")))
            release.set()
            stored = await batch
            fall = await same_unit
        assert fall.result == "accepted" and all(isinstance(r, IngestResult) for r in stored)
        raised = [(c.alert_id, c.priority) for c in heard.changes if c.action == "raised"]
        order = {alert_id: n for n, (alert_id, _) in enumerate(raised)}
        busy_mains = stored[0]
        assert isinstance(busy_mains, IngestResult)
        assert order[str(elsewhere.alert_id)] < order[str(busy_mains.alert_id)] < order[str(fall.alert_id)]


async def test_the_help_lane_stores_on_a_loop_of_its_own_and_tells_the_bridges_loop(pg_url: str) -> None:
    """PostgreSQL's lanes: a call for help stored on the help lane's own loop and thread (its hooks
    run there), answered on the caller's loop, and the listeners told on the store's own loop."""
    import threading

    async with PostgresStore(pg_url) as store:
        told: list[tuple[int, list[str]]] = []
        store.add_listener(lambda changes: told.append((threading.get_ident(), [c.action for c in changes])))
        hooked: list[int] = []

        async def where(tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
            hooked.append(threading.get_ident())

        store.add_raise_hook(where, HookOrder.ESCALATION)
        here = threading.get_ident()
        async with store.lanes() as lanes:
            lane = lanes.help
            assert lane is not None and lanes.others is not None
            [result] = await lane.ingest([unit_event("lane-unit", "fall")])
            assert result.result == "accepted"
            [again] = await lane.ingest([unit_event("lane-unit", "fall", "second")])
            assert again.alert_id == result.alert_id
        assert hooked and all(thread != here for thread in hooked), "stored on the lane's thread"

        async def both_told() -> bool:
            return len(told) == 2

        await eventually(both_told)  # the news handed back runs as a task on this loop
        assert [actions for _, actions in told] == [["raised"], ["repeat"]]
        assert {thread for thread, _ in told} == {here}, "listeners hear on the store's loop"
        alert, timeline = await store.get_alert(str(result.alert_id))
        assert alert.repeat_count == 1
