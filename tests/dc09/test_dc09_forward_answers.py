"""Forwarding against a scripted centre (a real TCP peer that answers what the test says, which pysiaalarm
cannot be made to do): NAK with a time corrects the clock, DUH is recorded and not resent, the same
sequence on every resend and across a restart, a forward still sent after its alert is resolved, and the
link-test supervision raising and clearing the path-down alert (driven by a stepped clock). Both stores."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clock import SteppedClock
from forward_support import ScriptedCentre, forward_env
from harness import RunningBridge, eventually, free_port, make_config, running_bridge

from bridge.config import Config
from bridge.dc09_forwarding import DC09_FORWARDER
from devices.dc09 import ContactId, Qualifier, parse_contact_id
from devices.events import DeviceEvent
from devices.vocabulary import EventType

ACCOUNT = "BEEF"


def config_for(tmp_path: Path, store_url: str, *paths: dict[str, Any]) -> Config:
    return make_config(tmp_path, TELECARE_STORE__URL=store_url, **forward_env(*paths))


def path_to(centre_url: str, **extra: Any) -> dict[str, Any]:
    return {"url": centre_url, "account": ACCOUNT, "ack_timeout_s": 0.5, **extra}


async def raise_alert(bridge: RunningBridge, device_id: str, kind: str = "pendant") -> str:
    result = await bridge.bridge.intake.submit(
        DeviceEvent(
            device_id=device_id,
            event_id=uuid.uuid4().hex[:16],
            type=EventType(kind),
            received_at=datetime.now(UTC),
        )
    )
    assert result.result == "accepted" and result.alert_id is not None
    return result.alert_id


async def steps(bridge: RunningBridge, alert_id: str) -> list[tuple[str, dict[str, Any]]]:
    status, body = await bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 200, body
    return [(e["action"], e["detail"]) for e in body["timeline"] if e["action"].startswith("forward_")]


async def forwards(bridge: RunningBridge, alert_id: str) -> list[dict[str, Any]]:
    async with bridge.store.read() as tx:
        rows = await tx.fetchall("SELECT * FROM dc09_forwards WHERE alert_id = ? ORDER BY id", int(alert_id))
    return [dict(r) for r in rows]


async def until_done(bridge: RunningBridge, alert_id: str) -> dict[str, Any]:
    async def done() -> bool:
        rows = await forwards(bridge, alert_id)
        return bool(rows) and all(r["done_at"] is not None for r in rows)

    await eventually(done)
    return (await forwards(bridge, alert_id))[0]


async def passes(bridge: RunningBridge, more: int) -> None:
    """Wait for the forwarder to complete ``more`` passes."""
    forwarder = bridge.bridge.app[DC09_FORWARDER]
    target = forwarder.passes + more

    async def done() -> bool:
        return forwarder.passes >= target

    await eventually(done)


@pytest.fixture
async def centres() -> AsyncIterator[list[ScriptedCentre]]:
    started: list[ScriptedCentre] = []
    try:
        yield started
    finally:
        for centre in started:
            await centre.stop()


async def scripted(centres: list[ScriptedCentre], *script: str, **kw: Any) -> ScriptedCentre:
    centre = ScriptedCentre(list(script), **kw)
    await centre.start()
    centres.append(centre)
    return centre


async def test_a_nak_with_a_time_corrects_the_clock_and_the_same_frame_is_resent(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    ahead = timedelta(minutes=5)
    centre = await scripted(centres, "nak", "ack", offset=ahead)
    async with running_bridge(config_for(tmp_path, store_url, path_to(centre.url))) as bridge:
        alert_id = await raise_alert(bridge, "unit-nak")
        row = await until_done(bridge, alert_id)
        first, second = centre.frames
        assert first.sequence == second.sequence == row["sequence"]
        assert first.data == second.data and first.extended == second.extended
        assert first.timestamp is not None and second.timestamp is not None
        # The resend carries the centre's time, the first ours.
        assert abs((second.timestamp - first.timestamp) - ahead) < timedelta(seconds=3)
        assert row["result"] == "ack"
        actions = await steps(bridge, alert_id)
        assert [a for a, _ in actions] == ["forward_sent", "forward_nak", "forward_sent", "forward_acked"]
        nak = actions[1][1]
        assert abs(nak["clock_offset_s"] - ahead.total_seconds()) < 3
        forwarder = bridge.bridge.app[DC09_FORWARDER]
        assert abs(forwarder.offsets[0] - ahead) < timedelta(seconds=3)


async def test_heartbeats_resuming_forward_the_restore_after_the_alarm(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    centre = await scripted(centres, "ack")
    async with running_bridge(config_for(tmp_path, store_url, path_to(centre.url))) as bridge:
        await bridge.store.devices.upsert_device("unit-hb", "gsm_unit")
        alert_id = await raise_alert(bridge, "unit-hb", "no_heartbeat")
        result = await bridge.bridge.intake.submit(
            DeviceEvent(
                device_id="unit-hb",
                event_id=uuid.uuid4().hex[:16],
                type=EventType.HEARTBEAT,
                received_at=datetime.now(UTC),
            )
        )
        assert result.result == "accepted"

        async def both() -> bool:
            rows = await forwards(bridge, alert_id)
            return len(rows) == 2 and all(r["done_at"] is not None for r in rows)

        await eventually(both)
        assert [parse_contact_id(f.data) for f in centre.frames] == [
            ContactId(Qualifier.NEW, 350, "01", "000"),
            ContactId(Qualifier.RESTORE, 350, "01", "000"),
        ]
        assert len({f.sequence for f in centre.frames}) == 2


async def test_a_duh_is_recorded_and_not_resent(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    centre = await scripted(centres, "duh")
    async with running_bridge(config_for(tmp_path, store_url, path_to(centre.url))) as bridge:
        alert_id = await raise_alert(bridge, "unit-duh", "tamper")
        row = await until_done(bridge, alert_id)
        assert row["result"] == "duh"
        await passes(bridge, 3)
        assert len(centre.frames) == 1
        assert [a for a, _ in await steps(bridge, alert_id)] == ["forward_sent", "forward_duh"]


async def test_an_unanswered_frame_is_resent_with_the_same_sequence(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    centre = await scripted(centres, "silent", "ack")
    async with running_bridge(config_for(tmp_path, store_url, path_to(centre.url))) as bridge:
        alert_id = await raise_alert(bridge, "unit-resend")
        row = await until_done(bridge, alert_id)
        assert [f.sequence for f in centre.frames] == [row["sequence"]] * 2
        assert [a for a, _ in await steps(bridge, alert_id)] == [
            "forward_sent",
            "forward_no_answer",
            "forward_sent",
            "forward_acked",
        ]


async def test_udp_paths_encrypted_and_a_refused_primary(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    key = "000102030405060708090A0B0C0D0E0F"
    backup = await scripted(centres, "ack", udp=True, key=bytes.fromhex(key))
    primary = f"udp://127.0.0.1:{free_port()}"  # nothing listens: the ICMP refusal (or silence) counts
    paths = [path_to(primary, key=key), path_to(backup.url, key=key)]
    async with running_bridge(config_for(tmp_path, store_url, *paths)) as bridge:
        alert_id = await raise_alert(bridge, "unit-udp", "flood")
        row = await until_done(bridge, alert_id)
        [frame] = backup.frames
        assert (frame.encrypted, frame.sequence, row["result"]) == (True, row["sequence"], "ack")
        actions = [(a, d["path"]) for a, d in await steps(bridge, alert_id)]
        assert actions[-3:] == [
            ("forward_switched", "backup"),
            ("forward_sent", "backup"),
            ("forward_acked", "backup"),
        ]


async def test_a_restart_before_the_ack_resends_the_same_message(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    # The centre holds its answer to the first frame past the bridge's stop, and ACKs the resend.
    centre = await scripted(centres, "silent", "ack")
    config = config_for(tmp_path, store_url, path_to(centre.url, ack_timeout_s=60))
    async with running_bridge(config) as bridge:
        alert_id = await raise_alert(bridge, "unit-restart")

        async def received() -> bool:
            return len(centre.frames) == 1

        await eventually(received)
        [pending] = await forwards(bridge, alert_id)
        assert pending["done_at"] is None and pending["claimed_by"] == "test-node"
    async with running_bridge(config) as bridge:
        row = await until_done(bridge, alert_id)
    first, again = centre.frames
    assert (first.account, first.sequence, first.data, first.extended) == (
        again.account,
        again.sequence,
        again.data,
        again.extended,
    )
    assert row["sequence"] == first.sequence and row["result"] == "ack"
    # A centre keeps one message per account and sequence: it saw one message.
    assert len({(f.account, f.sequence) for f in centre.frames}) == 1


async def test_a_forward_is_still_sent_after_its_alert_is_resolved(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    clock = SteppedClock()
    port = free_port()
    config = config_for(tmp_path, store_url, path_to(f"tcp://127.0.0.1:{port}"))
    async with running_bridge(config, clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-late", "low_battery")

        async def tried() -> bool:
            return "forward_failed" in [a for a, _ in await steps(bridge, alert_id)]

        await eventually(tried)  # nobody listens: every path failed, a retry is due later
        status, _ = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="olga")
        assert status == 200
        status, body = await bridge.call(
            "POST", f"/api/v1/alerts/{alert_id}/resolve", user="olga", json={"outcome": "technical_fixed"}
        )
        assert status == 200, body
        centre = await scripted(centres, "ack", port=port)
        clock.advance(10)
        bridge.bridge.app[DC09_FORWARDER].wake()
        row = await until_done(bridge, alert_id)
        assert row["result"] == "ack" and len(centre.frames) == 1
        # An operator's resolve is not the unit's restore: nothing else is sent.
        assert [r["kind"] for r in await forwards(bridge, alert_id)] == ["alarm"]


async def test_a_silent_path_raises_a_technical_alert_and_clears_it_when_it_answers(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    clock = SteppedClock()
    port = free_port()
    config = config_for(tmp_path, store_url, path_to(f"tcp://127.0.0.1:{port}", link_test_s=30))
    async with running_bridge(config, clock=clock) as bridge:
        forwarder = bridge.bridge.app[DC09_FORWARDER]
        await passes(bridge, 2)  # the first link test went unanswered: not down yet
        assert await path_alerts(bridge) == []
        clock.advance(31)
        forwarder.wake()
        await passes(bridge, 2)
        [alert] = await path_alerts(bridge)
        assert (alert["type"], alert["priority"], alert["state"]) == ("sensor_fault", 3, "raised")
        status, health = await bridge.call("GET", "/healthz")
        assert status == 503 and "path primary" in str(health), health
        assert path_up(bridge) == 0.0
        # The centre comes back: the next link test is answered and the alert resolves itself.
        await scripted(centres, "ack", port=port)
        clock.advance(31)
        forwarder.wake()

        async def cleared() -> bool:
            return await path_alerts(bridge) == []

        await eventually(cleared)
        assert path_up(bridge) == 1.0
        status, health = await bridge.call("GET", "/healthz")
        assert status == 200, health
        status, body = await bridge.call("GET", f"/api/v1/alerts/{alert['id']}")
        assert (status, body["state"], body["outcome"]) == (200, "resolved", "cleared_by_device")


async def path_alerts(bridge: RunningBridge) -> list[dict[str, Any]]:
    status, body = await bridge.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == "dc09-forward-primary"]


def path_up(bridge: RunningBridge) -> float | None:
    return bridge.bridge.metrics.registry.get_sample_value(
        "telecare_dc09_forward_path_up", {"path": "primary"}
    )


async def test_a_path_alert_left_open_by_a_stopped_bridge_clears_at_the_first_answer(
    tmp_path: Path, store_url: str, centres: list[ScriptedCentre]
) -> None:
    clock = SteppedClock()
    port = free_port()
    config = config_for(tmp_path, store_url, path_to(f"tcp://127.0.0.1:{port}", link_test_s=30))
    async with running_bridge(config, clock=clock) as bridge:
        await passes(bridge, 1)
        clock.advance(31)
        bridge.bridge.app[DC09_FORWARDER].wake()

        async def raised() -> bool:
            return len(await path_alerts(bridge)) == 1

        await eventually(raised)
    await scripted(centres, "ack", port=port)
    async with running_bridge(config, clock=clock) as bridge:

        async def cleared() -> bool:
            return await path_alerts(bridge) == []

        await eventually(cleared)
