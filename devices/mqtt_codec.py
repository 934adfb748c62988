"""Wire contract v1 over MQTT: topics and JSON payloads, sans-I/O.

``decode_event`` turns a topic and payload into a :class:`DeviceEvent` or raises :class:`Rejected`
with a reason meant for the unit (it goes into the ``rejected`` ack). Encoders build ack and command
payloads. See docs/wire-contract.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from devices.events import DeviceEvent, InvalidIdentifier, check_device_id, check_event_id
from devices.vocabulary import BRIDGE_ONLY, parse_event_type

MAX_PAYLOAD = 4096
SKEW_LIMIT_S = 300.0

AckResult = Literal["accepted", "duplicate", "rejected"]


class Rejected(ValueError):
    """A message the bridge refuses. ``event_id`` is set when it could be read, so the ack can name it."""

    def __init__(self, reason: str, *, event_id: str | None = None, device_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
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
    def status_filter(self) -> str:
        return f"{self.root}/v1/+/status"

    def event(self, device_id: str) -> str:
        return f"{self.root}/v1/{device_id}/event"

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
            raise Rejected(f"topic {topic!r} is not under {prefix}")
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2:
            raise Rejected(f"topic {topic!r} is not {prefix}{{device_id}}/{{kind}}")
        device_id, kind = rest
        try:
            check_device_id(device_id)
        except InvalidIdentifier as exc:
            raise Rejected(str(exc)) from None
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
        raise Rejected(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD}", device_id=device_id)
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise Rejected("payload is not UTF-8", device_id=device_id) from None
    except json.JSONDecodeError as exc:
        raise Rejected(f"payload is not JSON: {exc.msg} at position {exc.pos}", device_id=device_id) from None
    if not isinstance(body, dict):
        raise Rejected(f"payload must be a JSON object, not {type(body).__name__}", device_id=device_id)
    raw_id = body.get("event_id")
    try:
        event_id = check_event_id(raw_id)
    except InvalidIdentifier as exc:
        raise Rejected(str(exc), device_id=device_id) from None

    def reject(reason: str) -> Rejected:
        return Rejected(reason, event_id=event_id, device_id=device_id)

    raw_type = body.get("type")
    if not isinstance(raw_type, str):
        raise reject("type must be a string")
    event_type = parse_event_type(raw_type)
    if event_type is None:
        raise reject(f"unknown event type {raw_type[:40]!r}")
    if event_type in BRIDGE_ONLY:
        raise reject(f"type {raw_type!r} is raised by the bridge, not by devices")
    ts: datetime | None = None
    if "ts" in body and body["ts"] is not None:
        try:
            ts = parse_rfc3339(body["ts"])
        except ValueError:
            raise reject("ts must be an RFC 3339 timestamp with an offset") from None
    test = body.get("test", False)
    if not isinstance(test, bool):
        raise reject("test must be true or false")
    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise reject("data must be a JSON object")
    unknown = set(body) - {"event_id", "type", "ts", "test", "data"}
    if unknown:
        raise reject(f"unknown fields: {', '.join(sorted(unknown))[:80]}")
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


def peek_event_id(payload: bytes) -> str | None:
    """Best effort: the event_id of a payload that failed to decode, so its rejection can name it."""
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict):
        try:
            return check_event_id(body.get("event_id"))
        except InvalidIdentifier:
            return None
    return None


def encode_ack(
    event_id: str | None, result: AckResult, *, alert_id: str | None = None, error: str | None = None
) -> bytes:
    """The ack payload for one event."""
    body: dict[str, Any] = {"event_id": event_id, "result": result}
    if alert_id is not None:
        body["alert_id"] = alert_id
    if error is not None:
        body["error"] = error
    return json.dumps(body, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> dict[str, Any]:
    """Parse an ack (used by units and simulators)."""
    body = json.loads(payload)
    if not isinstance(body, dict) or body.get("result") not in ("accepted", "duplicate", "rejected"):
        raise ValueError("not an ack")
    return body


def encode_command(cmd_id: str, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    """A command payload for a unit."""
    body: dict[str, Any] = {"cmd_id": cmd_id, "cmd": cmd}
    if args:
        body["args"] = args
    return json.dumps(body, separators=(",", ":")).encode()


def decode_command(payload: bytes) -> dict[str, Any]:
    """Parse a command (used by units and simulators)."""
    body = json.loads(payload)
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
    return json.dumps(body, separators=(",", ":")).encode()
