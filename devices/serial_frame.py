"""Line-framed protocol for directly attached units (serial wire contract v1), sans-I/O.

Every frame is one line of printable ASCII::

    $<body>*<CRC>\\r\\n

``<CRC>`` is CRC-16/ARC (poly 0x8005 reflected, init 0, as in SIA DC-09) over the bytes of ``<body>``,
written as four hex digits. ``$`` starts a frame and never appears inside one; either ``\\r`` or ``\\n``
ends it. Fields are separated by ``,``; the last field of a kind may contain commas (it is JSON or free
text). Bodies, by kind:

=====================================================================  ==============
``TC1,<device_id>,<event_id>,<type>,<ts>,<test>[,<data-json>]``        unit -> bridge
``ACK,<device_id>,<event_id>,<alert_id or ->``                         bridge -> unit
``NAK,<device_id or ->,<event_id or ->,<reason>``                      bridge -> unit
``CMD,<device_id>,<cmd_id>,<cmd>[,<args-json>]``                       bridge -> unit
=====================================================================  ==============

``ts`` is RFC 3339 with an offset, or empty when the unit has no clock; ``test`` is ``0`` or ``1``.
A unit answers a command with a ``cmd_result`` event whose data carries ``cmd_id``. A NAK naming an
event id is final (do not resend that event unchanged); a NAK with ``-`` means the line was garbled:
resend. Device ids, event ids and command ids must not contain ``,`` ``*`` or ``$``.

:class:`FrameDecoder` takes bytes with :meth:`FrameDecoder.feed` and hands out one outcome at a time
from :meth:`FrameDecoder.next_frame`: a frame, :data:`NEED_DATA`, or :class:`Malformed` (with a reason
meant for the NAK). Bytes outside a frame (line noise, stray CR/LF) are skipped and counted in
``discarded``; the decoder resynchronises on the next ``$``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devices import strict_json
from devices.events import DeviceEvent, InvalidIdentifier, check_device_id, check_event_id
from devices.mqtt_codec import parse_rfc3339, refusal_text
from devices.vocabulary import BRIDGE_ONLY, parse_event_type

MAX_LINE = 512
START = 0x24  # $
_END_RE = re.compile(rb"[\r\n$]")
_FORBIDDEN_IN_ID = re.compile(r"[,*$]")
_CRC_RE = re.compile(rb"[0-9A-Fa-f]{4}")


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC of ``data`` (check value of b"123456789" is 0xBB3D)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


# --- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedData:
    """The buffer holds no complete frame yet."""


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that started like a frame but cannot be used. ``event_id``/``device_id`` are set only when
    the checksum was good, so a NAK may name them."""

    reason: str
    raw: bytes
    device_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventFrame:
    """A unit's event (``TC1``)."""

    event: DeviceEvent
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class AckFrame:
    device_id: str
    event_id: str
    alert_id: str | None


@dataclass(frozen=True, slots=True)
class NakFrame:
    device_id: str | None
    event_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class CommandFrame:
    device_id: str
    cmd_id: str
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


Frame = EventFrame | AckFrame | NakFrame | CommandFrame


# --- encoding -------------------------------------------------------------------------------------


def _check_wire_id(value: str, what: str) -> str:
    if _FORBIDDEN_IN_ID.search(value) or not value.isascii():
        raise InvalidIdentifier(f"{what} must be ASCII without ',', '*' or '$'")
    return value


def _seal(body: str) -> bytes:
    raw = body.encode("ascii")
    if b"$" in raw or b"\r" in raw or b"\n" in raw:
        raise ValueError("a frame body must not contain '$', CR or LF")
    line = b"$" + raw + b"*" + b"%04X" % crc16(raw) + b"\r\n"
    if len(line) > MAX_LINE:
        raise ValueError(f"frame is {len(line)} bytes; the limit is {MAX_LINE}")
    return line


def _json(value: dict[str, Any]) -> str:
    # ensure_ascii keeps the line ASCII; escaping '$' keeps the frame start unique.
    return strict_json.dumps(value, ensure_ascii=True).replace("$", "\\u0024")


def _clean_reason(reason: str) -> str:
    text = "".join(c if c.isascii() and c.isprintable() and c not in "$*" else " " for c in reason)
    return text.strip()[:120] or "rejected"


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_event(
    device_id: str,
    event_id: str,
    event_type: str,
    *,
    ts: datetime | None = None,
    test: bool = False,
    data: dict[str, Any] | None = None,
) -> bytes:
    """A ``TC1`` event line (used by units and simulators)."""
    _check_wire_id(check_device_id(device_id), "device_id")
    _check_wire_id(check_event_id(event_id), "event_id")
    body = f"TC1,{device_id},{event_id},{event_type},{format_ts(ts) if ts else ''},{int(test)}"
    if data:
        body += "," + _json(data)
    return _seal(body)


def encode_ack(device_id: str, event_id: str, alert_id: str | None = None) -> bytes:
    """ACK: the event is durably stored (accepted or duplicate)."""
    alert = _clean_reason(alert_id).replace(",", " ") if alert_id else "-"
    return _seal(f"ACK,{device_id},{event_id},{alert}")


def encode_nak(device_id: str | None, event_id: str | None, reason: str) -> bytes:
    """NAK with a reason. Pass ids only when they were read from a frame with a good checksum."""
    dev = device_id if device_id and not _FORBIDDEN_IN_ID.search(device_id) else "-"
    evt = event_id if event_id and event_id.isascii() and not _FORBIDDEN_IN_ID.search(event_id) else "-"
    return _seal(f"NAK,{dev},{evt},{_clean_reason(reason)}")


def encode_command(device_id: str, cmd_id: str, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    """CMD line for a unit; ``cmd`` is a word such as ``call_centre``, ``announce``, ``configure``."""
    _check_wire_id(check_device_id(device_id), "device_id")
    _check_wire_id(check_event_id(cmd_id), "cmd_id")
    if not re.fullmatch(r"[a-z_]{1,32}", cmd):
        raise ValueError("cmd must be 1-32 characters of a-z and _")
    return _seal(f"CMD,{device_id},{cmd_id},{cmd},{_json(args) if args else ''}")


# --- decoding -------------------------------------------------------------------------------------


class _Bad(ValueError):
    def __init__(self, reason: str, device_id: str | None = None, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.device_id, self.event_id = reason, device_id, event_id


def _json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = strict_json.loads(text)
    except strict_json.JSONRefused as exc:
        raise _Bad(refusal_text(what, exc)[:120]) from None
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be a JSON object")
    return value


def _ident(value: str, what: str) -> str:
    try:
        if what == "device_id":
            check_device_id(value)
        else:
            check_event_id(value)
        return _check_wire_id(value, what)
    except InvalidIdentifier as exc:
        raise _Bad(str(exc)) from None


def _decode_event(fields: list[str], raw: bytes, received_at: datetime) -> EventFrame:
    if len(fields) < 6:
        raise _Bad("TC1 needs device_id,event_id,type,ts,test")
    device_id = _ident(fields[1], "device_id")
    event_id = _ident(fields[2], "event_id")

    def bad(reason: str) -> _Bad:
        return _Bad(reason, device_id, event_id)

    event_type = parse_event_type(fields[3])
    if event_type is None:
        raise bad(f"unknown event type {fields[3][:40]}")
    if event_type in BRIDGE_ONLY:
        raise bad(f"type {fields[3]} is raised by the bridge not by devices")
    ts = None
    if fields[4]:
        try:
            ts = parse_rfc3339(fields[4])
        except ValueError:
            raise bad("ts must be RFC 3339 with an offset") from None
    if fields[5] not in ("0", "1"):
        raise bad("test must be 0 or 1")
    try:
        data = _json_object(",".join(fields[6:]), "data") if len(fields) > 6 else {}
    except _Bad as exc:
        raise bad(exc.reason) from None  # the checksum was good: resending it unchanged cannot help
    event = DeviceEvent(
        device_id=device_id,
        event_id=event_id,
        type=event_type,
        received_at=received_at,
        ts=ts,
        test=fields[5] == "1",
        data=data,
        source="serial",
    )
    return EventFrame(event, raw)


def decode_body(body: str, raw: bytes = b"", *, received_at: datetime | None = None) -> Frame:
    """Decode the text between ``$`` and ``*`` (checksum already checked). Raises ValueError."""
    kind, _, rest = body.partition(",")
    if kind == "TC1":
        return _decode_event(body.split(","), raw, received_at or datetime.now(UTC))
    if kind == "ACK":
        parts = rest.split(",")
        if len(parts) != 3:
            raise _Bad("ACK needs device_id,event_id,alert_id")
        return AckFrame(parts[0], parts[1], None if parts[2] == "-" else parts[2])
    if kind == "NAK":
        parts = rest.split(",", 2)
        if len(parts) != 3:
            raise _Bad("NAK needs device_id,event_id,reason")
        dev, evt, reason = parts
        return NakFrame(None if dev == "-" else dev, None if evt == "-" else evt, reason)
    if kind == "CMD":
        parts = rest.split(",", 3)
        if len(parts) < 3:
            raise _Bad("CMD needs device_id,cmd_id,cmd")
        args = _json_object(parts[3] if len(parts) > 3 else "", "args")
        return CommandFrame(_ident(parts[0], "device_id"), _ident(parts[1], "cmd_id"), parts[2], args)
    raise _Bad(f"unknown frame kind {kind[:8]}")


class FrameDecoder:
    """Split a byte stream into frames; see the module docstring for the outcomes."""

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max_line = max_line
        #: Bytes dropped outside frames (noise, stray CR/LF).
        self.discarded = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self, *, received_at: datetime | None = None) -> Frame | NeedData | Malformed:
        buf = self._buf
        while True:
            # Drop everything before the next frame start.
            start = buf.find(b"$")
            if start < 0:
                self.discarded += len(buf)
                buf.clear()
                return NEED_DATA
            if start:
                self.discarded += start
                del buf[:start]
            # buf[0] is '$': find where this line ends, or a new '$' that cuts it short.
            match = _END_RE.search(buf, 1, self._max_line + 1)
            if match is None:
                if len(buf) > self._max_line:
                    raw = bytes(buf[: self._max_line])
                    del buf[:1]  # skip this '$'; the rest is noise up to the next '$'
                    return Malformed(f"line longer than {self._max_line} bytes", raw)
                return NEED_DATA
            end = match.start()
            raw = bytes(buf[:end])
            cut_short = buf[end] == START
            del buf[: end if cut_short else end + 1]
            if cut_short:
                return Malformed("frame cut short by a new '$'", raw)
            return self._decode_line(raw, received_at)

    def _decode_line(self, raw: bytes, received_at: datetime | None) -> Frame | Malformed:
        star = raw.rfind(b"*")
        if star < 0 or not _CRC_RE.fullmatch(raw[star + 1 :]):
            return Malformed("missing checksum", raw)
        body = raw[1:star]
        if crc16(body) != int(raw[star + 1 :], 16):
            return Malformed("checksum mismatch", raw)
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return Malformed("frame is not ASCII", raw)
        if not text.isprintable():
            return Malformed("frame has control characters", raw)
        try:
            return decode_body(text, raw, received_at=received_at)
        except _Bad as exc:
            return Malformed(exc.reason, raw, exc.device_id, exc.event_id)
