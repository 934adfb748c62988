"""Byte vectors for the serial frame codec (devices/serial_frame.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devices.events import InvalidIdentifier
from devices.serial_frame import (
    MAX_LINE,
    NEED_DATA,
    AckFrame,
    CommandFrame,
    EventFrame,
    FrameDecoder,
    Malformed,
    NakFrame,
    crc16,
    encode_ack,
    encode_command,
    encode_event,
    encode_nak,
)

TS = datetime(2026, 5, 1, 12, 30, 5, tzinfo=UTC)


def sealed(body: bytes) -> bytes:
    return b"$" + body + b"*" + b"%04X" % crc16(body) + b"\r\n"


def decode_all(data: bytes) -> list[object]:
    decoder = FrameDecoder()
    decoder.feed(data)
    out: list[object] = []
    while (item := decoder.next_frame()) is not NEED_DATA:
        out.append(item)
    return out


def test_crc16_arc_check_value() -> None:
    assert crc16(b"123456789") == 0xBB3D


# (encoded bytes, what the encoder was asked for) - both directions checked below.
VECTORS: list[tuple[bytes, bytes]] = [
    (encode_event("unit-1", "e1", "pendant", ts=TS), sealed(b"TC1,unit-1,e1,pendant,2026-05-01T12:30:05Z,0")),
    (encode_event("unit-1", "e2", "fall", test=True), sealed(b"TC1,unit-1,e2,fall,,1")),
    (
        encode_event("unit-1", "e3", "cmd_result", data={"cmd_id": "c1", "result": "ok"}),
        sealed(b'TC1,unit-1,e3,cmd_result,,0,{"cmd_id":"c1","result":"ok"}'),
    ),
    (encode_ack("unit-1", "e1", "A17"), sealed(b"ACK,unit-1,e1,A17")),
    (encode_ack("unit-1", "hb-9", None), sealed(b"ACK,unit-1,hb-9,-")),
    (encode_nak(None, None, "checksum mismatch"), sealed(b"NAK,-,-,checksum mismatch")),
    (
        encode_nak("unit-1", "e4", "unknown event type x, sorry"),
        sealed(b"NAK,unit-1,e4,unknown event type x, sorry"),
    ),
    (
        encode_command("unit-1", "c1", "configure", {"heartbeat_s": 600}),
        sealed(b'CMD,unit-1,c1,configure,{"heartbeat_s":600}'),
    ),
    (encode_command("unit-1", "c2", "call_centre"), sealed(b"CMD,unit-1,c2,call_centre,")),
]


@pytest.mark.parametrize(("encoded", "expected"), VECTORS)
def test_encoders_produce_the_documented_bytes(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


def test_decoding_each_kind() -> None:
    frames = decode_all(b"".join(enc for enc, _ in VECTORS))
    assert len(frames) == len(VECTORS)
    first = frames[0]
    assert isinstance(first, EventFrame)
    ev = first.event
    assert (ev.device_id, ev.event_id, ev.type, ev.ts, ev.test, ev.source) == (
        "unit-1",
        "e1",
        "pendant",
        TS,
        False,
        "serial",
    )
    assert isinstance(frames[1], EventFrame) and frames[1].event.test and frames[1].event.ts is None
    assert isinstance(frames[2], EventFrame) and frames[2].event.data == {"cmd_id": "c1", "result": "ok"}
    assert frames[3] == AckFrame("unit-1", "e1", "A17")
    assert frames[4] == AckFrame("unit-1", "hb-9", None)
    assert frames[5] == NakFrame(None, None, "checksum mismatch")
    assert frames[6] == NakFrame("unit-1", "e4", "unknown event type x, sorry")
    assert frames[7] == CommandFrame("unit-1", "c1", "configure", {"heartbeat_s": 600})
    assert frames[8] == CommandFrame("unit-1", "c2", "call_centre", {})


@pytest.mark.parametrize(("encoded", "_"), VECTORS)
def test_every_prefix_needs_more_data(encoded: bytes, _: bytes) -> None:
    frame_bytes = encoded.rstrip(b"\r\n")
    for cut in range(len(frame_bytes)):
        decoder = FrameDecoder()
        decoder.feed(frame_bytes[:cut])
        assert decoder.next_frame() is NEED_DATA, cut


def test_byte_at_a_time_gives_the_frame_once() -> None:
    frame = encode_event("unit-1", "e1", "smoke")
    decoder = FrameDecoder()
    results = []
    for byte in frame:
        decoder.feed(bytes([byte]))
        while (item := decoder.next_frame()) is not NEED_DATA:
            results.append(item)
    assert len(results) == 1 and isinstance(results[0], EventFrame)


def test_noise_before_a_frame_is_skipped_and_counted() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\xffgarbage\r\n" + encode_event("u", "e", "pendant"))
    item = decoder.next_frame()
    assert isinstance(item, EventFrame)
    assert decoder.discarded == len(b"\x00\xffgarbage\r\n")


def test_a_new_frame_start_inside_a_frame_resynchronises() -> None:
    good = encode_event("u", "e2", "fall")
    out = decode_all(b"$TC1,u,e1,pend" + good)
    assert isinstance(out[0], Malformed) and "cut short" in out[0].reason
    assert out[0].raw == b"$TC1,u,e1,pend"
    assert isinstance(out[1], EventFrame) and out[1].event.event_id == "e2"


BAD: list[tuple[bytes, str]] = [
    (b"$TC1,u,e,pendant,,0*0000\r\n", "checksum mismatch"),
    (b"$TC1,u,e,pendant,,0\r\n", "missing checksum"),
    (b"$TC1,u,e,pendant,,0*12G4\r\n", "missing checksum"),
    (sealed(b"TC1,u,e,teleport,,0"), "unknown event type teleport"),
    (sealed(b"TC1,u,e,no_heartbeat,,0"), "raised by the bridge"),
    (sealed(b"TC1,u,e,unknown_signal,,0"), "raised by the bridge"),
    (sealed(b'TC1,u,e,restored,,0,{"restores":"smoke"}'), "raised by the bridge"),
    (sealed(b"TC1,u,e,pendant,yesterday,0"), "RFC 3339"),
    (sealed(b"TC1,u,e,pendant,2026-05-01T12:00:00,0"), "RFC 3339"),
    (sealed(b"TC1,u,e,pendant,,2"), "test must be 0 or 1"),
    (sealed(b"TC1,u,e,pendant,,0,[1]"), "JSON object"),
    (sealed(b"TC1,u,e,pendant,,0,{nope"), "not JSON"),
    (sealed(b"TC1,u,e,pendant"), "TC1 needs"),
    (sealed(b"TC1,bad id!,e,pendant,,0"), "device_id"),
    (sealed(b"TC1,u,,pendant,,0"), "event_id"),
    (sealed(b"TC1,u," + b"x" * 65 + b",pendant,,0"), "event_id"),
    (sealed(b"XYZ,1,2"), "unknown frame kind"),
    (sealed(b"ACK,u,e"), "ACK needs"),
    (b"$TC1,u,e,p\xe9ndant,,0*" + b"%04X" % crc16(b"TC1,u,e,p\xe9ndant,,0") + b"\r\n", "not ASCII"),
    (b"$TC1,u,e,pe\x07ndant,,0*" + b"%04X" % crc16(b"TC1,u,e,pe\x07ndant,,0") + b"\r\n", "control"),
]


@pytest.mark.parametrize(("line", "reason"), BAD)
def test_bad_frames_are_malformed_with_a_reason(line: bytes, reason: str) -> None:
    out = decode_all(line + encode_event("u", "next", "pendant"))
    assert isinstance(out[0], Malformed), out
    assert reason in out[0].reason
    # the decoder carries on: the next frame is intact
    assert isinstance(out[1], EventFrame) and out[1].event.event_id == "next"


def test_semantic_errors_name_the_event_but_checksum_errors_do_not() -> None:
    (bad_type,) = decode_all(sealed(b"TC1,u,e7,teleport,,0"))
    assert isinstance(bad_type, Malformed) and (bad_type.device_id, bad_type.event_id) == ("u", "e7")
    (bad_crc,) = decode_all(b"$TC1,u,e7,pendant,,0*0000\r\n")
    assert isinstance(bad_crc, Malformed) and bad_crc.event_id is None


def test_oversized_line_is_malformed_and_the_next_frame_survives() -> None:
    long_line = b"$TC1," + b"A" * (MAX_LINE + 100) + b"\r\n"
    out = decode_all(long_line + encode_event("u", "after", "fall"))
    assert isinstance(out[0], Malformed) and "longer than" in out[0].reason
    assert len(out[0].raw) == MAX_LINE
    assert isinstance(out[1], EventFrame) and out[1].event.event_id == "after"
    assert len(out) == 2


def test_oversized_line_is_reported_before_its_end_arrives() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"$" + b"A" * MAX_LINE)
    assert isinstance(decoder.next_frame(), Malformed)
    decoder.feed(b"A" * 1000)  # the rest of it is noise until the next '$'
    assert decoder.next_frame() is NEED_DATA
    decoder.feed(encode_event("u", "ok", "pendant"))
    assert isinstance(decoder.next_frame(), EventFrame)


def test_bare_lf_and_bare_cr_terminate_too() -> None:
    frame = encode_event("u", "e", "pendant").rstrip(b"\r\n")
    assert isinstance(decode_all(frame + b"\n")[0], EventFrame)
    assert isinstance(decode_all(frame + b"\r")[0], EventFrame)


def test_lowercase_checksum_is_accepted() -> None:
    body = b"TC1,u,e,heat,,0"
    line = b"$" + body + b"*" + (b"%04x" % crc16(body)) + b"\r\n"
    assert isinstance(decode_all(line)[0], EventFrame)


def test_dollar_in_data_is_escaped_so_framing_holds() -> None:
    frame = encode_event("u", "e", "pendant", data={"note": "£5 $ off"})
    assert frame.count(b"$") == 1 and frame.isascii()
    (out,) = decode_all(frame)
    assert isinstance(out, EventFrame) and out.event.data == {"note": "£5 $ off"}


@pytest.mark.parametrize("bad_id", ["a,b", "a*b", "a$b"])
def test_encoder_refuses_ids_that_would_break_the_frame(bad_id: str) -> None:
    with pytest.raises(InvalidIdentifier):
        encode_event("u", bad_id, "pendant")


def test_nak_reason_is_sanitised() -> None:
    frame = encode_nak("u", "e", "bad $ thing * here\r\nü")
    (out,) = decode_all(frame)
    assert isinstance(out, NakFrame) and "$" not in out.reason and "*" not in out.reason
