"""Cross-checks with a real peer, pysiaalarm (PyPI): what our codec builds parses in pysiaalarm's own
receiver code, and what pysiaalarm builds (its test-line helper, its receiver's answers) parses in ours.

pysiaalarm's test helper writes a wrong length field (the decimal digits of the length read as hex), and
its receiver never checks lengths, so its own tests never noticed: our codec refuses those lines with
``bad_length``, and parses them once only the length is corrected (docs/dc09.md lists this and the
other faults found)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from Crypto.Cipher import AES  # pycryptodome, pysiaalarm's own AES
from pysiaalarm import SIAAccount
from pysiaalarm.base_server import BaseSIAServer
from pysiaalarm.data.adm_mapping import ADM_MAPPING
from pysiaalarm.event import SIAEvent
from pysiaalarm.utils import Counter, ResponseType

from devices import dc09
from devices.dc09 import ContactId, Frame, Qualifier, Refusal, Refused, Token
from devices.dc09_codes import forward_codes, meaning_of
from devices.vocabulary import EventType

ACCOUNT = "1A2B"
#: pysiaalarm takes a key as 16/24/32 hex characters and uses their ASCII bytes as the AES key.
KEYS = {None: None, 16: "0123456789ABCDEF", 24: "0123456789ABCDEF01234567", 32: "0123456789ABCDEF" * 2}


class Receiver(BaseSIAServer):
    """pysiaalarm's receiver logic (parse, check CRC, account, code and time) without its sockets."""


def pysia_receive(raw: bytes, key: str | None) -> SIAEvent:
    server = Receiver({ACCOUNT: SIAAccount(ACCOUNT, key)}, Counter())
    event = server.parse_and_check_event(raw)
    assert isinstance(event, SIAEvent), event
    return event


def now() -> datetime:
    # pysiaalarm checks timestamps against the real clock, so these frames carry the real time.
    return datetime.now(UTC).replace(microsecond=0)


FORWARDED = [EventType.PENDANT, EventType.VOICE_HELP, EventType.SMOKE, EventType.MAINS_FAIL, EventType.FALL]


@pytest.mark.parametrize("size", list(KEYS))
@pytest.mark.parametrize("event_type", FORWARDED)
@pytest.mark.parametrize("token", [Token.ADM_CID, Token.SIA_DCS])
def test_our_frames_parse_in_pysiaalarm(size: int | None, event_type: EventType, token: Token) -> None:
    key = KEYS[size]
    codes = forward_codes(event_type)
    assert codes is not None
    contact, sia = codes
    if token is Token.ADM_CID:
        data = dc09.contact_id_data(ACCOUNT, ContactId(contact.qualifier, contact.code, "01", "007"))
        expected = ADM_MAPPING[f"{contact.code:03d}"]["1"]
        assert expected == sia  # pysiaalarm's Contact ID -> SIA table agrees with ours for these
    else:
        data = dc09.sia_dcs_data(ACCOUNT, sia, address="007", area="1")
    raw = dc09.build_frame(
        token=token, sequence=42, account=ACCOUNT, receiver="1", line="2", data=data, timestamp=now(),
        key=key.encode() if key else None,
    )  # fmt: skip
    event = pysia_receive(raw, key)
    assert event.valid_message, "pysiaalarm computes the same CRC"
    assert (event.account, event.code, event.sequence, event.encrypted) == (
        ACCOUNT,
        sia,
        "0042",
        key is not None,
    )
    assert event.valid_timestamp
    assert event.response is ResponseType.ACK
    if token is Token.ADM_CID:
        assert (event.event_qualifier, event.event_type, event.partition, event.ri) == (
            "1",
            f"{contact.code}",
            "01",
            "007",
        )


def test_a_forwarded_restore_parses_in_pysiaalarm() -> None:
    codes = forward_codes(EventType.MAINS_RESTORED)
    assert codes is not None
    contact, sia = codes
    raw = dc09.build_frame(
        token=Token.ADM_CID, sequence=1, account=ACCOUNT, data=dc09.contact_id_data(ACCOUNT, contact),
        timestamp=now(),
    )  # fmt: skip
    event = pysia_receive(raw, None)
    assert (event.code, sia) == ("AR", "AR")


def test_pysiaalarm_never_checks_the_length() -> None:
    """A fault of pysiaalarm's: ``valid_length`` reads the length field as decimal and the real length's
    decimal digits as hex, and its receiver never calls it; so a right frame is 'invalid' there and a
    wrong one passes."""
    raw = dc09.build_frame(token=Token.SIA_DCS, sequence=1, account=ACCOUNT, data="#1A2B|Nri1/QA001")
    event = pysia_receive(raw, None)
    assert not event.valid_length  # our frame's length is right (checked in test_dc09_frames)
    wrong = raw[:5] + b"0999" + raw[9:]
    assert pysia_receive(wrong, None).response is ResponseType.ACK


# --- pysiaalarm's test-line helper (tests/test_utils.py `create_test_line`, transcribed) -------------


def pysia_test_line(code: str, key: str | None, msg_type: str = "SIA-DCS", seq: str = "7654") -> str:
    """pysiaalarm's ``create_test_line`` as written in its repository (it is not shipped in the wheel)."""
    timestamp = datetime.now(UTC).strftime("_%H:%M:%S,%m-%d-%Y")
    content = f"]{timestamp}"
    if msg_type == "SIA-DCS":
        content = f"|Nri1/{code}000" + content
    if key:
        cipher = AES.new(key.encode(), AES.MODE_CBC, bytes(16))
        padded = (16 - len(content) % 16) * "0" + content
        content = cipher.encrypt(padded.encode()).hex().upper()
    line = f'"{"*" if key else ""}{msg_type}"{seq}L0#{ACCOUNT}[{content}'
    crc = SIAEvent._crc_calc(line)
    length = str(int(str(len(line)), 16)).zfill(4)  # the fault: decimal digits read as hex
    return f"{crc}{length}{line}"


@pytest.mark.parametrize("size", list(KEYS))
@pytest.mark.parametrize("code", ["QA", "FA", "RP", "ZX"])
def test_pysiaalarms_test_lines_parse_in_ours_once_the_length_is_right(size: int | None, code: str) -> None:
    key = KEYS[size]
    line = pysia_test_line(code, key)
    keys = {ACCOUNT: key.encode()} if key else {}
    wrong = dc09.parse_frame(line.encode(), now=now(), keys=keys.get)
    assert isinstance(wrong, Refused) and wrong.reason is Refusal.BAD_LENGTH
    assert wrong.account == ACCOUNT
    body = line[8:]
    fixed = f"{line[:4]}{len(body):04X}{body}".encode()
    got = dc09.parse_frame(fixed, now=now(), keys=keys.get)
    assert isinstance(got, Frame), got
    assert (got.account, got.encrypted, got.sequence) == (ACCOUNT, key is not None, 7654)
    payload = dc09.read_payload(got)
    assert isinstance(payload, dc09.SiaDcs) and payload.events[0].code == code
    (meaning,) = meaning_of(payload)
    assert meaning.known is (code != "ZX")


def test_pysiaalarms_adm_cid_test_line_is_an_unreadable_payload() -> None:
    """Its helper's ADM-CID line has no Contact ID at all (``[]_time``): ours reads the frame and finds no
    payload, which the receiver raises as an unknown code."""
    line = pysia_test_line("", None, msg_type="ADM-CID")
    body = line[8:]
    got = dc09.parse_frame(f"{line[:4]}{len(body):04X}{body}".encode(), now=now())
    assert isinstance(got, Frame) and dc09.read_payload(got) is None


# --- pysiaalarm's receiver answers (SIAEvent.create_response) ----------------------------------------


@pytest.mark.parametrize("size", list(KEYS))
def test_pysiaalarms_ack_parses_in_ours(size: int | None) -> None:
    key = KEYS[size]
    request = dc09.build_frame(
        token=Token.ADM_CID, sequence=314, account=ACCOUNT, receiver="9", line="4",
        data=dc09.contact_id_data(ACCOUNT, ContactId(Qualifier.NEW, 101, "01", "001")),
        timestamp=now(), key=key.encode() if key else None,
    )  # fmt: skip
    answer = pysia_receive(request, key).create_response()
    got = dc09.parse_frame(answer, now=now(), keys=lambda _a: key.encode() if key else None)
    assert isinstance(got, Frame), got
    assert (got.token, got.sequence, got.receiver, got.line, got.account) == (
        Token.ACK,
        314,
        "9",
        "4",
        ACCOUNT,
    )
    assert got.encrypted is (key is not None)


def test_pysiaalarms_ack_without_a_receiver_field_is_malformed() -> None:
    """A fault of pysiaalarm's: for a frame without ``R``, its ACK says ``"ACK"0001NoneL0#...``."""
    request = dc09.build_frame(
        token=Token.SIA_DCS, sequence=1, account=ACCOUNT, data="#1A2B|Nri1/QA001", timestamp=now()
    )
    answer = pysia_receive(request, None).create_response()
    assert b"None" in answer
    got = dc09.parse_frame(answer, now=now())
    assert isinstance(got, Refused) and got.reason is Refusal.MALFORMED


def test_pysiaalarms_nak_parses_in_ours_and_carries_its_time() -> None:
    stale = dc09.build_frame(
        token=Token.SIA_DCS, sequence=5, account=ACCOUNT, receiver="0", line="0", data="#1A2B|Nri1/QA001",
        timestamp=now() - timedelta(minutes=10),
    )  # fmt: skip
    event = pysia_receive(stale, None)
    assert event.response is ResponseType.NAK
    got = dc09.parse_frame(event.create_response(), now=now() - timedelta(minutes=10))
    assert isinstance(got, Frame) and got.token is Token.NAK
    offset = dc09.clock_offset(got, now() - timedelta(minutes=10))
    assert offset is not None and abs(offset - timedelta(minutes=10)) < timedelta(seconds=5)


def test_pysiaalarm_sends_the_accounts_key_in_clear() -> None:
    """A fault of pysiaalarm's (kept here so that the docs' claim stays true to the version tested): an
    account with a key still accepts a frame in clear, and when that frame has any extended data, the
    ACK carries the key as ``[K<key>]`` in clear. The bridge refuses such a frame (``not_encrypted``)."""
    key = KEYS[16]
    assert key is not None
    request = dc09.build_frame(
        token=Token.SIA_DCS, sequence=1, account=ACCOUNT, receiver="1", data="#1A2B|Nri1/QA001",
        extended=(dc09.ExtendedData("I", "unit-7"),), timestamp=now(),
    )  # fmt: skip
    answer = pysia_receive(request, key).create_response()
    assert f"[K{key}]".encode() in answer
    ours = dc09.parse_frame(request, now=now(), keys={ACCOUNT: key.encode()}.get)
    assert isinstance(ours, Refused) and ours.reason is Refusal.NOT_ENCRYPTED
