"""The SCAIP code table (devices/scaip_codes.py): every row, the order of the rules, and the codes as
units send them (``3``, ``03``, ``0003``)."""

from __future__ import annotations

import pytest

from devices.scaip import AlarmRequest, build_mrq, parse_mrq
from devices.scaip_codes import (
    ALARM_STATUSES,
    DEVICE_TYPES,
    RESTORE_STATUSES,
    STATUS_EVENTS,
    STATUS_RESTORES,
    TEST_STATUSES,
    ScaipKind,
    ScaipMeaning,
    code4,
    meaning_of,
    status_name,
)
from devices.vocabulary import BRIDGE_ONLY, NO_ALERT, EventType


def req(dty: str | None = "0003", stc: str | None = "0010", mty: str | None = None) -> AlarmRequest:
    return AlarmRequest(ref="R1", cid="123", mty=mty, ver=None, dty=dty, did=None, stc=stc)


def test_issue_examples() -> None:
    assert meaning_of(req("0003", "0010")).event_type is EventType.PENDANT
    assert meaning_of(req("0005", "0009")).event_type is EventType.FALL
    assert meaning_of(req("0023", "0009")).event_type is EventType.SMOKE
    assert meaning_of(req("0026", "0009")).event_type is EventType.CO
    assert meaning_of(req("0033", "0009")).event_type is EventType.FLOOD
    low = meaning_of(req("0003", "0016"))
    assert (low.kind, low.event_type) == (ScaipKind.EVENT, EventType.LOW_BATTERY)
    restore = meaning_of(req("0023", "0094"))
    assert (restore.kind, restore.event_type, restore.clears) == (ScaipKind.RESTORE, None, EventType.SMOKE)
    test = meaning_of(req("0003", "0102"))
    assert (test.kind, test.event_type) == (ScaipKind.TEST, EventType.PENDANT)
    beat = meaning_of(req("0002", None, "PI"))
    assert (beat.kind, beat.event_type) == (ScaipKind.HEARTBEAT, EventType.HEARTBEAT)


@pytest.mark.parametrize("dty", sorted(DEVICE_TYPES))
@pytest.mark.parametrize("stc", [None, *sorted(ALARM_STATUSES)])
def test_every_device_type_in_alarm(dty: int, stc: int | None) -> None:
    name, event_type = DEVICE_TYPES[dty]
    meaning = meaning_of(req(f"{dty:04d}", None if stc is None else f"{stc:04d}"))
    assert meaning.device == name
    if event_type is None:
        assert (meaning.kind, meaning.event_type) == (ScaipKind.UNKNOWN, None)
    else:
        assert (meaning.kind, meaning.event_type, meaning.clears) == (ScaipKind.EVENT, event_type, None)
        assert event_type not in NO_ALERT | BRIDGE_ONLY  # an alarm always raises an alert a device may send


@pytest.mark.parametrize("stc", sorted(STATUS_EVENTS))
def test_every_status_of_its_own_type(stc: int) -> None:
    name, event_type = STATUS_EVENTS[stc]
    for dty in ("0002", "0023", "0999"):  # whatever the device, known or not
        meaning = meaning_of(req(dty, f"{stc:04d}"))
        assert (meaning.kind, meaning.event_type, meaning.status) == (ScaipKind.EVENT, event_type, name)
        assert event_type not in BRIDGE_ONLY


@pytest.mark.parametrize("stc", sorted(STATUS_RESTORES))
def test_every_status_restore(stc: int) -> None:
    name, cleared, own = STATUS_RESTORES[stc]
    meaning = meaning_of(req("0002", f"{stc:04d}"))
    assert (meaning.kind, meaning.clears, meaning.event_type, meaning.status) == (
        ScaipKind.RESTORE,
        cleared,
        own,
        name,
    )


def test_mains_restored_is_the_vocabulary_type() -> None:
    meaning = meaning_of(req("0041", "0086"))
    assert (meaning.event_type, meaning.clears) == (EventType.MAINS_RESTORED, EventType.MAINS_FAIL)


@pytest.mark.parametrize("stc", sorted(RESTORE_STATUSES))
@pytest.mark.parametrize("dty", sorted(DEVICE_TYPES))
def test_every_device_restore(stc: int, dty: int) -> None:
    _, event_type = DEVICE_TYPES[dty]
    meaning = meaning_of(req(f"{dty:04d}", f"{stc:04d}"))
    if event_type is None:
        assert meaning.kind is ScaipKind.UNKNOWN  # nothing of ours to clear
    else:
        assert (meaning.kind, meaning.clears, meaning.event_type) == (ScaipKind.RESTORE, event_type, None)


@pytest.mark.parametrize("stc", sorted(TEST_STATUSES))
def test_every_test_status(stc: int) -> None:
    assert meaning_of(req("0005", f"{stc:04d}")).event_type is EventType.FALL
    unknown_device = meaning_of(req("0900", f"{stc:04d}"))
    assert (unknown_device.kind, unknown_device.event_type) == (ScaipKind.TEST, None)


def test_heartbeat_wins_over_the_status_code() -> None:
    """A TeleAlarm unit polls with stc 0009 (automatic alarm): a PI is a heartbeat whatever its codes."""
    for stc in ("0009", "0010", "0102", None, "9999"):
        assert meaning_of(req("0002", stc, "PI")).kind is ScaipKind.HEARTBEAT
    assert meaning_of(req("0999", None, "PI")).kind is ScaipKind.HEARTBEAT
    assert meaning_of(req("0002", None, "PI")).status == ""  # not an "alarm (status omitted)"
    assert meaning_of(req("0002", "0009", "PI")).status == "alarm (automatic)"  # the raw code, named


def test_not_a_code_or_message_type_is_unknown() -> None:
    """Hand-made requests the parser would refuse still get a meaning, never an exception."""
    for request in (req("0003", "1a"), req("0003", "0010", "XX"), req("x", "0010"), req(None, None)):
        assert meaning_of(request).kind is ScaipKind.UNKNOWN


def test_information_update_reads_like_a_message() -> None:
    assert meaning_of(req("0005", "0009", "IN")) == ScaipMeaning(
        ScaipKind.EVENT, EventType.FALL, "0005", "0009", "IN", None, "fall detector", "alarm (automatic)"
    )
    assert meaning_of(req("0005", "0009", "ME")).event_type is EventType.FALL


def test_reset_is_unknown_keeping_the_codes() -> None:
    meaning = meaning_of(req("0003", "0010", "RE"))
    assert (meaning.kind, meaning.event_type, meaning.raw) == (
        ScaipKind.UNKNOWN,
        None,
        "dty 0003 stc 0010 mty RE",
    )


@pytest.mark.parametrize(
    ("dty", "stc"),
    [
        ("0999", "0010"),  # device code reserved for flexible use
        ("0013", "0009"),  # a mat sensor: no type of ours
        ("0003", "0003"),  # absent/away
        ("0003", "0127"),  # unlocked
        ("0003", "0900"),
        ("0003", "9999"),
        ("1000", "0010"),
    ],
)
def test_unknown_codes_keep_the_raw_codes(dty: str, stc: str) -> None:
    meaning = meaning_of(req(dty, stc))
    assert (meaning.kind, meaning.event_type, meaning.clears) == (ScaipKind.UNKNOWN, None, None)
    assert not meaning.known
    assert (meaning.dty, meaning.stc, meaning.raw) == (dty, stc, f"dty {dty} stc {stc}")


def test_status_omitted_is_an_alarm() -> None:
    meaning = meaning_of(req("0005", None))
    assert (meaning.kind, meaning.event_type, meaning.status) == (
        ScaipKind.EVENT,
        EventType.FALL,
        "alarm (status omitted)",
    )
    assert meaning.raw == "dty 0005"


@pytest.mark.parametrize("dty", ["3", "03", "003", "0003"])
@pytest.mark.parametrize("stc", ["10", "010", "0010"])
def test_codes_are_compared_as_numbers(dty: str, stc: str) -> None:
    meaning = meaning_of(req(dty, stc))
    assert (meaning.event_type, meaning.dty, meaning.stc) == (EventType.PENDANT, dty, stc)


def test_field_bodies_mean_what_the_units_meant() -> None:
    essence_alarm = b"<mrq><ref>1883</ref><mty>ME</mty><cid>26317</cid><dty>02</dty><stc>010</stc></mrq>"
    essence_beat = b"<mrq><ref>1A85</ref><mty>PI</mty><cid>26317</cid><dty>02</dty><stc>102</stc></mrq>"
    guideline = b"<mrq><ref>1242</ref><cid>678</cid><dty>27</dty><stc>16</stc></mrq>"  # low battery
    expected = [
        (essence_alarm, ScaipKind.EVENT, EventType.PENDANT),
        (essence_beat, ScaipKind.HEARTBEAT, EventType.HEARTBEAT),
        (guideline, ScaipKind.EVENT, EventType.LOW_BATTERY),
    ]
    for body, kind, event_type in expected:
        parsed = parse_mrq(body)
        assert isinstance(parsed, AlarmRequest)
        meaning = meaning_of(parsed)
        assert (meaning.kind, meaning.event_type) == (kind, event_type)


def test_cancel_on_the_unit() -> None:
    parsed = parse_mrq(build_mrq(ref="C1", cid="1", dty="0002", stc="0019"))
    assert isinstance(parsed, AlarmRequest)
    assert meaning_of(parsed).event_type is EventType.CANCEL


def test_code4() -> None:
    assert [code4(t) for t in ("3", "03", "0003", "0", None, "", "12345", "x", "\u0661")] == [
        3,
        3,
        3,
        0,
        None,
        None,
        None,
        None,
        None,
    ]


def test_status_names() -> None:
    assert status_name(10) == "alarm (manual)"
    assert status_name(94) == "restoral"
    assert status_name(16) == "battery low"
    assert status_name(86) == "power restored (mains)"
    assert status_name(102) == "test transmission, primary channel"
    assert status_name(3) == ""


def test_tables_do_not_overlap() -> None:
    tables = [
        set(ALARM_STATUSES),
        set(STATUS_EVENTS),
        set(STATUS_RESTORES),
        set(RESTORE_STATUSES),
        set(TEST_STATUSES),
    ]
    for i, one in enumerate(tables):
        for other in tables[i + 1 :]:
            assert not one & other
    assert sorted(DEVICE_TYPES) == list(range(52))  # Annex A, 0000-0051
