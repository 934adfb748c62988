"""The DC-09 codec (devices/dc09.py): known-good vectors checked against the frame rules, every refusal
rule with a frame whose CRC and length are right except for the fault under test, the answers, the
stream splitter, and encryption with every key size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices import dc09
from devices.dc09 import (
    NEED_DATA,
    ContactId,
    ExtendedData,
    Frame,
    FrameSplitter,
    Qualifier,
    Refusal,
    Refused,
    SiaDcs,
    TimeWindow,
    Token,
)

NOW = datetime(2026, 11, 30, 5, 50, 0, tzinfo=UTC)
TS = "_05:50:00,11-30-2026"
KEYS = {16: b"0123456789abcdef", 24: b"0123456789abcdef01234567", 32: b"0123456789abcdef0123456789abcdef"}


def arc(data: bytes) -> int:
    """CRC-16/ARC written out bit by bit from its definition (poly 0x8005 reflected = 0xA001, init 0),
    independent of the codec's table."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def seal(body: str, *, crc: int | None = None, length: int | None = None, lower: bool = False) -> bytes:
    """A frame around ``body`` with the right CRC and length unless told otherwise."""
    data = body.encode("ascii")
    head = f"{arc(data) if crc is None else crc:04X}{len(data) if length is None else length:04X}"
    return b"\n" + (head.lower() if lower else head).encode() + data + b"\r"


def parse(raw: bytes, keys: dict[str, bytes] | None = None, now: datetime = NOW) -> Frame | Refused:
    table = keys or {}
    return dc09.parse_frame(raw, now=now, keys=table.get)


def frame(raw: bytes, keys: dict[str, bytes] | None = None) -> Frame:
    result = parse(raw, keys)
    assert isinstance(result, Frame), result
    return result


def refused(raw: bytes, keys: dict[str, bytes] | None = None, now: datetime = NOW) -> Refused:
    result = parse(raw, keys, now)
    assert isinstance(result, Refused), result
    return result


def test_the_crc_is_crc16_arc() -> None:
    assert arc(b"123456789") == 0xBB3D  # the catalogue check value of CRC-16/ARC
    assert dc09.crc16(b"123456789") == 0xBB3D


# Vectors written out by hand; the test below checks each one's CRC and length against the rules, so
# a wrong vector (as several published ones are) fails here rather than passing unnoticed.
VECTORS: list[tuple[bytes, Token, str, str]] = [
    (
        b'\nDFFE003D"ADM-CID"0001R1L1#1234[#1234|1101 01 001]_05:50:00,11-30-2026\r',
        Token.ADM_CID,
        "1234",
        "1101",
    ),
    (b'\n401D003A"SIA-DCS"0002L0#1234[#1234|Nri1/MA001]_05:50:00,11-30-2026\r', Token.SIA_DCS, "1234", "MA"),
    (b'\nFF710029"NULL"0003R0L0#AB12[]_05:50:00,11-30-2026\r', Token.NULL, "AB12", ""),
    (b'\n8db90020"SIA-DCS"0004L0#AAA[|Nri1/CL501]\r', Token.SIA_DCS, "AAA", "CL"),  # lower-case hex
]


@pytest.mark.parametrize(("raw", "token", "account", "code"), VECTORS)
def test_known_good_vectors_keep_the_frame_rules_and_parse(
    raw: bytes, token: Token, account: str, code: str
) -> None:
    body = raw[9:-1]
    assert int(raw[1:5], 16) == arc(body), "vector CRC"
    assert int(raw[5:9], 16) == len(body), "vector length"
    got = frame(raw)
    assert (got.token, got.account) == (token, account)
    payload = dc09.read_payload(got)
    if isinstance(payload, ContactId):
        assert payload.raw == code
    elif isinstance(payload, SiaDcs):
        assert payload.events[0].code == code
    else:
        assert code == ""


def test_a_frame_reads_every_field() -> None:
    body = '"ADM-CID"0042R1A2L3C#12AB[#12AB|1101 01 015][Iunit-7][XE0.1234][YN51.5]' + TS
    got = frame(seal(body))
    assert got.sequence == 42
    assert (got.receiver, got.line, got.account) == ("1A2", "3C", "12AB")
    assert got.data == "#12AB|1101 01 015"
    assert got.extended == (
        ExtendedData("I", "unit-7"),
        ExtendedData("X", "E0.1234"),
        ExtendedData("Y", "N51.5"),
    )
    assert got.timestamp == NOW
    assert dc09.parse_contact_id(got.data) == ContactId(Qualifier.NEW, 101, "01", "015")


def test_the_account_may_be_only_in_the_data_block() -> None:
    got = frame(seal('"SIA-DCS"4738R0001L0001[#006969|Nri04/OP001NM]'))
    assert got.account == "006969"


# --- every refusal, each frame right in CRC and length except for the fault under test ---------------

GOOD = '"ADM-CID"0001R1L1#1234[#1234|1101 01 001]' + TS


def test_a_bad_crc_is_refused() -> None:
    right = arc(GOOD.encode())
    got = refused(seal(GOOD, crc=right ^ 0x0001))
    assert got.reason is Refusal.BAD_CRC
    assert (got.token, got.account, got.sequence) == ("ADM-CID", "1234", 1)  # for the log and the counters


def test_a_bad_length_is_refused() -> None:
    got = refused(seal(GOOD, length=len(GOOD) + 1))
    assert got.reason is Refusal.BAD_LENGTH


def test_a_truncated_frame_is_a_bad_length() -> None:
    whole = seal(GOOD)
    assert refused(whole[:-6]).reason is Refusal.BAD_LENGTH


def test_an_unknown_id_is_refused_with_what_could_be_read() -> None:
    got = refused(seal('"SIA-DC4"0007L0#1234[#1234|Nri1/MA001]' + TS))
    assert got.reason is Refusal.UNKNOWN_TOKEN
    assert (got.token, got.account, got.sequence) == ("SIA-DC4", "1234", 7)


def test_a_stale_timestamp_is_refused_both_ways() -> None:
    old = NOW - timedelta(seconds=41)
    ahead = NOW + timedelta(seconds=21)
    for moment in (old, ahead):
        body = '"ADM-CID"0001L0#1234[#1234|1101 01 001]' + dc09.format_timestamp(moment)
        assert refused(seal(body)).reason is Refusal.STALE_TIMESTAMP
    edge = '"ADM-CID"0001L0#1234[#1234|1101 01 001]' + dc09.format_timestamp(NOW - timedelta(seconds=40))
    assert isinstance(parse(seal(edge)), Frame)


def test_the_time_window_is_a_parameter() -> None:
    body = '"ADM-CID"0001L0#1234[#1234|1101 01 001]' + dc09.format_timestamp(NOW - timedelta(seconds=100))
    wide = dc09.parse_frame(seal(body), now=NOW, window=TimeWindow(max_age_s=120, max_ahead_s=5))
    assert isinstance(wide, Frame)
    assert isinstance(dc09.parse_frame(seal(body), now=NOW, window=None), Frame)


def test_an_encrypted_frame_without_a_timestamp_is_refused() -> None:
    key = KEYS[16]
    plain = "|Nri1/MA001]"
    plain = "x" * (16 - len(plain) % 16) + plain
    body = '"*SIA-DCS"0001L0#1234[' + dc09.encrypt_block(key, plain)
    assert refused(seal(body), {"1234": key}).reason is Refusal.NO_TIMESTAMP


def test_an_encrypted_frame_without_a_key_or_with_the_wrong_one_is_undecryptable() -> None:
    raw = dc09.build_frame(
        token=Token.SIA_DCS, sequence=1, account="1234", data="#1234|Nri1/MA001", timestamp=NOW, key=KEYS[16]
    )
    assert refused(raw).reason is Refusal.UNDECRYPTABLE
    assert refused(raw, {"1234": KEYS[16][::-1]}).reason is Refusal.UNDECRYPTABLE
    assert refused(raw, {"1234": KEYS[16]}, now=NOW + timedelta(minutes=5)).reason is Refusal.STALE_TIMESTAMP


def test_a_frame_in_clear_from_an_account_with_a_key_is_refused() -> None:
    got = refused(seal(GOOD), {"1234": KEYS[16]})
    assert (got.reason, got.account) == (Refusal.NOT_ENCRYPTED, "1234")
    assert isinstance(parse(seal(GOOD), {"9999": KEYS[16]}), Frame)  # another account's key is no matter


def test_an_encrypted_part_that_is_not_whole_blocks_of_hex_is_undecryptable() -> None:
    for tail in ("ABC", "Z" * 32, "00" * 15):
        assert (
            refused(seal('"*SIA-DCS"0001L0#1234[' + tail), {"1234": KEYS[16]}).reason is Refusal.UNDECRYPTABLE
        )


@pytest.mark.parametrize(
    "body",
    [
        '"ADM-CID"001L0#1234[#1234|1101 01 001]',  # three-digit sequence
        '"ADM-CID"0001#1234[#1234|1101 01 001]',  # no line
        '"ADM-CID"0001L0#1234#1234|1101 01 001]',  # no [
        '"ADM-CID"0001L0#1234[#1234|1101 01 001',  # no ]
        '"ADM-CID"0001L0#1234[#1234|1101 01 001]_25:61:00,13-40-2026',  # no such time
        '"ADM-CID"0001L0#1234[#1234|1101 01 001]garbage',  # junk after the data
        '"ADM-CID"0001L0[1101 01 001]',  # no account anywhere
        '"ADM-CID"0001L0#12[#12|1101 01 001]',  # account too short
        '"NULL"0001L0#1234[]\x07',  # a control character
    ],
)
def test_a_malformed_frame_is_refused(body: str) -> None:
    assert refused(seal(body)).reason is Refusal.MALFORMED


def test_garbage_and_an_empty_frame_are_malformed() -> None:
    for raw in (b"", b"\n\r", b"\x00" * 40, b"hello world", b"\nZZZZ0010abcdefghij\r", b"\xff" * 9):
        assert refused(raw).reason is Refusal.MALFORMED


# --- answers ------------------------------------------------------------------------------------------


def test_the_ack_echoes_sequence_receiver_line_and_account() -> None:
    request = frame(seal(GOOD))
    ack = dc09.build_ack(request, now=NOW)
    assert ack == seal('"ACK"0001R1L1#1234[]')
    answer = frame(ack)
    assert (answer.token, answer.sequence, answer.receiver, answer.line, answer.account) == (
        Token.ACK,
        1,
        "1",
        "1",
        "1234",
    )


def test_the_nak_carries_the_receivers_time_and_is_never_encrypted() -> None:
    nak = dc09.build_nak(now=NOW)
    assert nak == seal('"NAK"0000R0L0A0[]' + TS)
    got = dc09.parse_frame(nak, now=NOW - timedelta(hours=3))  # a NAK's time is never "stale"
    assert isinstance(got, Frame) and got.token is Token.NAK and not got.encrypted
    assert (got.receiver, got.line, got.account) == ("0", "0", "")
    assert dc09.clock_offset(got, NOW - timedelta(seconds=90)) == timedelta(seconds=90)


@pytest.mark.parametrize("size", sorted(KEYS))
def test_an_encrypted_request_gets_an_encrypted_ack_and_duh(size: int) -> None:
    key = KEYS[size]
    raw = dc09.build_frame(
        token=Token.ADM_CID, sequence=77, account="ABC123", receiver="12", line="3",
        data="#ABC123|1101 01 001", timestamp=NOW, key=key,
    )  # fmt: skip
    request = frame(raw, {"ABC123": key})
    for build, token in ((dc09.build_ack, Token.ACK), (dc09.build_duh, Token.DUH)):
        answer_raw = build(request, now=NOW, key=key)
        assert answer_raw[9:11] == b'"*'
        answer = frame(answer_raw, {"ABC123": key})
        assert (answer.token, answer.encrypted, answer.sequence, answer.account) == (
            token,
            True,
            77,
            "ABC123",
        )
        assert answer.timestamp == NOW
    with pytest.raises(ValueError, match="key"):
        dc09.build_ack(request, now=NOW)


# --- encryption ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(KEYS))
@pytest.mark.parametrize("token", [Token.ADM_CID, Token.SIA_DCS, Token.NULL])
def test_encryption_round_trip_with_every_key_size(size: int, token: Token) -> None:
    key = KEYS[size]
    data = {Token.ADM_CID: "#1234|1101 01 001", Token.SIA_DCS: "#1234|Nri1/MA001", Token.NULL: ""}[token]
    extended = (ExtendedData("I", "unit-7"),)
    raw = dc09.build_frame(
        token=token, sequence=9999, account="1234", data=data, extended=extended, timestamp=NOW, key=key
    )
    body = raw[9:-1]
    assert int(raw[1:5], 16) == arc(body) and int(raw[5:9], 16) == len(body)
    hex_part = body.split(b"[", 1)[1].decode()
    plain = dc09.decrypt_block(key, hex_part)
    assert plain is not None and len(plain) % 16 == 0
    pad = plain[: plain.index(data or "]")]
    assert pad and not set(pad) & set("[]|")
    got = frame(raw, {"1234": key})
    assert (got.token, got.encrypted, got.sequence, got.data, got.extended, got.timestamp) == (
        token, True, 9999, data, extended, NOW,
    )  # fmt: skip


def test_a_given_pad_is_used_and_checked() -> None:
    tail = "#1234|1101 01 001]" + TS  # 38 characters: a pad of 10 makes 48
    raw = dc09.build_frame(
        token=Token.ADM_CID, sequence=1, account="1234", data="#1234|1101 01 001", timestamp=NOW,
        key=KEYS[16], pad="0" * (48 - len(tail)),
    )  # fmt: skip
    plain = dc09.decrypt_block(KEYS[16], raw[9:-1].split(b"[", 1)[1].decode())
    assert plain == "0" * 10 + tail
    for bad in ("|" * 10, "[" * 10, "]" * 10, "0" * 9):
        with pytest.raises(ValueError, match="pad"):
            dc09.build_frame(
                token=Token.ADM_CID, sequence=1, account="1234", data="#1234|1101 01 001", timestamp=NOW,
                key=KEYS[16], pad=bad,
            )  # fmt: skip


def test_keys_as_installers_write_them() -> None:
    assert dc09.parse_key("AAAAAAAAAAAAAAAA") == b"A" * 16
    assert dc09.parse_key("00" * 24) == bytes(24)
    assert dc09.parse_key("0f" * 32) == b"\x0f" * 32
    for bad in ("short", "A" * 17, "zz" * 16 + "z", "é" * 16):
        with pytest.raises(ValueError):
            dc09.parse_key(bad)


def test_the_key_in_extended_data_is_never_printed() -> None:
    block = ExtendedData("K", "00112233445566778899AABBCCDDEEFF")
    assert "0011" not in repr(block)
    assert "0011" not in repr(Frame(Token.SIA_DCS, False, 1, None, "0", "1234", "", (block,)))


# --- building -----------------------------------------------------------------------------------------


def test_build_refuses_fields_that_break_the_frame_rules() -> None:
    base = {"token": Token.SIA_DCS, "sequence": 1, "account": "1234", "timestamp": NOW}
    for change in (
        {"sequence": 10000},
        {"sequence": -1},
        {"account": "12"},
        {"account": "12345678901234567"},
        {"account": "12G4"},
        {"line": ""},
        {"receiver": "1234567"},
        {"data": "a]b"},
        {"extended": (ExtendedData("I", "x]"),)},
        {"extended": (ExtendedData("ii", "x"),)},
    ):
        with pytest.raises(ValueError):
            dc09.build_frame(**{**base, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timestamp"):
        dc09.build_frame(token=Token.SIA_DCS, sequence=1, account="1234", key=KEYS[16])


def test_payload_builders() -> None:
    assert dc09.contact_id_data("1234", ContactId(Qualifier.RESTORE, 301, "00", "000")) == "#1234|3301 00 000"
    assert dc09.sia_dcs_data("1234", "QA", address="001", area="1") == "#1234|Nri1/QA001"
    assert dc09.parse_sia_dcs("|Nri1CL0^VX FRONTE ^") == SiaDcs(
        True, (("ri", "1"),), (dc09.SiaEvent("CL", "0^VX FRONTE ^"),)
    )
    assert dc09.parse_sia_dcs("#1234|Nid5/ri2/BA001/BA002") == SiaDcs(
        True, (("id", "5"), ("ri", "2")), (dc09.SiaEvent("BA", "001"), dc09.SiaEvent("BA", "002"))
    )
    assert dc09.parse_contact_id("#1234|6154 02 003") == ContactId(Qualifier.STILL_PRESENT, 154, "02", "003")
    assert dc09.parse_contact_id("#1234|2101 01 001") is None  # qualifier 2 does not exist
    assert dc09.parse_sia_dcs("#1234|N") is None


# --- the stream ---------------------------------------------------------------------------------------


def test_the_splitter_cuts_several_frames_split_across_reads_with_trailing_nuls() -> None:
    frames = [VECTORS[i][0] for i in range(4)]
    stream = frames[0] + b"\x00\x00\x00" + frames[1] + frames[2] + b"\x00" + frames[3]
    splitter = FrameSplitter()
    out: list[bytes] = []
    for i in range(0, len(stream), 7):  # reads of 7 bytes
        splitter.feed(stream[i : i + 7])
        while (item := splitter.next_frame()) is not NEED_DATA:
            assert isinstance(item, bytes)
            out.append(item)
    assert [frame(raw).account for raw in out] == ["1234", "1234", "AB12", "AAA"]
    assert splitter.discarded == 4 * 1 + 4  # each LF, and the NULs


def test_the_splitter_refuses_an_overlong_run_once_and_resynchronises() -> None:
    splitter = FrameSplitter()
    splitter.feed(b"\n" + b"9" * (dc09.MAX_FRAME + 20))
    first = splitter.next_frame()
    assert isinstance(first, Refused) and first.reason is Refusal.MALFORMED
    splitter.feed(b"9" * 50)
    assert splitter.next_frame() is NEED_DATA
    splitter.feed(b"999\r" + VECTORS[0][0])
    got = splitter.next_frame()
    assert isinstance(got, bytes) and frame(got).account == "1234"
    assert splitter.next_frame() is NEED_DATA


def test_a_resend_has_the_same_resend_key_whatever_its_pad_and_time() -> None:
    fields = {"token": Token.ADM_CID, "sequence": 12, "account": "1234", "data": "#1234|1101 01 001"}
    first = frame(dc09.build_frame(**fields, timestamp=NOW, key=KEYS[16]), {"1234": KEYS[16]})  # type: ignore[arg-type]
    again = frame(
        dc09.build_frame(**fields, timestamp=NOW + timedelta(seconds=5), key=KEYS[16]),  # type: ignore[arg-type]
        {"1234": KEYS[16]},
    )
    assert first.raw != again.raw and first.resend_key == again.resend_key
    other = frame(
        dc09.build_frame(**{**fields, "sequence": 13}, timestamp=NOW, key=KEYS[16]), {"1234": KEYS[16]}
    )  # type: ignore[arg-type]
    assert other.resend_key != first.resend_key
    assert len(first.resend_key) == 64


def test_a_naive_now_is_the_callers_bug_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="time zone"):
        dc09.parse_frame(seal(GOOD), now=NOW.replace(tzinfo=None))
