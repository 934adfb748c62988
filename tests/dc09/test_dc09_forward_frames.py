"""The forwarding codec and state machines, sans-I/O (devices/dc09_forward.py): frames that read back,
answers read right (and never a crash on any bytes), one delivery's path through ACK, NAK, DUH and
silence, and a path's link supervision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.dc09 import (
    ContactId,
    Frame,
    Qualifier,
    Token,
    build_ack,
    build_duh,
    build_nak,
    parse_contact_id,
    parse_frame,
    parse_sia_dcs,
)
from devices.dc09_forward import (
    Delivery,
    LinkSupervision,
    Message,
    PathSettings,
    Payload,
    Reply,
    StepKind,
    forwardable,
    link_test_frame,
    message_frame,
    parse_upstream_url,
    read_answer,
    who_block,
)
from devices.vocabulary import NO_ALERT, EventType, priority_of

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
KEY = bytes(range(16))
PLAIN = PathSettings(account="C0FFEE")
KEYED = PathSettings(account="C0FFEE", key=KEY, receiver="12", line="3", payload=Payload.SIA_DCS)


def read_back(raw: bytes, path: PathSettings) -> Frame:
    frame = parse_frame(raw, now=NOW, keys=lambda _a: path.key, window=None)
    assert isinstance(frame, Frame), frame
    return frame


def test_every_alert_type_can_be_forwarded() -> None:
    for event_type in EventType:
        if priority_of(event_type) is not None:
            assert forwardable(event_type), event_type
    for restore in (EventType.MAINS_FAIL, EventType.PENDANT, EventType.NO_HEARTBEAT):
        assert forwardable(restore, restore=True)
    assert not forwardable(EventType.CANCEL) and EventType.CANCEL in NO_ALERT


def test_a_pendant_in_contact_id_with_the_residents_account_and_the_unit() -> None:
    message = Message(42, EventType.PENDANT, False, "unit-ada", account="1A2B")
    frame = read_back(message_frame(message, PLAIN, NOW), PLAIN)
    assert (frame.token, frame.sequence, frame.account, frame.receiver, frame.line) == (
        Token.ADM_CID,
        42,
        "1A2B",
        None,
        "0",
    )
    assert parse_contact_id(frame.data) == ContactId(Qualifier.NEW, 101, "01", "000")
    assert [(b.kind, b.value) for b in frame.extended] == [("I", "unit-ada")]
    assert frame.timestamp == NOW


def test_a_restore_in_sia_dcs_encrypted_with_the_paths_account() -> None:
    message = Message(7, EventType.MAINS_FAIL, True, "unit-bo")
    raw = message_frame(message, KEYED, NOW)
    assert raw[9:19] == b'"*SIA-DCS"'
    frame = read_back(raw, KEYED)
    assert (frame.encrypted, frame.account, frame.receiver, frame.line) == (True, "C0FFEE", "12", "3")
    dcs = parse_sia_dcs(frame.data)
    assert dcs is not None and [e.code for e in dcs.events] == ["AR"]


def test_voice_help_is_a_personal_emergency() -> None:
    frame = read_back(message_frame(Message(1, EventType.VOICE_HELP, False, "echo-ann"), PLAIN, NOW), PLAIN)
    assert parse_contact_id(frame.data) == ContactId(Qualifier.NEW, 101, "01", "000")


def test_a_link_test_is_a_null_frame() -> None:
    frame = read_back(link_test_frame(9, KEYED, NOW), KEYED)
    assert (frame.token, frame.sequence, frame.data, frame.encrypted) == (Token.NULL, 9, "", True)


@given(st.text(max_size=200))
def test_the_who_block_is_always_safe(who: str) -> None:
    block = who_block(who)
    assert len(block.value) <= 64
    assert all(0x20 <= ord(c) < 0x7F and c not in "[]|" for c in block.value)
    frame = read_back(message_frame(Message(1, EventType.FALL, False, who), PLAIN, NOW), PLAIN)
    assert frame.extended[0].value == block.value


def request(sequence: int, path: PathSettings) -> Frame:
    return read_back(message_frame(Message(sequence, EventType.PENDANT, False, "u"), path, NOW), path)


@pytest.mark.parametrize("path", [PLAIN, KEYED])
def test_answers_are_read(path: PathSettings) -> None:
    sent = request(5, path)
    assert (
        read_answer(build_ack(sent, now=NOW, key=path.key), sequence=5, path=path, now=NOW).reply is Reply.ACK
    )
    assert (
        read_answer(build_duh(sent, now=NOW, key=path.key), sequence=5, path=path, now=NOW).reply is Reply.DUH
    )
    other = read_answer(build_ack(sent, now=NOW, key=path.key), sequence=6, path=path, now=NOW)
    assert other.reply is Reply.UNREADABLE and "0005" in other.detail
    nak = read_answer(build_nak(now=NOW + timedelta(seconds=90)), sequence=5, path=path, now=NOW)
    assert (nak.reply, nak.offset) == (Reply.NAK, timedelta(seconds=90))


def test_an_answer_in_clear_on_a_keyed_path_is_not_an_ack() -> None:
    sent = request(5, PLAIN)
    answer = read_answer(build_ack(sent, now=NOW), sequence=5, path=KEYED, now=NOW)
    assert answer.reply is Reply.UNREADABLE


@given(st.binary(max_size=300))
def test_reading_any_bytes_never_raises(raw: bytes) -> None:
    for path in (PLAIN, KEYED):
        answer = read_answer(raw, sequence=1, path=path, now=NOW)
        assert answer.reply in Reply


def delivery(*paths: PathSettings) -> tuple[Delivery, list[timedelta]]:
    offsets = [timedelta(0) for _ in paths]
    return Delivery(Message(77, EventType.PENDANT, False, "u"), paths, offsets, tries=2), offsets


def ack_of(raw: bytes, path: PathSettings) -> bytes:
    return build_ack(read_back(raw, path), now=NOW, key=path.key)


def test_silence_then_the_backup_acks() -> None:
    run, _ = delivery(PLAIN, KEYED)
    sends = []
    while (send := run.next_send(NOW)) is not None:
        sends.append(send.path)
        if send.path == 0:
            run.on_silence("refused")
        else:
            assert run.on_answer(ack_of(send.frame, KEYED), NOW).reply is Reply.ACK
    assert sends == [0, 0, 1]
    assert run.result is Reply.ACK and not run.failed
    assert [s.kind for s in run.steps] == [
        StepKind.SENT,
        StepKind.NO_ANSWER,
        StepKind.SENT,
        StepKind.NO_ANSWER,
        StepKind.SWITCHED,
        StepKind.SENT,
        StepKind.ACKED,
    ]
    assert {s.detail.get("sequence") for s in run.steps if s.kind is StepKind.SENT} == {77}


def test_every_path_silent_fails_the_delivery() -> None:
    run, _ = delivery(PLAIN, PLAIN)
    count = 0
    while run.next_send(NOW) is not None:
        count += 1
        run.on_silence("timeout")
    assert count == 4 and run.failed and run.result is None and run.steps[-1].kind is StepKind.FAILED


def test_a_nak_with_a_time_corrects_the_offset_and_earns_a_resend() -> None:
    run, offsets = delivery(PLAIN)
    first = run.next_send(NOW)
    assert first is not None
    run.on_answer(build_nak(now=NOW + timedelta(minutes=3)), NOW)
    assert offsets == [timedelta(minutes=3)]
    second = run.next_send(NOW)
    assert second is not None and read_back(second.frame, PLAIN).timestamp == NOW + timedelta(minutes=3)
    run.on_silence("timeout")
    third = run.next_send(NOW)  # the NAK's resend did not use up the path's own tries
    assert third is not None
    assert run.on_answer(ack_of(third.frame, PLAIN), NOW).reply is Reply.ACK


def test_naks_cannot_loop_forever() -> None:
    run, _ = delivery(PLAIN)
    sends = 0
    while run.next_send(NOW) is not None:
        sends += 1
        run.on_answer(build_nak(now=NOW + timedelta(minutes=sends)), NOW)
    assert sends == 4 and run.failed  # 2 tries + 2 NAK resends


def test_a_duh_ends_the_delivery_unsent_again() -> None:
    run, _ = delivery(PLAIN, PLAIN)
    send = run.next_send(NOW)
    assert send is not None
    run.on_answer(build_duh(read_back(send.frame, PLAIN), now=NOW), NOW)
    assert run.result is Reply.DUH and run.next_send(NOW) is None


def test_link_supervision() -> None:
    link = LinkSupervision(30, now=0)
    assert link.test_due(0)
    link.tested(0)
    assert not link.test_due(29) and link.test_due(30)
    assert not link.check(30)  # silent for exactly the interval: not yet
    assert link.check(31) and link.down and not link.check(40)  # down once
    assert link.answered(41) and not link.down and not link.answered(42)


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("tcp://centre.example:12000", ("tcp", "centre.example", 12000)),
        ("udp://10.0.0.1:9", ("udp", "10.0.0.1", 9)),
        ("tcp://[::1]:9000", ("tcp", "::1", 9000)),
    ],
)
def test_urls(url: str, parts: tuple[str, str, int]) -> None:
    parsed = parse_upstream_url(url)
    assert (parsed.scheme, parsed.host, parsed.port) == parts


@pytest.mark.parametrize("url", ["", "tcp://host", "http://h:1", "tcp://h:0", "tcp://h:65536", "tcp://a b:1"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_upstream_url(url)
