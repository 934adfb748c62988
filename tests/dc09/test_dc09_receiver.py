"""The DC-09 receiver on a real bridge: frames from a simulated panel over real TCP and UDP sockets,
stored before the ACK, resends collapsing, every refusal NAKed and counted, unknown never dropped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge, eventually, make_config, postgres_database, running_bridge

from alarm_centre.alerts.intake import IngestResult, StoreUnavailable
from bridge.transports.dc09 import DC09_RECEIVER, NO_COMMANDS, Dc09Receiver
from devices.dc09 import (
    ContactId,
    Frame,
    Qualifier,
    Token,
    build_frame,
    contact_id_data,
    parse_key,
)
from devices.events import DeviceEvent
from simulators.dc09_panel import Dc09Panel

KEY_TEXT = "000102030405060708090A0B0C0D0E0F"
KEY = parse_key(KEY_TEXT)


@pytest.fixture
async def dc09_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    config = make_config(tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0")
    async with running_bridge(config) as running:
        yield running


def receiver(b: RunningBridge) -> Dc09Receiver:
    return b.bridge.app[DC09_RECEIVER]


def panel(b: RunningBridge, account: str, **kw: Any) -> Dc09Panel:
    return Dc09Panel("127.0.0.1", receiver(b).port, account=account, resend_s=5.0, **kw)


async def register(
    b: RunningBridge, device_id: str, account: str, key: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": device_id,
        "kind": "ip_unit",
        "channel": "dc09",
        "dc09_account": account,
        **extra,
    }
    if key is not None:
        body["dc09_key"] = key
    status, answer = await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=body)
    assert status == 201, answer
    return dict(answer)


async def alerts_of(b: RunningBridge, device_id: str) -> list[dict[str, Any]]:
    status, body = await b.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == device_id]


def rejected(b: RunningBridge, reason: str) -> float:
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_rejected_reasons_total", {"reason": reason, "transport": "dc09"}
    )
    return value or 0.0


def acked(answer: Any, sequence: int) -> bool:
    return (
        isinstance(answer.frame, Frame)
        and answer.frame.token is Token.ACK
        and answer.frame.sequence == sequence
    )


async def test_pendant_raises_an_alert_stored_before_the_ack_and_a_resend_collapses(
    dc09_bridge: RunningBridge,
) -> None:
    await register(dc09_bridge, "panel-ada", "1234")
    async with panel(dc09_bridge, "1234") as p:
        frame = p.frame(Token.ADM_CID, contact_id_data("1234", ContactId(Qualifier.NEW, 101, "01", "001")))
        answer = await p.send_raw(frame)
        assert acked(answer, p.sequence)
        # The ACK came: the alert is already there (stored before the answer, no waiting).
        first = await alerts_of(dc09_bridge, "panel-ada")
        assert [(a["type"], a["unregistered"]) for a in first] == [("pendant", False)]
        # The panel did not hear the ACK and sends the same frame again: same alert, ACKed again.
        again = await p.send_raw(frame)
        assert acked(again, p.sequence)
    after = await alerts_of(dc09_bridge, "panel-ada")
    assert [(a["id"], a["repeat_count"]) for a in after] == [(first[0]["id"], 0)]
    duplicates = dc09_bridge.bridge.metrics.registry.get_sample_value(
        "telecare_events_received_total", {"type": "pendant", "result": "duplicate", "transport": "dc09"}
    )
    assert duplicates == 1.0


async def test_several_frames_on_one_connection_and_sia_dcs(dc09_bridge: RunningBridge) -> None:
    await register(dc09_bridge, "panel-bo", "ABC1")
    async with panel(dc09_bridge, "abc1") as p:
        smoke = p.frame(Token.SIA_DCS, "#ABC1|Nri1/FA002")
        flood = p.frame(Token.ADM_CID, contact_id_data("ABC1", ContactId(Qualifier.NEW, 154, "01", "003")))
        p._send(smoke + b"\x00\x00" + flood)  # two frames in one write, NULs between them
        answers = [await p._answer(), await p._answer()]
    assert [a.token for a in answers] == ["ACK", "ACK"]
    types = sorted(a["type"] for a in await alerts_of(dc09_bridge, "panel-bo"))
    assert types == ["flood", "smoke"]


async def test_encrypted_frame_with_the_units_key_and_the_key_is_write_only(
    dc09_bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await register(dc09_bridge, "panel-cy", "5678", key=KEY_TEXT)
    assert "dc09_key" not in created and created["dc09_key_set"] is True
    status, listed = await dc09_bridge.call("GET", "/api/v1/devices/panel-cy", user="ian", role="installer")
    assert status == 200 and KEY_TEXT not in str(listed)
    async with panel(dc09_bridge, "5678", key=KEY) as p:
        answer = await p.send_contact_id(111)
    assert isinstance(answer.frame, Frame) and answer.frame.encrypted and answer.frame.token is Token.ACK
    assert [a["type"] for a in await alerts_of(dc09_bridge, "panel-cy")] == ["smoke"]
    assert KEY_TEXT not in caplog.text and KEY_TEXT.lower() not in caplog.text


def _corrupt_crc(frame: bytes) -> bytes:
    crc = int(frame[1:5], 16) ^ 0x0001
    return frame[:1] + f"{crc:04X}".encode() + frame[5:]


def _wrong_length(frame: bytes) -> bytes:
    length = int(frame[5:9], 16) + 1
    return frame[:5] + f"{length:04X}".encode() + frame[9:]


@pytest.mark.parametrize(
    ("reason", "spoil"),
    [
        ("bad_crc", "crc"),
        ("bad_length", "length"),
        ("stale_timestamp", "stale"),
        ("undecryptable", "wrong_key"),
    ],
)
async def test_refusals_are_naked_counted_and_the_receiver_keeps_serving(
    dc09_bridge: RunningBridge, reason: str, spoil: str
) -> None:
    await register(dc09_bridge, "panel-dee", "9ABC", key=KEY_TEXT)
    data = contact_id_data("9ABC", ContactId(Qualifier.NEW, 101, "01", "001"))
    now = datetime.now(UTC)
    frame = build_frame(token=Token.ADM_CID, sequence=7, account="9ABC", data=data, timestamp=now, key=KEY)
    if spoil == "crc":
        frame = _corrupt_crc(frame)
    elif spoil == "length":
        frame = _wrong_length(frame)
    elif spoil == "stale":  # CRC and length right; only the time is 2 minutes old
        frame = build_frame(
            token=Token.ADM_CID,
            sequence=7,
            account="9ABC",
            data=data,
            timestamp=now - timedelta(minutes=2),
            key=KEY,
        )
    else:
        frame = build_frame(
            token=Token.ADM_CID, sequence=7, account="9ABC", data=data, timestamp=now, key=bytes(16)
        )
    async with panel(dc09_bridge, "9ABC", key=KEY) as p:
        answer = await p.send_raw(frame)
        assert isinstance(answer.frame, Frame) and answer.frame.token is Token.NAK
        assert answer.frame.timestamp is not None  # our time, for the panel's clock
        assert rejected(dc09_bridge, reason) == 1.0
        # The same connection still serves: a good frame is ACKed.
        good = await p.send_contact_id(101)
        assert acked(good, p.sequence)
    assert [a["type"] for a in await alerts_of(dc09_bridge, "panel-dee")] == ["pendant"]


async def test_unknown_account_raises_an_unregistered_alert_with_account_and_code(
    dc09_bridge: RunningBridge,
) -> None:
    async with panel(dc09_bridge, "FEED01") as p:
        answer = await p.send_contact_id(120)
    assert acked(answer, 1)
    [alert] = await alerts_of(dc09_bridge, "dc09-FEED01")
    assert alert["type"] == "panic" and alert["unregistered"] is True
    status, full = await dc09_bridge.call("GET", f"/api/v1/alerts/{alert['id']}")
    assert status == 200
    assert "FEED01" in str(full) and "1120" in str(full)


async def test_unknown_code_is_acked_and_raises_an_alert_showing_the_raw_code(
    dc09_bridge: RunningBridge,
) -> None:
    await register(dc09_bridge, "panel-eve", "2468")
    async with panel(dc09_bridge, "2468") as p:
        answer = await p.send_contact_id(999)  # no row in the code table
    assert acked(answer, 1)  # never a DUH: panels resend a DUH'd frame forever
    [alert] = await alerts_of(dc09_bridge, "panel-eve")
    status, full = await dc09_bridge.call("GET", f"/api/v1/alerts/{alert['id']}")
    assert status == 200 and "1999" in str(full)


async def test_link_test_is_acked_and_recorded_as_the_units_heartbeat(dc09_bridge: RunningBridge) -> None:
    created = await register(dc09_bridge, "panel-fay", "1357", heartbeat_interval_s=600)
    due_before = created["heartbeat_due_at"]
    async with panel(dc09_bridge, "1357") as p:
        answer = await p.link_test()
    assert acked(answer, 1)
    status, after = await dc09_bridge.call("GET", "/api/v1/devices/panel-fay", user="ian", role="installer")
    assert status == 200 and after["heartbeat_due_at"] > due_before  # supervision moved on
    async with dc09_bridge.store.read() as tx:
        row = await tx.fetchone("SELECT last_seen_at, online FROM devices WHERE id = ?", "panel-fay")
        beat = await tx.fetchone("SELECT type FROM events WHERE device_id = ?", "panel-fay")
    assert row is not None and row["last_seen_at"] is not None and row["online"]
    assert beat is not None and beat["type"] == "heartbeat"
    assert await alerts_of(dc09_bridge, "panel-fay") == []


async def test_udp_frame_is_acked_after_store(dc09_bridge: RunningBridge) -> None:
    await register(dc09_bridge, "panel-gus", "8642", key=KEY_TEXT)
    async with panel(dc09_bridge, "8642", key=KEY, transport="udp") as p:
        answer = await p.send_contact_id(100)
    assert isinstance(answer.frame, Frame) and answer.frame.token is Token.ACK
    assert [a["type"] for a in await alerts_of(dc09_bridge, "panel-gus")] == ["pendant"]


async def test_no_ack_when_the_store_cannot_commit(
    dc09_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(dc09_bridge, "panel-hal", "7531")
    rx = receiver(dc09_bridge)

    async def failing(event: DeviceEvent) -> IngestResult:
        raise StoreUnavailable("disk full (injected)")

    monkeypatch.setattr(rx._intake, "submit", failing)
    frame = build_frame(
        token=Token.ADM_CID,
        sequence=3,
        account="7531",
        data=contact_id_data("7531", ContactId(Qualifier.NEW, 101, "01", "001")),
        timestamp=datetime.now(UTC),
    )
    assert await rx.handle(frame) is None  # no answer: the panel resends
    monkeypatch.undo()
    answer = await rx.handle(frame)
    assert answer is not None and b'"ACK"0003' in answer


async def test_call_centre_to_a_dc09_unit_is_closed_once_with_the_reason(dc09_bridge: RunningBridge) -> None:
    await register(dc09_bridge, "panel-ivy", "4321")
    async with panel(dc09_bridge, "4321") as p:
        assert acked(await p.send_contact_id(101), 1)
    [alert] = await alerts_of(dc09_bridge, "panel-ivy")

    async def on_the_timeline() -> bool:
        status, full = await dc09_bridge.call("GET", f"/api/v1/alerts/{alert['id']}")
        return status == 200 and NO_COMMANDS in str(full)

    await eventually(on_the_timeline)
    async with dc09_bridge.store.read() as tx:
        row = await tx.fetchone("SELECT attempts, done_at FROM outbox WHERE target = ?", "panel-ivy")
    assert row is not None and row["attempts"] == 1 and row["done_at"] is not None  # closed, not retried


async def test_mains_restore_clears_the_mains_failure(dc09_bridge: RunningBridge) -> None:
    await register(dc09_bridge, "panel-jo", "3579")
    async with panel(dc09_bridge, "3579") as p:
        assert acked(await p.send_contact_id(301), 1)
        assert [a["type"] for a in await alerts_of(dc09_bridge, "panel-jo")] == ["mains_fail"]
        assert acked(await p.send_contact_id(301, qualifier=Qualifier.RESTORE), 2)
    assert await alerts_of(dc09_bridge, "panel-jo") == []


async def test_encrypted_frame_from_an_unknown_account_is_naked(dc09_bridge: RunningBridge) -> None:
    async with panel(dc09_bridge, "ABCDEF", key=KEY) as p:
        answer = await p.send_contact_id(101)
    assert isinstance(answer.frame, Frame) and answer.frame.token is Token.NAK
    assert rejected(dc09_bridge, "undecryptable") == 1.0
    assert await alerts_of(dc09_bridge, "dc09-ABCDEF") == []


async def test_healthz_answers_503_when_the_listener_is_down(dc09_bridge: RunningBridge) -> None:
    status, _ = await dc09_bridge.call("GET", "/healthz", user=None)
    assert status == 200
    await receiver(dc09_bridge).__aexit__(None, None, None)  # inject the fault: the listener closes
    status, body = await dc09_bridge.call("GET", "/healthz", user=None)
    assert status == 503 and "dc09" in str(body)


@pytest.mark.postgres
async def test_pendant_on_postgresql(tmp_path: Path) -> None:
    async with postgres_database() as url:
        config = make_config(tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0", TELECARE_STORE__URL=url)
        async with running_bridge(config) as b:
            await register(b, "panel-pg", "2222", key=KEY_TEXT)
            async with panel(b, "2222", key=KEY) as p:
                frame = p.frame(Token.SIA_DCS, "#2222|Nri1/MA001")
                assert acked(await p.send_raw(frame), 1)
                assert acked(await p.send_raw(frame), 1)
            [alert] = await alerts_of(b, "panel-pg")
            assert alert["type"] == "pendant" and alert["repeat_count"] == 0


async def test_a_fault_reading_the_registry_leaves_the_frame_unanswered_and_the_connection_open(
    dc09_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(dc09_bridge, "panel-kit", "6420")
    rx = receiver(dc09_bridge)
    real_unit = rx._unit
    faults = [RuntimeError("registry unreadable (injected)")]

    async def flaky(account: str) -> Any:
        if faults:
            raise faults.pop()
        return await real_unit(account)

    monkeypatch.setattr(rx, "_unit", flaky)
    async with panel(dc09_bridge, "6420") as p:
        p.resend_s = 0.5  # the first try goes unanswered; the panel's resend is ACKed
        answer = await p.send_contact_id(101)
        assert acked(answer, 1) and p.sent_frames == 2
    assert [a["type"] for a in await alerts_of(dc09_bridge, "panel-kit")] == ["pendant"]
