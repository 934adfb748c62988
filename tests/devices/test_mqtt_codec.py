"""Wire contract v1 codec: a table of payloads and what the bridge makes of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devices.events import check_device_id
from devices.mqtt_codec import (
    MAX_PAYLOAD,
    Rejected,
    Topics,
    decode_ack,
    decode_command,
    decode_event,
    decode_status,
    encode_ack,
    encode_command,
    encode_event,
    peek_event_id,
)
from devices.vocabulary import PRIORITY, EventType, Priority, is_help

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def payload(**fields: object) -> bytes:
    body = {"event_id": "e1", "type": "pendant", "ts": "2026-11-28T12:00:00Z", **fields}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


GOOD = [
    (payload(), EventType.PENDANT, False),
    (payload(type="fall", test=True), EventType.FALL, True),
    (payload(type="heartbeat", ts=...), EventType.HEARTBEAT, False),
    (payload(type="cmd_result", data={"cmd_id": "c1"}), EventType.CMD_RESULT, False),
    (payload(ts="2026-11-28T13:00:00+01:00"), EventType.PENDANT, False),
]


@pytest.mark.parametrize(("raw", "event_type", "test"), GOOD)
def test_good_payloads_decode(raw: bytes, event_type: EventType, test: bool) -> None:
    event = decode_event("unit-1", raw, received_at=NOW)
    assert (event.device_id, event.event_id, event.type, event.test) == ("unit-1", "e1", event_type, test)


def test_timestamp_offset_is_respected() -> None:
    event = decode_event("u", payload(ts="2026-11-28T13:00:00+01:00"), received_at=NOW)
    assert event.ts == NOW and event.clock_skew_s == 0


BAD = [
    (b"not json", "not JSON", None),
    (b"\xff\xfe", "not UTF-8", None),
    (b"[1, 2]", "JSON object", None),
    (b'"pendant"', "JSON object", None),
    (b"null", "JSON object", None),
    (b"x" * (MAX_PAYLOAD + 1), "limit is 4096", None),
    (payload(event_id=...), "event_id must be a string", None),
    (payload(event_id=""), "event_id must be 1-64", None),
    (payload(event_id="e" * 65), "event_id must be 1-64", None),
    (payload(event_id=42), "event_id must be a string", None),
    (payload(event_id="tab\there"), "printable", None),
    (payload(type="explode"), "unknown event type", "e1"),
    (payload(type=7), "type must be a string", "e1"),
    (payload(type="no_heartbeat"), "raised by the bridge", "e1"),
    (payload(type="unknown_signal", data={"protocol": "dc09", "code": "1999"}), "raised by the bridge", "e1"),
    (payload(type="restored", data={"restores": "smoke"}), "raised by the bridge", "e1"),
    (payload(ts="yesterday"), "RFC 3339", "e1"),
    (payload(ts="2026-11-28T12:00:00"), "RFC 3339", "e1"),
    (payload(ts=12345), "RFC 3339", "e1"),
    (payload(test="yes"), "test must be", "e1"),
    (payload(data=[1]), "data must be a JSON object", "e1"),
    (payload(colour="red"), "unknown fields: colour", "e1"),
]


@pytest.mark.parametrize(("raw", "reason", "event_id"), BAD)
def test_bad_payloads_are_rejected_with_a_reason(raw: bytes, reason: str, event_id: str | None) -> None:
    with pytest.raises(Rejected) as caught:
        decode_event("unit-1", raw, received_at=NOW)
    assert reason in caught.value.reason
    assert caught.value.event_id == event_id


def test_payload_at_the_limit_is_read() -> None:
    base = payload(data={"pad": ""})
    padded = payload(data={"pad": "x" * (MAX_PAYLOAD - len(base))})
    assert len(padded) == MAX_PAYLOAD
    assert decode_event("u", padded, received_at=NOW).data["pad"]


@pytest.mark.parametrize("topic", ["telecare/v1/unit-1/event", "telecare/v1/a.b_c-D/status"])
def test_topics_parse(topic: str) -> None:
    device_id, kind = Topics().parse(topic)
    assert topic == f"telecare/v1/{device_id}/{kind}"


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/u/event",
        "telecare/v1/u/event/extra",
        "telecare/v1/bad id/event",
        "telecare/v1/" + "x" * 65 + "/event",
        "telecare/v1//event",
    ],
)
def test_bad_topics_are_rejected(topic: str) -> None:
    with pytest.raises(Rejected):
        Topics().parse(topic)


def test_acks_and_commands_round_trip() -> None:
    ack = decode_ack(encode_ack("e1", "accepted", alert_id="42"))
    assert ack == {"event_id": "e1", "result": "accepted", "alert_id": "42"}
    assert decode_ack(encode_ack(None, "rejected", error="bad"))["error"] == "bad"
    cmd = decode_command(encode_command("c1", "call_centre", {"alert_id": "42"}))
    assert cmd == {"cmd_id": "c1", "cmd": "call_centre", "args": {"alert_id": "42"}}
    event = decode_event("u", encode_event("e9", "fall", ts=NOW, data={"x": 1}), received_at=NOW)
    assert (event.event_id, event.type, event.data) == ("e9", EventType.FALL, {"x": 1})


def test_peek_event_id_names_what_it_can() -> None:
    assert peek_event_id(payload(type="explode")) == "e1"
    assert peek_event_id(b"garbage") is None
    assert peek_event_id(b"[]") is None


def test_vocabulary_priorities() -> None:
    assert PRIORITY[EventType.VOICE_HELP] is Priority.EMERGENCY
    assert PRIORITY[EventType.NO_HEARTBEAT] is Priority.URGENT
    assert PRIORITY[EventType.MAINS_FAIL] is Priority.TECHNICAL
    assert EventType.HEARTBEAT not in PRIORITY
    assert is_help(EventType.FALL) and not is_help(EventType.LOW_BATTERY)


@pytest.mark.parametrize("device_id", ["", "a b", "x" * 65, "ümlaut", "a/b", "a+b", "a#b", ".", ".."])
def test_device_id_rule(device_id: str) -> None:
    with pytest.raises(ValueError):
        check_device_id(device_id)


@pytest.mark.parametrize("device_id", ["...", ".a", "a.", "..a", "a..", "-", "_"])
def test_dots_are_fine_beside_other_characters(device_id: str) -> None:
    assert check_device_id(device_id) == device_id


@pytest.mark.parametrize("topic", ["telecare/v1/./event", "telecare/v1/../event"])
def test_dot_segments_are_not_device_ids(topic: str) -> None:
    with pytest.raises(Rejected):
        Topics().parse(topic)


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b'"online"', True),
        (b" offline\n", False),
        (b"ONLINE", None),
        (b"", None),
        (b"\xff\xfe", None),
        (b'{"status": "online"}', None),
    ],
)
def test_status_will_message(payload: bytes, online: bool | None) -> None:
    assert decode_status(payload) is online
