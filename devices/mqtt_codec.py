"""Wire contract v1 (v1.1: the ``alarm`` lane) over MQTT: topics and JSON payloads, sans-I/O.

``decode_event`` turns a topic and payload into a :class:`DeviceEvent` or raises :class:`Rejected`
with a reason meant for the unit (it goes into the ``rejected`` ack). Encoders build ack and command
payloads. See docs/wire-contract.md.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from devices import strict_json
from devices.events import DeviceEvent, InvalidIdentifier, check_device_id, check_event_id
from devices.vocabulary import BRIDGE_ONLY, is_help, parse_event_type

MAX_PAYLOAD = 4096

AckResult = Literal["accepted", "duplicate", "rejected"]


class RejectReason(enum.StrEnum):
    """What kind of problem a rejection is: a fixed set, used as the rejection counter's label."""

    TOPIC = "topic"
    STATUS = "status"
    SIZE = "size"
    ENCODING = "encoding"
    JSON = "json"
    NON_FINITE = "non_finite"
    DUPLICATE_KEY = "duplicate_key"
    TOO_DEEP = "too_deep"
    SHAPE = "shape"
    EVENT_ID = "event_id"
    TYPE = "type"
    TIMESTAMP = "timestamp"
    TEST = "test"
    DATA = "data"
    FIELDS = "fields"


#: The rejection code for each way a payload can fail to be strict JSON.
JSON_REFUSALS: dict[strict_json.Refusal, RejectReason] = {
    strict_json.Refusal.ENCODING: RejectReason.ENCODING,
    strict_json.Refusal.SYNTAX: RejectReason.JSON,
    strict_json.Refusal.NON_FINITE: RejectReason.NON_FINITE,
    strict_json.Refusal.DUPLICATE_KEY: RejectReason.DUPLICATE_KEY,
    strict_json.Refusal.TOO_DEEP: RejectReason.TOO_DEEP,
}


def refusal_text(what: str, exc: strict_json.JSONRefused) -> str:
    """``payload is not JSON: ...``, ``payload is not strict JSON: NaN is not a JSON number``, ..."""
    if exc.code in (strict_json.Refusal.SYNTAX, strict_json.Refusal.ENCODING):
        return f"{what} is {exc.message}"
    return f"{what} is not strict JSON: {exc.message}"


class Rejected(ValueError):
    """A message the bridge refuses. ``reason`` is the text for the unit, ``code`` the kind of problem
    (for metrics). ``event_id`` is set when it could be read, so the ack can name it."""

    def __init__(
        self, reason: str, *, code: RejectReason, event_id: str | None = None, device_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.event_id = event_id
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under a configurable root (default ``telecare``)."""

    root: str = "telecare"

    @property
    def event_filter(self) -> str:
        return f"{self.root}/v1/+/event"

    @property
    def alarm_filter(self) -> str:
        """v1.1: the lane for calls for help (priority-1 events), read on a connection of its own."""
        return f"{self.root}/v1/+/alarm"

    @property
    def status_filter(self) -> str:
        return f"{self.root}/v1/+/status"

    def event(self, device_id: str) -> str:
        return f"{self.root}/v1/{device_id}/event"

    def alarm(self, device_id: str) -> str:
        return f"{self.root}/v1/{device_id}/alarm"

    def ack(self, device_id: str) -> str:
        return f"{self.root}/v1/{device_id}/ack"

    def cmd(self, device_id: str) -> str:
        return f"{self.root}/v1/{device_id}/cmd"

    def status(self, device_id: str) -> str:
        return f"{self.root}/v1/{device_id}/status"

    def parse(self, topic: str) -> tuple[str, str]:
        """Split ``root/v1/{device_id}/{kind}`` into (device_id, kind); Rejected if it is not ours."""
        prefix = f"{self.root}/v1/"
        if not topic.startswith(prefix):
            raise Rejected(f"topic {topic!r} is not under {prefix}", code=RejectReason.TOPIC)
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2:
            raise Rejected(f"topic {topic!r} is not {prefix}{{device_id}}/{{kind}}", code=RejectReason.TOPIC)
        device_id, kind = rest
        try:
            check_device_id(device_id)
        except InvalidIdentifier as exc:
            raise Rejected(str(exc), code=RejectReason.TOPIC) from None
        return device_id, kind


def parse_rfc3339(value: object) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (``Z`` allowed) into an aware datetime."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("ts must be an RFC 3339 string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("ts must carry a UTC offset")
    return parsed


def decode_event(
    device_id: str, payload: bytes, *, received_at: datetime | None = None, source: str = "mqtt"
) -> DeviceEvent:
    """Decode an event payload sent by ``device_id``. Raises Rejected with the reason."""
    if len(payload) > MAX_PAYLOAD:
        raise Rejected(
            f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD}",
            code=RejectReason.SIZE,
            device_id=device_id,
        )
    try:
        body = strict_json.loads(payload)
    except strict_json.JSONRefused as exc:
        reason = refusal_text("payload", exc)
        raise Rejected(reason, code=JSON_REFUSALS[exc.code], device_id=device_id) from None
    if not isinstance(body, dict):
        raise Rejected(
            f"payload must be a JSON object, not {type(body).__name__}",
            code=RejectReason.SHAPE,
            device_id=device_id,
        )
    raw_id = body.get("event_id")
    try:
        event_id = check_event_id(raw_id)
    except InvalidIdentifier as exc:
        raise Rejected(str(exc), code=RejectReason.EVENT_ID, device_id=device_id) from None

    def reject(reason: str, code: RejectReason) -> Rejected:
        return Rejected(reason, code=code, event_id=event_id, device_id=device_id)

    raw_type = body.get("type")
    if not isinstance(raw_type, str):
        raise reject("type must be a string", RejectReason.TYPE)
    event_type = parse_event_type(raw_type)
    if event_type is None:
        raise reject(f"unknown event type {raw_type[:40]!r}", RejectReason.TYPE)
    if event_type in BRIDGE_ONLY:
        raise reject(f"type {raw_type!r} is raised by the bridge, not by devices", RejectReason.TYPE)
    ts: datetime | None = None
    if "ts" in body and body["ts"] is not None:
        try:
            ts = parse_rfc3339(body["ts"])
        except ValueError:
            raise reject("ts must be an RFC 3339 timestamp with an offset", RejectReason.TIMESTAMP) from None
    test = body.get("test", False)
    if not isinstance(test, bool):
        raise reject("test must be true or false", RejectReason.TEST)
    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise reject("data must be a JSON object", RejectReason.DATA)
    unknown = set(body) - {"event_id", "type", "ts", "test", "data"}
    if unknown:
        raise reject(f"unknown fields: {', '.join(sorted(unknown))[:80]}", RejectReason.FIELDS)
    return DeviceEvent(
        device_id=device_id,
        event_id=event_id,
        type=event_type,
        ts=ts,
        received_at=received_at or datetime.now(UTC),
        test=test,
        data=data,
        source=source,
    )


def decode_alarm(device_id: str, payload: bytes, *, received_at: datetime | None = None) -> DeviceEvent:
    """Decode a payload from the v1.1 ``alarm`` topic: an event as on ``event``, which must be a call
    for help (priority 1). Anything else is Rejected, so the lane stays free for help."""
    event = decode_event(device_id, payload, received_at=received_at)
    if not is_help(event.type):
        raise Rejected(
            f"type {event.type.value!r} is not priority 1: send it on the event topic",
            code=RejectReason.TYPE,
            event_id=event.event_id,
            device_id=device_id,
        )
    return event


def peek_event_id(payload: bytes) -> str | None:
    """Best effort: the event_id of a payload that failed to decode, so its rejection can name it."""
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        strict_json.loads(payload)
    except strict_json.JSONRefused as exc:
        if exc.code not in (strict_json.Refusal.NON_FINITE, strict_json.Refusal.DUPLICATE_KEY):
            return None
    # Well formed but refused (NaN, 1e999, a key twice): name the event if it has one event_id, so
    # the unit gets a final answer instead of retrying. The depth was checked above.
    try:
        pairs = json.loads(payload, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        return None
    ids = [value for key, value in pairs if key == "event_id"]
    if len(ids) != 1:
        return None
    try:
        return check_event_id(ids[0])
    except InvalidIdentifier:
        return None


def decode_status(payload: bytes) -> bool | None:
    """A unit's ``status`` (will) message: ``online`` -> True, ``offline`` -> False, anything else None.

    The bare word and the JSON string (``"online"``) are both read; surrounding whitespace is ignored."""
    text = payload.decode("utf-8", "replace").strip().strip('"')
    return {"online": True, "offline": False}.get(text)


def encode_ack(
    event_id: str | None, result: AckResult, *, alert_id: str | None = None, error: str | None = None
) -> bytes:
    """The ack payload for one event."""
    body: dict[str, Any] = {"event_id": event_id, "result": result}
    if alert_id is not None:
        body["alert_id"] = alert_id
    if error is not None:
        body["error"] = error
    return strict_json.dumps(body).encode()


def decode_ack(payload: bytes) -> dict[str, Any]:
    """Parse an ack (used by units and simulators)."""
    body = strict_json.loads(payload)
    if not isinstance(body, dict) or body.get("result") not in ("accepted", "duplicate", "rejected"):
        raise ValueError("not an ack")
    return body


def encode_command(cmd_id: str, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    """A command payload for a unit."""
    body: dict[str, Any] = {"cmd_id": cmd_id, "cmd": cmd}
    if args:
        body["args"] = args
    return strict_json.dumps(body).encode()


def decode_command(payload: bytes) -> dict[str, Any]:
    """Parse a command (used by units and simulators)."""
    body = strict_json.loads(payload)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("cmd_id"), str)
        or not isinstance(body.get("cmd"), str)
    ):
        raise ValueError("not a command")
    return body


def encode_event(
    event_id: str,
    event_type: str,
    *,
    ts: datetime | None = None,
    test: bool = False,
    data: dict[str, Any] | None = None,
) -> bytes:
    """An event payload (used by units and simulators)."""
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "ts": (ts or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
    }
    if test:
        body["test"] = True
    if data:
        body["data"] = data
    return strict_json.dumps(body).encode()
