"""The lane for help, end to end (issue 14): a call for help on the v1.1 ``alarm`` topic is acked and
stored; it is stored before a flood of technical events, also when it comes on ``event`` inside the
flood; and the live feed pushes it before the technical changes queued ahead of it, even while a page of
them is being read.

The committer and the feed are held busy with a gate (a fault hook around the real store), never by
timing: the assertions are about ORDER, never about how long anything took.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import pytest
from harness import (
    MOSQUITTO_HOST,
    MOSQUITTO_PORT,
    RunningBridge,
    eventually,
    make_config,
    postgres_database,
    running_bridge,
)

from alarm_centre.alerts.intake import IngestResult
from alarm_centre.alerts.model import Alert
from alarm_centre.store.postgres import CHANNEL, PostgresStore
from devices.events import DeviceEvent
from devices.mqtt_codec import encode_event
from devices.vocabulary import EventType
from simulators.unit import SimulatedUnit

pytestmark = pytest.mark.mosquitto

#: Events per transaction while a test holds the committer (smaller than the bridge's default, so the
#: flood spans several transactions without costing PostgreSQL thousands of round trips).
BATCH = 50


def unit_for(bridge: RunningBridge, device_id: str, **kw: Any) -> SimulatedUnit:
    host, port = bridge.broker
    return SimulatedUnit(
        device_id,
        host=host,
        port=port,
        topic_root=bridge.bridge.config.topic_root,
        retry_initial_s=kw.pop("retry_initial_s", 0.5),
        answer_commands=kw.pop("answer_commands", False),
        **kw,
    )


def technical(n: int, prefix: str = "t") -> list[DeviceEvent]:
    now = datetime.now(UTC)
    return [
        DeviceEvent(f"{prefix}{k:04d}", f"mf-{k}", EventType.MAINS_FAIL, received_at=now, source="test")
        for k in range(n)
    ]


class HeldCommits:
    """A gate in front of the store's ingest: the first batch holding a technical event waits until
    :meth:`release`; every committed batch is recorded, in commit order, as its event ids.

    On PostgreSQL the intake stores on loops and threads of its own (``store/pg_lanes.py``), so the
    gate is a thread-safe future and the test's loop is told through ``call_soon_threadsafe``."""

    def __init__(self, bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commits: list[list[str]] = []
        self.held = asyncio.Event()
        self._gate: concurrent.futures.Future[None] = concurrent.futures.Future()
        here = asyncio.get_running_loop()
        store = bridge.store
        real: Callable[[Sequence[DeviceEvent]], Awaitable[list[IngestResult]]] = store.ingest

        async def gated(events: Sequence[DeviceEvent]) -> list[IngestResult]:
            if not self._gate.done() and any(e.type is EventType.MAINS_FAIL for e in events):
                here.call_soon_threadsafe(self.held.set)
                await asyncio.wrap_future(self._gate)
            results = await real(events)
            self.commits.append([e.event_id for e in events])
            return results

        monkeypatch.setattr(store, "ingest", gated)
        monkeypatch.setattr(bridge.bridge.intake, "_max_other_batch", BATCH)

    async def wait_held(self) -> None:
        async with asyncio.timeout(20):
            await self.held.wait()

    def release(self) -> None:
        self._gate.set_result(None)

    def position(self, event_id: str) -> int:
        """Which transaction (0 = first) stored ``event_id``."""
        return next(n for n, ids in enumerate(self.commits) if event_id in ids)


async def test_a_fall_on_the_alarm_topic_is_acked_and_stored(bridge: RunningBridge) -> None:
    await bridge.store.devices.upsert_resident("res-1", "Ada")
    await bridge.store.devices.upsert_device("unit-1", "gsm_unit", resident_id="res-1")
    async with unit_for(bridge, "unit-1") as unit:
        assert unit.topic_for("fall").endswith("/unit-1/alarm")
        assert unit.topic_for("low_battery").endswith("/unit-1/event")
        ack = await unit.send("fall", event_id="fall-1", timeout=20)
        assert ack["result"] == "accepted"
        alert, _ = await bridge.store.get_alert(ack["alert_id"])
        assert (alert.device_id, alert.resident_id, alert.type, alert.priority) == (
            "unit-1",
            "res-1",
            "fall",
            1,
        )
        # The same event again on the alarm topic is the same event: a duplicate with the same alert.
        again = await unit.send("fall", event_id="fall-1", timeout=20)
        assert again == {**ack, "result": "duplicate"}
        # The call-back for the alert goes out (commands ride on the alarm lane's connection).
        command = await unit.wait_command("call_centre", timeout=20)
        assert command["args"]["alert_id"] == ack["alert_id"]
    # A v1.0 unit still sends its calls for help on ``event``, and they are stored as ever.
    async with unit_for(bridge, "unit-old", alarm_lane=False) as old:
        assert old.topic_for("pendant").endswith("/unit-old/event")
        assert (await old.send("pendant", timeout=20))["result"] == "accepted"
    # One event whichever topic carries it: the fall again on ``event`` is a duplicate of the first.
    async with unit_for(bridge, "unit-1", alarm_lane=False) as same:
        assert await same.send("fall", event_id="fall-1", timeout=20) == {**ack, "result": "duplicate"}
    assert await bridge.store.event_count() == 2


@pytest.mark.parametrize(
    ("payload", "event_id", "reason"),
    [
        (encode_event("lb-1", "low_battery"), "lb-1", "not priority 1"),
        (encode_event("hb-1", "heartbeat"), "hb-1", "not priority 1"),
        # The device id is the topic's: a payload naming another unit is refused, as on ``event``.
        (
            json.dumps({"event_id": "as-other", "type": "fall", "device_id": "unit-other"}).encode(),
            "as-other",
            "unknown fields: device_id",
        ),
        (b"{not json", None, "not JSON"),
        (
            json.dumps({"event_id": "alien", "type": "alien_abduction"}).encode(),
            "alien",
            "unknown event type",
        ),
    ],
)
async def test_the_alarm_topic_refuses_what_is_not_a_call_for_help(
    bridge: RunningBridge, payload: bytes, event_id: str | None, reason: str
) -> None:
    async with unit_for(bridge, "unit-lane") as unit:
        await unit.publish_raw(payload, topic=unit.topics.alarm("unit-lane"))
        ack = await unit.next_ack(event_id, timeout=20)  # type: ignore[arg-type]
        assert ack["result"] == "rejected" and reason in ack["error"], ack
        assert (await unit.send("pendant", timeout=20))["result"] == "accepted"  # still serving
    async with bridge.store.read() as tx:
        rows = await tx.fetchall("SELECT device_id, type FROM events")
    assert [(r["device_id"], r["type"]) for r in rows] == [("unit-lane", "pendant")]


async def test_a_fall_is_committed_before_the_rest_of_a_flood(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one writer (SQLite) the fall goes into the very next transaction; where transactions run
    side by side (PostgreSQL) it is stored and acked while the batch of others is still held."""
    held = HeldCommits(bridge, monkeypatch)
    intake = bridge.bridge.intake
    assert intake.help_alongside == (bridge.store.dialect == "postgresql")
    flood = technical(4 * BATCH)
    storing = asyncio.create_task(intake.submit_many(flood))
    await held.wait_held()  # the first BATCH technical events are in the store's hands, held
    async with unit_for(bridge, "unit-fall") as unit:
        fall = asyncio.create_task(unit.send("fall", event_id="the-fall", timeout=60))
        if intake.help_alongside:
            ack = await fall  # acked with the batch of others still held
            assert held.commits == [["the-fall"]]
            held.release()
        else:
            await eventually(lambda: _is(intake.queued(help_only=True), 1))  # read off the alarm lane
            assert intake.queued() == 3 * BATCH + 1
            held.release()
            ack = await fall
        results = await storing
    assert ack["result"] == "accepted"
    assert all(isinstance(r, IngestResult) and r.result == "accepted" for r in results)
    # ORDER: the fall alone before (SQLite: right after) the held batch, then the rest of the flood.
    first, second = (1, 0) if intake.help_alongside else (0, 1)
    assert held.commits[first] == [e.event_id for e in flood[:BATCH]]
    assert held.commits[second] == ["the-fall"]
    assert sorted(e for ids in held.commits[2:] for e in ids) == sorted(e.event_id for e in flood[BATCH:])
    # The store agrees: the fall's alert was raised before every alert of the rest of the flood.
    later = [int(r.alert_id) for r in results[BATCH:] if isinstance(r, IngestResult) and r.alert_id]
    assert len(later) == 3 * BATCH and int(ack["alert_id"]) < min(later)


async def test_a_call_for_help_on_event_inside_a_burst_is_stored_first(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v1.0 unit's fall on ``event``, published in the middle of a burst of technical events."""
    held = HeldCommits(bridge, monkeypatch)
    intake = bridge.bridge.intake
    root = bridge.bridge.config.topic_root
    blocker = asyncio.create_task(intake.submit_many(technical(1, prefix="blocker")))
    await held.wait_held()
    burst = [(f"b{k:04d}", encode_event(f"burst-{k}", "mains_fail")) for k in range(2 * BATCH)]
    burst.insert(BATCH, ("unit-v10", encode_event("fall-on-event", "fall")))
    acks: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(
        MOSQUITTO_HOST, MOSQUITTO_PORT, identifier=f"burst-{uuid.uuid4().hex[:8]}"
    ) as c:
        await c.subscribe(f"{root}/v1/+/ack", qos=1)
        for device_id, payload in burst:
            await c.publish(f"{root}/v1/{device_id}/event", payload, qos=1)
        if intake.help_alongside:  # the fall is stored beside the held blocker; the burst waits
            await eventually(lambda: _is(intake.queued() + len(held.commits), len(burst)))
        else:
            await eventually(lambda: _is(intake.queued(), len(burst)))
        held.release()
        async with asyncio.timeout(60):
            async for message in c.messages:
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                acks[body["event_id"]] = body
                if len(acks) == len(burst):
                    break
    await blocker
    assert {a["result"] for a in acks.values()} == {"accepted"}
    # ORDER: the blocker (PostgreSQL: beside it), the fall taken out of its burst, then the burst in
    # arrival order.
    assert held.commits[0 if intake.help_alongside else 1] == ["fall-on-event"]
    stored_after = [e for ids in held.commits[2:] for e in ids]
    assert stored_after == [f"burst-{k}" for k in range(2 * BATCH)]


async def test_a_slow_reader_gets_a_fall_before_the_changes_queued_ahead_of_it(bridge: RunningBridge) -> None:
    intake = bridge.bridge.intake
    async with bridge.bridge.feed.subscribe() as queue:
        await intake.submit_many(technical(60))
        await eventually(lambda: _is(queue.qsize(), 60))  # the reader has read none of them
        fall = await intake.submit(_fall("unit-f", "slow-fall"))
        await eventually(lambda: _is(queue.qsize(), 61))
        first = queue.get_nowait()
        rest = [queue.get_nowait()["alert"] for _ in range(60)]
    assert first["alert"]["id"] == fall.alert_id and first["alert"]["type"] == "fall"
    assert {a["type"] for a in rest} == {"mains_fail"}
    assert [a["device_id"] for a in rest] == [f"t{k:04d}" for k in range(60)]  # oldest first


async def test_a_fall_goes_out_as_committed_while_a_page_of_a_flood_is_being_read(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fall committed while the feed reads a page of a flood goes out before that read ends, and
    without a read of its own: its transaction read it as it committed it."""
    from alarm_centre.alerts import feed as feed_module

    monkeypatch.setattr(feed_module, "PAGE", 20)
    alerts = bridge.store.alerts
    real = alerts.get_alerts
    asked: list[list[str]] = []
    reading, gate = asyncio.Event(), asyncio.Event()

    async def gated(ids: Sequence[str]) -> list[Alert]:
        asked.append(list(ids))
        if len(asked) == 1:
            reading.set()
            await gate.wait()
        result: list[Alert] = await real(ids)
        return result

    monkeypatch.setattr(alerts, "get_alerts", gated)
    intake = bridge.bridge.intake
    async with bridge.bridge.feed.subscribe() as queue:
        flood = await intake.submit_many(technical(100))
        async with asyncio.timeout(20):
            await reading.wait()  # the feed is reading the flood's first page, and stays there
        fall = await intake.submit(_fall("unit-g", "mid-flood-fall"))
        await eventually(lambda: _is(queue.qsize(), 1))
        first = queue.get_nowait()["alert"]
        assert not gate.is_set()
        gate.set()
        await eventually(lambda: _is(queue.qsize(), 100))
        rest = [queue.get_nowait()["alert"] for _ in range(100)]
    assert fall.alert_id is not None
    assert first == (await real([fall.alert_id]))[0].to_json()  # as committed, and still so
    assert all(fall.alert_id not in page for page in asked)  # never read
    flood_ids = [r.alert_id for r in flood if isinstance(r, IngestResult)]
    assert [i for page in asked for i in page] == flood_ids
    assert [a["id"] for a in rest] == flood_ids  # the flood's pages in order


async def test_another_nodes_fall_goes_out_without_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fall committed on another node reaches this node's feed with its notification, as committed."""
    async with (
        postgres_database() as url,
        running_bridge(make_config(tmp_path, TELECARE_STORE__URL=url)) as running,
    ):
        real = running.store.alerts.get_alerts
        asked: list[str] = []

        async def noted(ids: Sequence[str]) -> list[Alert]:
            asked.extend(ids)
            result: list[Alert] = await real(ids)
            return result

        monkeypatch.setattr(running.store.alerts, "get_alerts", noted)
        async with running.bridge.feed.subscribe() as queue, PostgresStore(url, listen=False) as other:
            [fall] = await other.ingest([_fall("unit-n", "other-node-fall")])
            assert fall.alert_id is not None
            await eventually(lambda: _is(queue.qsize(), 1))
            pushed = queue.get_nowait()["alert"]
        assert pushed == (await real([fall.alert_id]))[0].to_json()
        assert asked == []


async def test_a_change_to_a_fall_being_read_goes_out_after_that_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fall the help reader is reading (here: an older node's notification, which carries no alert)
    is read again after a later change, never pushed from that change ahead of the older read."""
    async with (
        postgres_database() as url,
        running_bridge(make_config(tmp_path, TELECARE_STORE__URL=url)) as running,
    ):
        store = running.store
        real = store.alerts.get_alerts
        read, gate = asyncio.Event(), asyncio.Event()

        async def held_answer(ids: Sequence[str]) -> list[Alert]:
            result: list[Alert] = await real(ids)  # read now, answered later: older than what follows
            if not gate.is_set():
                read.set()
                await gate.wait()
            return result

        async with running.bridge.feed.subscribe() as queue:
            fall = await running.bridge.intake.submit(_fall("unit-h", "older-node-fall"))
            assert fall.alert_id is not None
            await eventually(lambda: _is(queue.qsize(), 1))
            assert queue.get_nowait()["alert"]["state"] == "raised"
            monkeypatch.setattr(store.alerts, "get_alerts", held_answer)
            older_node = json.dumps({"o": "older-node", "c": [[fall.alert_id, "note", 1, "raised"]]})
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, older_node)
            finally:
                await conn.close()
            async with asyncio.timeout(20):
                await read.wait()
            await store.alerts.acknowledge(fall.alert_id, actor="olive", source="console")
            assert queue.qsize() == 0  # the acknowledgement waits for the read ahead of it
            gate.set()
            states: list[str] = []
            async with asyncio.timeout(20):
                while "acknowledged" not in states:
                    states.append((await queue.get())["alert"]["state"])
        assert states == ["raised", "acknowledged"]


def _fall(device_id: str, event_id: str) -> DeviceEvent:
    return DeviceEvent(device_id, event_id, EventType.FALL, received_at=datetime.now(UTC), source="test")


async def _is(value: int, expected: int) -> bool:
    return value == expected
