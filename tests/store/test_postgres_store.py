"""The store contract on both backends (``store_url``: SQLite and the real PostgreSQL), and what only
PostgreSQL does: advisory-locked migrations, SKIP LOCKED claims, LISTEN/NOTIFY across nodes, and two
nodes storing the same event at the same moment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from harness import eventually, postgres_database
from prometheus_client import generate_latest

from alarm_centre.alerts.model import AlertChange
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from alarm_centre.store.ingest import Ingest
from alarm_centre.store.postgres import DEVICE_LOCK_SPACE, PostgresStore, translate
from alarm_centre.store.schema import all_migrations, statements
from bridge.metrics import BridgeMetrics
from devices.events import DeviceEvent
from devices.vocabulary import EventType


def event(device_id: str, kind: str = "pendant", event_id: str | None = None) -> DeviceEvent:
    return DeviceEvent(
        device_id=device_id,
        event_id=event_id or uuid.uuid4().hex[:16],
        type=EventType(kind),
        received_at=datetime.now(UTC),
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    async with open_store(store_url) as opened:
        yield opened


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


class Heard:
    """A store listener that records every change it is told about."""

    def __init__(self) -> None:
        self.changes: list[AlertChange] = []

    def __call__(self, changes: Sequence[AlertChange]) -> None:
        self.changes.extend(changes)

    def ids(self, action: str = "raised") -> list[str]:
        return [c.alert_id for c in self.changes if c.action == action]


def test_placeholders_translate_outside_quotes() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b IN (?, ?)") == (
        "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"
    )
    assert translate("SELECT '?', 'it''s ?', \"odd?col\" FROM t WHERE x = ?") == (
        "SELECT '?', 'it''s ?', \"odd?col\" FROM t WHERE x = $1"
    )
    assert translate("SELECT 1 -- what?\nWHERE y = ?") == "SELECT 1 -- what?\nWHERE y = $1"
    assert translate("SELECT 1") == "SELECT 1"


def test_migrations_split_on_semicolons_outside_dollar_quotes() -> None:
    """A PostgreSQL function's body (``$$ ... $$``) is one statement, its semicolons included; a
    migration with no text for a dialect has no statements there."""
    body = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; RETURN 2; END $$"
    assert statements(f"CREATE TABLE a (x {{real}});\n{body};\nSELECT 1;", "postgresql") == [
        "CREATE TABLE a (x DOUBLE PRECISION)",
        body,
        "SELECT 1",
    ]
    assert statements("SELECT 1; SELECT 2", "sqlite") == ["SELECT 1", "SELECT 2"]
    assert statements({"postgresql": body}, "sqlite") == []
    with pytest.raises(ValueError, match="not paired"):
        statements("SELECT $$ unclosed; SELECT 1", "postgresql")


async def test_a_unit_another_node_is_storing_waits_and_the_rest_of_its_batch_does_not(pg_url: str) -> None:
    """The batch's start claims each unit without waiting: a unit whose lock another node holds is
    left out, the rest of the batch commits, and that unit's event is stored once the lock is free."""
    async with PostgresStore(pg_url) as store:
        heard = Heard()
        committed = asyncio.Event()

        def listener(changes: Sequence[AlertChange]) -> None:
            heard(changes)
            committed.set()

        store.add_listener(listener)
        other_node = await asyncpg.connect(pg_url)
        try:
            held = other_node.transaction()
            await held.start()
            await other_node.execute("SELECT pg_advisory_xact_lock($1, hashtext('held'))", DEVICE_LOCK_SPACE)
            batch = [event("held", "mains_fail"), event("free", "mains_fail")]
            storing = asyncio.create_task(store.ingest(batch))
            async with asyncio.timeout(20):
                await committed.wait()
            assert not storing.done(), "the held unit's event waits for the lock"
            assert await store.event_count() == 1
            await held.commit()
            async with asyncio.timeout(20):
                results = await storing
        finally:
            await other_node.close()
        assert [r.result for r in results] == ["accepted", "accepted"]
        assert await store.event_count() == 2
        assert len(heard.ids()) == 2


async def test_ingest_duplicate_and_join(store: AlertStore) -> None:
    first = await store.ingest(
        [event("u1", "pendant", "e1"), event("u1", "fall", "e2"), event("u2", "low_battery")]
    )
    assert [r.result for r in first] == ["accepted"] * 3
    assert first[0].alert_id == first[1].alert_id, "a second help event joins the open alert"
    again = await store.ingest([event("u1", "pendant", "e1")])
    assert again[0].result == "duplicate" and again[0].alert_id == first[0].alert_id
    alert, timeline = await store.get_alert(str(first[0].alert_id))
    assert alert.repeat_count == 1 and [t.action for t in timeline][:2] == ["raised", "repeat"]
    alerts, cursor = await store.alerts.list_alerts(state="open", limit=1)
    assert alerts[0].id == first[0].alert_id and cursor is not None
    more, _ = await store.alerts.list_alerts(state="open", limit=10, cursor=cursor)
    assert [a.type for a in more] == ["low_battery"]
    assert await store.event_count() == 3


async def test_lifecycle_and_outbox_claims(store: AlertStore) -> None:
    [result] = await store.ingest([event("u3", "mains_fail")])
    acked = await store.acknowledge(str(result.alert_id), actor="alice", source="api")
    assert acked.state == "acknowledged"
    resolved = await store.resolve(
        str(result.alert_id), outcome="resident_ok", note=None, actor="alice", source="api"
    )
    assert resolved.state == "resolved"
    await store.devices.upsert_device("u4", "gsm_unit")
    await store.ingest([event("u4", "pendant")])
    claimed = await store.outbox.claim()
    assert [item.payload["cmd"] for item in claimed] == ["call_centre"]
    assert await store.outbox.claim() == [], "a claimed item is leased, not handed out again"
    assert await store.outbox.pending() == 1
    await store.probe_write()


async def test_migrations_are_safe_from_two_nodes_at_once(pg_url: str) -> None:
    a, b = PostgresStore(pg_url, listen=False), PostgresStore(pg_url, listen=False)
    await asyncio.gather(a.__aenter__(), b.__aenter__())
    try:
        async with a.read() as tx:
            rows = await tx.fetchall("SELECT version FROM schema_version ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _ in all_migrations()]
    finally:
        await asyncio.gather(a.__aexit__(None, None, None), b.__aexit__(None, None, None))


async def test_two_nodes_never_claim_the_same_outbox_item(pg_url: str) -> None:
    async with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        for n in range(60):
            await a.devices.upsert_device(f"c{n}", "gsm_unit")
        await a.ingest([event(f"c{n}", "pendant") for n in range(60)])
        claims = await asyncio.gather(*(node.outbox.claim(limit=7) for node in (a, b) for _ in range(6)))
        ids = [item.id for claim in claims for item in claim]
        assert len(ids) == len(set(ids)) == 60, "every item claimed, none twice"


async def test_every_node_hears_every_change_once(pg_url: str) -> None:
    async with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        heard_a, heard_b = Heard(), Heard()
        a.add_listener(heard_a)
        b.add_listener(heard_b)
        results = await a.ingest([event(f"n{n}", "mains_fail") for n in range(400)])  # > one NOTIFY payload
        expected = sorted(str(r.alert_id) for r in results)

        async def b_heard_all() -> bool:
            return len(heard_b.ids()) >= 400

        await eventually(b_heard_all)
        [mine] = await b.ingest([event("n-b", "pendant")])

        async def a_heard_b() -> bool:
            return str(mine.alert_id) in heard_a.ids()

        await eventually(a_heard_b)
        # A last change from each node: listeners get notifications in commit order, so once both have
        # heard both markers, any double delivery of the changes before them has arrived too.
        [marker_a] = await a.ingest([event("n-mark-a", "pendant")])
        [marker_b] = await b.ingest([event("n-mark-b", "pendant")])
        markers = {str(marker_a.alert_id), str(marker_b.alert_id)}

        async def both_heard_the_markers() -> bool:
            return markers <= set(heard_a.ids()) and markers <= set(heard_b.ids())

        await eventually(both_heard_the_markers)
        everything = sorted([*expected, str(mine.alert_id), *markers])
        assert sorted(heard_a.ids()) == everything, "each change once on the node that made it"
        assert sorted(heard_b.ids()) == everything, "and once on every other node"


async def test_same_event_on_two_nodes_at_once_is_stored_once(pg_url: str) -> None:
    async with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        events = [event(f"d{n}", "pendant", f"same-{n}") for n in range(50)]
        on_a, on_b = await asyncio.gather(a.ingest(events), b.ingest(list(reversed(events))))
        on_b.reverse()
        for ra, rb in zip(on_a, on_b, strict=True):
            assert {ra.result, rb.result} == {"accepted", "duplicate"}, (ra, rb)
            assert ra.alert_id == rb.alert_id
        assert await a.event_count() == 50


async def test_a_poisoned_event_is_rejected_and_its_batch_is_kept(
    store: AlertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: one event's handling raises (a restore, handled on its own on every store). The
    batch is retried event by event, so the others are stored and only that one is rejected; nothing
    half-done of it remains. (A raise failing in a set-based batch: tests/store/test_set_based_raise.py.)"""
    real = Ingest._event_effect

    async def faulty(self: Ingest, tx, post, ev, device, test, now):  # type: ignore[no-untyped-def]
        if ev.device_id == "poison":
            await tx.execute(
                "INSERT INTO alert_log (alert_id, at, action, actor, source) "
                "VALUES (0, 0, 'half-done', 'x', 'x')"
            )
            raise RuntimeError("injected")
        return await real(self, tx, post, ev, device, test, now)

    monkeypatch.setattr(Ingest, "_event_effect", faulty)
    batch = [event("good-1"), event("poison", "mains_restored"), event("good-2")]
    results = await store.ingest(batch)
    assert [r.result for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1].error == "internal error: RuntimeError"
    assert await store.event_count() == 2
    async with store.read() as tx:
        half = await tx.fetchone("SELECT COUNT(*) AS n FROM alert_log WHERE action = 'half-done'")
    assert half is not None and half["n"] == 0


async def test_a_mixed_batch_is_stored_exactly_once(store: AlertStore) -> None:
    """New events, repeats of events in the same batch and of earlier batches, and an event joining an
    open alert, in one batch: each stored once, each answered with the alert it belongs to."""
    earlier = await store.ingest([event("m1", "pendant", "e1")])
    help_alert = earlier[0].alert_id
    batch = [
        event("m1", "pendant", "e1"),  # a repeat of an earlier batch
        event("m2", "mains_fail", "n1"),  # new
        event("m2", "mains_fail", "n1"),  # a repeat within this batch
        event("m1", "fall", "e2"),  # new, joins the open call for help
        event("m3", "low_battery", "x1"),  # new
        event("m1", "fall", "e2"),  # a repeat within this batch
    ]
    results = await store.ingest(batch)
    assert [r.result for r in results] == [
        "duplicate",
        "accepted",
        "duplicate",
        "accepted",
        "accepted",
        "duplicate",
    ]
    assert results[0].alert_id == help_alert and results[3].alert_id == help_alert
    assert results[5].alert_id == help_alert
    assert results[2].alert_id == results[1].alert_id is not None
    assert len({results[1].alert_id, results[4].alert_id, help_alert}) == 3
    assert await store.event_count() == 4
    alert, timeline = await store.get_alert(str(help_alert))
    assert alert.repeat_count == 1 and [t.action for t in timeline] == ["raised", "repeat"]
    async with store.read() as tx:
        linked = await tx.fetchall("SELECT event_id, alert_id FROM events ORDER BY event_id")
    assert {r["event_id"]: str(r["alert_id"]) for r in linked} == {
        "e1": help_alert,
        "e2": help_alert,
        "n1": results[1].alert_id,
        "x1": results[4].alert_id,
    }


async def test_an_event_postgresql_cannot_hold_fails_alone(store: AlertStore) -> None:
    """Bad input in one event (a NUL character, which PostgreSQL text cannot hold) rejects that event
    only; the batch around it is stored."""
    poisoned = DeviceEvent(
        device_id="nul",
        event_id="p\x001",
        type=EventType.FALL,
        received_at=datetime.now(UTC),
    )
    results = await store.ingest([event("ok-1"), poisoned, event("ok-2")])
    if store.dialect == "sqlite":  # SQLite holds it
        assert [r.result for r in results] == ["accepted"] * 3
    else:
        assert [r.result for r in results] == ["accepted", "rejected", "accepted"]
        assert results[1].error == "internal error: InvalidRequest"
        assert await store.event_count() == 2


async def _write_trips(store: PostgresStore, events: list[DeviceEvent]) -> int:
    before = store.round_trips.total
    await store.ingest(events)
    return store.round_trips.total - before


async def test_a_batch_of_repeats_costs_the_same_round_trips_whatever_its_size(pg_url: str) -> None:
    """Repeats joining open alerts, and events already stored (a unit retrying unacked events), are
    settled set-based: a batch of 10 and one of 500 cost the same statements."""
    async with PostgresStore(pg_url) as store:
        raised = await store.ingest([event(f"r{n}", "mains_fail", f"first{n}") for n in range(500)])
        small = [event(f"r{n}", "mains_fail", f"again{n}") for n in range(10)]
        large = [event(f"r{n}", "mains_fail", f"more{n}") for n in range(500)]
        joining_small, joining_large = await _write_trips(store, small), await _write_trips(store, large)
        # BEGIN, the batch's start, the repeats, the events' links, the notification, COMMIT.
        assert joining_small == joining_large == 6
        again_small, again_large = await _write_trips(store, small), await _write_trips(store, large)
        assert again_small == again_large == 3  # BEGIN, the batch's start, COMMIT
        assert await store.event_count() == 1010
        alert, timeline = await store.get_alert(str(raised[3].alert_id))
        assert alert.repeat_count == 2
        assert [t.action for t in timeline] == ["raised", "repeat", "repeat"]
        assert [t.detail["event_id"] for t in timeline[1:]] == ["again3", "more3"]
        alert, timeline = await store.get_alert(str(raised[30].alert_id))
        assert alert.repeat_count == 1 and [t.action for t in timeline] == ["raised", "repeat"]


async def test_repeats_and_raises_interleaved_keep_every_timeline_in_order(pg_url: str) -> None:
    """In one batch: a repeat, a raise, a restore that clears an alert, then a repeat of the cleared
    type (which must raise anew, not join the cleared alert) and a repeat of the new alert."""
    async with PostgresStore(pg_url) as store:
        first = await store.ingest([event("k1", "mains_fail", "a"), event("k2", "low_battery", "b")])
        batch = [
            event("k2", "low_battery", "c"),  # joins k2's alert
            event("k3", "mains_fail", "d"),  # raises
            event("k1", "mains_restored", "e"),  # clears k1's alert
            event("k4", "mains_fail", "f"),  # raises
        ]
        results = await store.ingest(batch)
        assert [r.result for r in results] == ["accepted"] * 4
        assert results[0].alert_id == first[1].alert_id
        assert results[2].alert_id == first[0].alert_id
        later = await store.ingest([event("k1", "mains_fail", "g"), event("k3", "mains_fail", "h")])
        assert later[0].alert_id not in (first[0].alert_id, None), "a cleared alert is not joined"
        assert later[1].alert_id == results[1].alert_id
        cleared, timeline = await store.get_alert(str(first[0].alert_id))
        assert cleared.state == "resolved" and cleared.repeat_count == 0
        joined, timeline = await store.get_alert(str(first[1].alert_id))
        assert joined.repeat_count == 1 and [t.action for t in timeline] == ["raised", "repeat"]


async def test_storing_new_events_costs_fewer_round_trips_per_event(pg_url: str) -> None:
    """A set-based batch: claiming, recording and reading the units of 200 new alerts, and raising
    them, costs a few statements in all (with every feature's hooks: tests/store/test_set_based_raise.py)."""
    async with PostgresStore(pg_url) as store:
        trips = await _write_trips(store, [event(f"t{n}", "mains_fail") for n in range(200)])
        assert trips <= 15, trips


def test_round_trips_are_exported_as_a_counter() -> None:
    metrics = BridgeMetrics("n1")
    assert b"telecare_store_round_trips_total" not in generate_latest(metrics.registry)
    metrics.count_round_trips(lambda: {"write": 12, "read": 3})
    text = generate_latest(metrics.registry).decode()
    assert 'telecare_store_round_trips_total{kind="write"} 12.0' in text
    assert 'telecare_store_round_trips_total{kind="read"} 3.0' in text


async def test_a_node_hears_other_nodes_again_after_its_listening_connection_dies(pg_url: str) -> None:
    """The LISTEN connection is killed on the server: the node reconnects and hears the next change."""
    import asyncpg

    async with PostgresStore(pg_url) as a, PostgresStore(pg_url) as b:
        heard = Heard()
        b.add_listener(heard)
        [first] = await a.ingest([event("l1")])
        await eventually(lambda: _has(heard, str(first.alert_id)))
        admin = await asyncpg.connect(pg_url)
        try:
            killed = await admin.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed == 2, "both nodes' listening connections"

        async def reconnected() -> bool:
            [later] = await a.ingest([event(f"l-{uuid.uuid4().hex[:6]}")])
            for _ in range(20):
                if str(later.alert_id) in heard.ids():
                    return True
                await asyncio.sleep(0.05)
            return False

        await eventually(reconnected)


async def _has(heard: Heard, alert_id: str) -> bool:
    return alert_id in heard.ids()
