"""The SMS alarm text formats (devices/sms_alarm.py)."""

from __future__ import annotations

import pytest

from devices.events import check_device_id, check_event_id
from devices.sms_alarm import (
    SmsAlarm,
    device_id_for_sender,
    looks_like_help,
    normalise,
    parse_sms_alarm,
    sms_event_id,
)
from devices.vocabulary import EventType

FULL_WIDTH = {c: c + 0xFEE0 for c in range(0x41, 0x5B)}

ALARMS: list[tuple[str, SmsAlarm | None]] = [
    ("ALARM PENDANT", SmsAlarm(EventType.PENDANT)),
    ("alarm pendant", SmsAlarm(EventType.PENDANT)),
    ("  Alarm  Pendant! ", SmsAlarm(EventType.PENDANT)),
    ("ALARM FALL zone 2 bedroom", SmsAlarm(EventType.FALL)),
    ("SMOKE ALARM", SmsAlarm(EventType.SMOKE)),
    ("CO ALARM", SmsAlarm(EventType.CO)),
    ("LOW BATTERY", SmsAlarm(EventType.LOW_BATTERY)),
    ("Battery low 3.4V", SmsAlarm(EventType.LOW_BATTERY)),
    ("MAINS FAIL", SmsAlarm(EventType.MAINS_FAIL)),
    ("AC Restore", SmsAlarm(EventType.MAINS_RESTORED)),
    ("TEST", SmsAlarm(EventType.PENDANT, test=True)),
    ("test alarm", SmsAlarm(EventType.PENDANT, test=True)),
    ("TEST ALARM FALL", SmsAlarm(EventType.FALL, test=True)),
    ("HEARTBEAT", SmsAlarm(EventType.HEARTBEAT)),
    ("CID 1101 01 001", SmsAlarm(EventType.PENDANT, False, 101, 1, "01", "001")),
    ("18 1101 01 001", SmsAlarm(EventType.PENDANT, False, 101, 1, "01", "001")),
    ("1234 18 1111 02 003", SmsAlarm(EventType.SMOKE, False, 111, 1, "02", "003")),
    ("CID 1302 00 000", SmsAlarm(EventType.LOW_BATTERY, False, 302, 1, "00", "000")),
    ("CID 1301 00 000", SmsAlarm(EventType.MAINS_FAIL, False, 301, 1, "00", "000")),
    ("CID 3301 00 000", SmsAlarm(EventType.MAINS_RESTORED, False, 301, 3, "00", "000")),
    # Other restores are the generic restore naming the type (never a resident's cancel).
    ("CID 3302 00 000", SmsAlarm(EventType.RESTORED, False, 302, 3, "00", "000", EventType.LOW_BATTERY)),
    ("CID 3101 01 001", SmsAlarm(EventType.RESTORED, False, 101, 3, "01", "001", EventType.PENDANT)),
    ("CID 3602 00 000", None),  # the restore of a periodic test restores nothing
    ("CID 3601 00 000", None),  # nor does a test press's
    ("CID 3999 00 000", None),
    ("CID 1602 00 000", SmsAlarm(EventType.HEARTBEAT, False, 602, 1, "00", "000")),
    ("CID 1601 00 000", SmsAlarm(EventType.PENDANT, True, 601, 1, "00", "000")),
    ("CID 1145 01 001", SmsAlarm(EventType.PANIC, False, 145, 1, "01", "001")),  # unmapped alarm class
    ("CID 1999 01 001", None),
    ("Ålarm Pèndant", SmsAlarm(EventType.PENDANT)),  # accents ignored
    ("ALARM FALL".translate(FULL_WIDTH), SmsAlarm(EventType.FALL)),  # full-width letters
    ("hello there", None),
    ("", None),
    ("😢😢", None),
]


@pytest.mark.parametrize(("text", "expected"), ALARMS)
def test_alarm_texts(text: str, expected: SmsAlarm | None) -> None:
    assert parse_sms_alarm(text) == expected


HELP: list[tuple[str, bool]] = [
    ("HELP", True),
    ("please help me", True),
    ("SOS", True),
    ("I've fallen and I can't get up", True),
    ("cant get up", True),
    ("Emergency!!", True),
    ("call an ambulance", True),
    ("Hilfe! Ich bin gestürzt", True),
    ("Au secours", True),
    ("¡Ayuda por favor!", True),
    ("Hjælp", True),
    ("Pomoc!", True),
    ("Cymorth", True),
    ("see you on tuesday", False),
    ("OK", False),
    ("helpful reminder: bins tomorrow", False),
    ("", False),
    ("👍", False),
]


@pytest.mark.parametrize(("text", "expected"), HELP)
def test_looks_like_help(text: str, expected: bool) -> None:
    assert looks_like_help(text) is expected


def test_normalise() -> None:
    assert normalise("  Zoë's  fall—ALARM!! ") == "ZOES FALL ALARM"
    assert normalise("Straße") == "STRASSE"


def test_sms_event_id_is_stable_and_valid() -> None:
    a = sms_event_id("+447700900123", "26/05/01,12:00:00+04", "ALARM FALL")
    assert a == sms_event_id("+447700900123", "26/05/01,12:00:00+04", "ALARM FALL")
    assert a != sms_event_id("+447700900123", "26/05/01,12:00:01+04", "ALARM FALL")
    assert a != sms_event_id("+447700900124", "26/05/01,12:00:00+04", "ALARM FALL")
    assert check_event_id(a) == a


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("+447700900123", "sms-447700900123"),
        ("+44 7700 900123", "sms-447700900123"),
        ("07700900123", "sms-07700900123"),
        ("CareLine", "sms-CARELINE"),
        ("Ärzte Notruf", "sms-ARZTE-NOTRUF"),
        ("", "sms-unknown"),
    ],
)
def test_device_id_for_unregistered_senders(sender: str, expected: str) -> None:
    assert device_id_for_sender(sender) == expected
    assert check_device_id(device_id_for_sender(sender))
