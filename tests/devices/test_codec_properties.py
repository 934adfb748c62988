"""Properties of every codec, found by Hypothesis rather than by listing cases.

1. Every codec (MQTT JSON, serial frames, AT/SMS, CSV/YAML rows, Alexa envelopes, the strict JSON
   reader under them all) answers arbitrary input with either a value or its own refusal, never
   another exception.
2. Any payload the MQTT codec accepts round-trips through a real store and the real HTTP API on
   loopback, and what the API answers parses with a strict parser (no NaN, no Infinity).

Example counts are bounded so the module stays well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness import RunningBridge, make_config, running_bridge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import strict_json
from devices.csv_yaml import MalformedFile, parse_csv, parse_yaml
from devices.events import DeviceEvent
from devices.gsm_at import NEED_DATA as AT_NEED_DATA
from devices.gsm_at import AtStream, SmsRecord, parse_creg, parse_csq
from devices.mqtt_codec import Rejected, Topics, decode_ack, decode_command, decode_event, peek_event_id
from devices.serial_frame import NEED_DATA, EventFrame, FrameDecoder, Malformed, crc16
from devices.sms_alarm import device_id_for_sender, looks_like_help, parse_sms_alarm, sms_event_id
from skills.verification import AlexaVerifier, VerificationFailed
from skills.voice import Caller

T = TypeVar("T")
CODEC = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def strict_parse(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- strategies ------------------------------------------------------------------------------------

#: JSON values, including the ones strict JSON refuses (NaN, infinities) and awkward strings.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**320), max_value=10**320)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(["pendant", "fall", "smoke", "low_battery", "heartbeat", "no_heartbeat", "x"])


@st.composite
def event_payloads(draw: st.DrawFn) -> bytes:
    """Payloads shaped like events, mutated: extra or repeated keys, bad values, raw tails."""
    fields: list[tuple[str, Any]] = [
        ("event_id", draw(st.text(min_size=1, max_size=10) | st.integers())),
        ("type", draw(event_types)),
    ]
    if draw(st.booleans()):
        fields.append(("data", draw(json_values)))
    if draw(st.booleans()):
        fields.append(("ts", draw(st.sampled_from(["2026-05-01T12:00:00Z", "yesterday", None]))))
    if draw(st.booleans()):
        fields.append((draw(st.sampled_from(["type", "test", "data", "extra"])), draw(json_values)))
    body = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields) + "}"
    raw = body.encode()
    if draw(st.integers(0, 9)) == 0:
        raw += draw(st.binary(max_size=8))
    return raw


AT_LINES = [
    b"\r\nOK\r\n",
    b'+CMTI: "SM",3\r\n',
    b'+CMGR: "REC UNREAD","+447700900123",,"26/05/01,12:00:00+04"\r\n',
    b"HELP\r\n",
    b"> ",
    b"+CMS ERROR: 500\r\n",
    b"\r\n\r\nOK\r\n",
    b"0048004500\r\n",
]


#: Nested arrays, shallow to far deeper than any reader's stack.
nested = st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 3000))


TC1 = b"TC1,u1,e1,pendant,,0,"


def sealed(body: bytes) -> bytes:
    return b"$" + body + b"*" + b"%04X" % crc16(body) + b"\r\n"


# -- 1. every codec: a value or its own refusal ----------------------------------------------------


@CODEC
@given(st.binary(max_size=300) | event_payloads() | nested)
def test_strict_json_reader(raw: bytes) -> None:
    try:
        value = strict_json.loads(raw)
    except strict_json.JSONRefused as exc:
        assert exc.code in strict_json.Refusal and exc.message
        return
    strict_parse(strict_json.dumps(value))


@CODEC
@given(
    st.binary(max_size=300)
    | event_payloads()
    | st.builds(lambda n: b'{"event_id":"e","data":' + b"[" * n + b"]" * n + b"}", st.integers(0, 2000))
)
def test_mqtt_event_codec(raw: bytes) -> None:
    peek_event_id(raw)  # best effort: a str or None, never an exception
    try:
        event = decode_event("unit-1", raw)
    except Rejected as exc:
        assert exc.reason and exc.code
        return
    assert isinstance(event, DeviceEvent)
    strict_parse(strict_json.dumps(event.data))


@CODEC
@given(st.binary(max_size=200), st.text(max_size=60))
def test_mqtt_ack_command_and_topic_codecs(raw: bytes, topic: str) -> None:
    for decode in (decode_ack, decode_command):
        with contextlib.suppress(ValueError):  # their refusal (a JSONRefused is one too)
            decode(raw)
    with contextlib.suppress(Rejected):
        Topics().parse(topic)


@CODEC
@given(
    st.lists(
        st.binary(max_size=80)
        | st.builds(lambda body: sealed(b"TC1,u1,e1,pendant,,0," + body), st.binary(max_size=60))
        | st.builds(sealed, st.binary(max_size=80))
        | st.builds(lambda p: sealed(TC1 + p[:400]), event_payloads())
        | st.builds(lambda v: sealed(TC1 + json.dumps({"v": v}).encode()[:400]), json_values),
        max_size=4,
    )
)
def test_serial_frame_codec(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        decoder.feed(chunk)
        for _ in range(1000):
            outcome = decoder.next_frame()
            if outcome is NEED_DATA:
                break
            if isinstance(outcome, Malformed):
                assert outcome.reason
            elif isinstance(outcome, EventFrame):
                strict_json.dumps(outcome.event.data)  # what was accepted can be written as strict JSON
        else:
            pytest.fail("the decoder never asked for more data")


@CODEC
@given(
    st.lists(
        st.binary(max_size=60) | st.sampled_from(AT_LINES),
        max_size=8,
    ),
    st.sampled_from(["IRA", "GSM", "UCS2"]),
)
def test_at_and_sms_codecs(chunks: list[bytes], charset: str) -> None:
    stream = AtStream(charset=charset)
    stream.expect_prompt()
    for chunk in chunks:
        stream.feed(chunk)
        for _ in range(1000):
            item = stream.next_event()
            if item is AT_NEED_DATA:
                break
            if isinstance(item, SmsRecord):
                item.timestamp  # noqa: B018  (a datetime or None, never an exception)
                parse_sms_alarm(item.text)
                looks_like_help(item.text)
                sms_event_id(item.sender, item.raw_timestamp, item.text)
                device_id_for_sender(item.sender)
        else:
            pytest.fail("the AT stream never asked for more data")
    text = b"".join(chunks).decode("utf-8", "replace")
    for parse in (parse_csq, parse_creg):
        with contextlib.suppress(ValueError):
            parse(text.splitlines())


@CODEC
@given(
    st.text(max_size=200)
    | st.builds(
        lambda rows: "id,name,language,responders\n" + "\n".join(",".join(r) for r in rows),
        st.lists(st.lists(st.text(max_size=10), min_size=1, max_size=5), max_size=4),
    ),
    st.sampled_from(["residents", "devices"]),
)
def test_csv_rows(text: str, kind: str) -> None:
    with contextlib.suppress(MalformedFile):
        parse_csv(text, kind)  # type: ignore[arg-type]


@CODEC
@given(
    st.text(max_size=200)
    | st.builds(
        lambda section, value: f"{section}:\n  - {{id: r1, name: Ann, language: {value}}}\n",
        st.sampled_from(["residents", "devices", "other"]),
        st.text(max_size=20) | st.sampled_from([".nan", "-.inf", "1.0e+999", "2024-13-45", "[[[", "*a"]),
    )
    | st.builds(lambda n: "residents: " + "[" * n + "]" * n, st.integers(0, 3000))
)
def test_yaml_rows(text: str) -> None:
    with contextlib.suppress(MalformedFile):
        parse_yaml(text)


SKILL = "amzn1.ask.skill.test"
VERIFIER = AlexaVerifier(SKILL, clock=lambda: datetime(2026, 5, 1, tzinfo=UTC))


@st.composite
def alexa_bodies(draw: st.DrawFn) -> bytes:
    envelope = {
        "version": "1.0",
        "session": {"application": {"applicationId": draw(st.sampled_from([SKILL, 5, None]))}},
        "context": {
            "System": {"device": {"deviceId": draw(json_values)}, "user": {"userId": draw(json_values)}}
        },
        "request": {
            "type": "IntentRequest",
            "requestId": draw(json_values),
            "timestamp": draw(st.sampled_from(["2026-05-01T00:00:00Z", "0001-01-01T00:00:00", "x", None]))
            if draw(st.booleans())
            else draw(json_values),
        },
    }
    return json.dumps(envelope).encode()


@CODEC
@given(st.binary(max_size=300) | alexa_bodies() | nested)
def test_alexa_envelope(raw: bytes) -> None:
    try:
        envelope = VERIFIER._parse_envelope(raw)
        VERIFIER.check_application_id(envelope)
        VERIFIER.check_timestamp(envelope, datetime(2026, 5, 1, tzinfo=UTC))
    except VerificationFailed as exc:
        assert exc.http_status == 400 and exc.reason
        return
    caller = Caller.from_envelope(envelope)
    assert caller.event_id and caller.unlinked_device_id


# -- 2. accepted payloads round-trip through the store and the API ---------------------------------


class BridgeInAThread:
    """A real bridge (SQLite store, HTTP API on loopback) on an event loop of its own, so that
    synchronous Hypothesis examples can drive it."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = make_config(tmp_path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bridge-loop", daemon=True)
        self._context = running_bridge(self.config)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> RunningBridge:
        self.thread.start()
        return self.run(self._context.__aenter__())

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._context.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def threaded_bridge(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BridgeInAThread, RunningBridge]]:
    holder = BridgeInAThread(tmp_path_factory.mktemp("roundtrip"))
    with holder as running:
        yield holder, running


_units = itertools.count()


async def _round_trip(running: RunningBridge, event: DeviceEvent) -> tuple[dict[str, Any], dict[str, Any]]:
    result = await running.bridge.intake.submit(event)
    assert result.result == "accepted", result
    assert result.alert_id is not None
    headers = {"Authorization": f"Bearer {await running.token('op1')}"}
    answers = []
    for path in (f"/api/v1/alerts/{result.alert_id}", "/api/v1/alerts?state=open&limit=5"):
        async with running.session.get(running.url + path, headers=headers) as resp:
            assert resp.status == 200
            answers.append(strict_parse(await resp.text()))  # a NaN here is what blanked the console
    return answers[0], answers[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values, event_type=st.sampled_from(["pendant", "fall", "smoke", "low_battery"]))
def test_accepted_payloads_round_trip_through_store_and_api(
    threaded_bridge: tuple[BridgeInAThread, RunningBridge], data: Any, event_type: str
) -> None:
    holder, running = threaded_bridge
    unit = f"prop-{next(_units)}"
    payload = json.dumps({"event_id": "e1", "type": event_type, "data": {"reading": data}}).encode()
    try:
        event = decode_event(unit, payload)
    except Rejected as exc:
        assert exc.code.value in ("non_finite", "too_deep", "encoding")
        return
    alert, listing = holder.run(_round_trip(running, event))
    assert alert["device_id"] == unit
    assert alert["data"]["event_data"] == event.data  # the value survives the store unchanged
    assert listing["alerts"]
