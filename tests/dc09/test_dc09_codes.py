"""The DC-09 code table (devices/dc09_codes.py): the mapping the issue lists, restores, unknown codes, and
the reverse direction for forwarding."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.dc09 import ContactId, Qualifier, SiaDcs, SiaEvent
from devices.dc09_codes import (
    FORWARD,
    SIA_RESTORE,
    TABLE,
    CodeKind,
    CodeMeaning,
    contact_id_meaning,
    forward_codes,
    meaning_of,
    sia_meaning,
)
from devices.sms_alarm import parse_sms_alarm
from devices.vocabulary import (
    BRIDGE_ONLY,
    NO_ALERT,
    EventType,
    alert_key,
    is_help,
    priority_of,
    restore_target,
    restored_data,
    unknown_signal_data,
)


def cid(code: int, q: Qualifier = Qualifier.NEW) -> CodeMeaning:
    return contact_id_meaning(ContactId(q, code, "01", "001"))


@pytest.mark.parametrize(
    ("code", "sia", "event_type"),
    [
        (100, "MA", EventType.PENDANT),
        (101, "QA", EventType.PENDANT),
        (120, "PA", EventType.PANIC),
        (121, "HA", EventType.PANIC),
        (122, "HA", EventType.PANIC),
        (111, "FA", EventType.SMOKE),
        (114, "KA", EventType.HEAT),
        (151, "GA", EventType.GAS),
        (162, None, EventType.CO),  # SIA GA reads as gas; Contact ID tells CO apart
        (154, "WA", EventType.FLOOD),
        (301, "AT", EventType.MAINS_FAIL),
        (302, "YT", EventType.LOW_BATTERY),
        (384, "XT", EventType.LOW_BATTERY),
        (383, "TA", EventType.TAMPER),
        (602, "RP", EventType.HEARTBEAT),
        (603, "RP", EventType.HEARTBEAT),
    ],
)
def test_the_issue_mapping(code: int, sia: str | None, event_type: EventType) -> None:
    meaning = cid(code)
    assert (meaning.kind, meaning.event_type, meaning.test) == (CodeKind.EVENT, event_type, False)
    if sia is not None:
        assert sia_meaning(sia) == CodeMeaning(sia, CodeKind.EVENT, event_type)


def test_help_codes_are_help_types() -> None:
    for code in (100, 101, 120, 121, 122):
        event_type = cid(code).event_type
        assert event_type is not None and is_help(event_type)


def test_a_manual_test_is_a_test_press() -> None:
    for meaning in (cid(601), sia_meaning("RX")):
        assert (meaning.kind, meaning.event_type, meaning.test) == (CodeKind.EVENT, EventType.PENDANT, True)


def test_mains_restore_is_mains_restored_and_clears_mains_fail() -> None:
    for meaning in (cid(301, Qualifier.RESTORE), sia_meaning("AR")):
        assert meaning.kind is CodeKind.RESTORE
        assert (meaning.event_type, meaning.clears) == (EventType.MAINS_RESTORED, EventType.MAINS_FAIL)
    assert cid(301, Qualifier.RESTORE).raw == "3301"


def test_restores_clear_what_they_restore() -> None:
    cases = [(302, "YR", EventType.LOW_BATTERY), (383, "TR", EventType.TAMPER), (111, "FH", EventType.SMOKE)]
    cases += [(101, "QH", EventType.PENDANT), (154, "WH", EventType.FLOOD)]
    for code, sia, cleared in cases:
        for meaning in (cid(code, Qualifier.RESTORE), sia_meaning(sia)):
            assert (meaning.kind, meaning.event_type, meaning.clears) == (CodeKind.RESTORE, None, cleared)


def test_a_status_report_is_the_event_still_present() -> None:
    meaning = cid(154, Qualifier.STILL_PRESENT)
    assert (meaning.kind, meaning.event_type, meaning.still_present, meaning.raw) == (
        CodeKind.EVENT,
        EventType.FLOOD,
        True,
        "6154",
    )


def test_unknown_codes_keep_the_raw_code() -> None:
    for meaning, raw in (
        (cid(999), "1999"),
        (sia_meaning("ZX"), "ZX"),
        (cid(602, Qualifier.RESTORE), "3602"),
    ):
        assert meaning == CodeMeaning(raw, CodeKind.UNKNOWN)
        assert not meaning.known


def test_a_sia_block_with_several_events_has_a_meaning_each() -> None:
    payload = SiaDcs(True, (), (SiaEvent("FA", "001"), SiaEvent("ZZ", "002"), SiaEvent("AR", "")))
    assert [m.kind for m in meaning_of(payload)] == [CodeKind.EVENT, CodeKind.UNKNOWN, CodeKind.RESTORE]


#: Codes the forwarder sends that the inbound table does not read (no type of ours fits them alone).
SEND_ONLY = {"1140", "1350", "UA", "YC"}


def test_every_alert_type_forwards_and_reads_back_as_the_same_kind_of_alert() -> None:
    for event_type in EventType:
        codes = forward_codes(event_type)
        if event_type in NO_ALERT and event_type is not EventType.HEARTBEAT:
            if event_type is not EventType.MAINS_RESTORED:
                assert codes is None, event_type
            continue
        assert codes is not None, event_type
        contact, sia = codes
        for back in (contact_id_meaning(contact), sia_meaning(sia)):
            if back.kind is CodeKind.UNKNOWN:  # codes we only send: 140 general alarm, UA, 350/YC, UT
                assert back.raw in SEND_ONLY, (event_type, back.raw)
                continue
            assert back.event_type is not None
            assert is_help(back.event_type) == is_help(event_type), event_type


def test_voice_help_forwards_as_a_personal_emergency() -> None:
    assert forward_codes(EventType.VOICE_HELP) == (ContactId(Qualifier.NEW, 101, "00", "000"), "QA")
    assert forward_codes(EventType.PENDANT, restore=True) == (
        ContactId(Qualifier.RESTORE, 101, "00", "000"),
        "QH",
    )
    assert forward_codes(EventType.MAINS_RESTORED) == (ContactId(Qualifier.RESTORE, 301, "00", "000"), "AR")
    assert forward_codes(EventType.HEARTBEAT, restore=True) is None


def test_the_table_has_one_row_per_contact_id_code() -> None:
    codes = [row.contact_id for row in TABLE]
    assert len(codes) == len(set(codes))


def test_the_installers_guide_prints_the_table_as_it_is() -> None:
    """docs/dc09.md's two tables are the code's tables, row for row."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dc09.md").read_text("utf-8")
    inbound = re.findall(r"^\| (\d{3}) \| (\S+) \| (\S+) \| `(\w+)`( \(test\))? \|", doc, re.MULTILINE)
    assert inbound == [
        (
            f"{r.contact_id:03d}",
            r.sia or "—",
            r.sia_restore or "—",
            r.event_type.value,
            " (test)" if r.test else "",
        )
        for r in TABLE
    ]
    outbound = re.findall(r"^\| `(\w+)` \| (\d{3}) \| (\w\w) \| (\S+) \|", doc, re.MULTILINE)
    assert outbound == [(t.value, f"{c:03d}", s, SIA_RESTORE.get(s, "—")) for t, (c, s) in FORWARD.items()]


def test_sms_and_dc09_read_contact_id_alike() -> None:
    """One Contact ID table: an SMS alarm text reads every code as DC-09 does (before, SMS had its own
    table, without 383 tamper, 384 RF low battery or 603 heartbeat)."""
    for row in TABLE:
        alarm = parse_sms_alarm(f"CID 1{row.contact_id:03d} 01 001")
        assert alarm is not None and alarm.type is row.event_type and alarm.test is row.test, row


def test_the_contact_id_table_has_one_home() -> None:
    root = Path(__file__).resolve().parents[2]
    homes = []
    for package in ("devices", "alarm_centre", "skills", "bridge", "simulators"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, ast.AnnAssign)
                    else []
                )
                if any(isinstance(t, ast.Name) and t.id == "CONTACT_ID" for t in targets):
                    homes.append(path.relative_to(root).as_posix())
    assert homes == ["devices/dc09_codes.py"]


def _applies(meaning: CodeMeaning) -> None:
    """What the receiver makes of a meaning is something the store acts on."""
    if meaning.kind is CodeKind.RESTORE:
        assert meaning.clears is not None and priority_of(meaning.clears) is not None
        own = meaning.event_type
        event_type, data = (
            (own, {}) if own is not None else (EventType.RESTORED, restored_data(meaning.clears))
        )
        assert restore_target(event_type, data) is meaning.clears
    elif meaning.kind is CodeKind.UNKNOWN:
        assert meaning.raw
        key = alert_key("panel", None, EventType.UNKNOWN_SIGNAL, unknown_signal_data("dc09", meaning.raw))
        assert key.endswith(":" + meaning.raw)
    else:
        assert meaning.event_type is not None and meaning.event_type not in BRIDGE_ONLY


@settings(max_examples=300, deadline=None)
@given(code=st.integers(0, 999), qualifier=st.sampled_from(list(Qualifier)))
def test_every_contact_id_code_is_an_event_a_restore_the_store_applies_or_an_unknown_signal(
    code: int, qualifier: Qualifier
) -> None:
    _applies(cid(code, qualifier))


@settings(max_examples=300, deadline=None)
@given(code=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2))
def test_every_sia_code_is_an_event_a_restore_the_store_applies_or_an_unknown_signal(code: str) -> None:
    _applies(sia_meaning(code))


def test_restores_in_the_table_name_the_rows_type() -> None:
    assert cid(302, Qualifier.RESTORE) == CodeMeaning("3302", CodeKind.RESTORE, clears=EventType.LOW_BATTERY)
    assert sia_meaning("FH") == CodeMeaning("FH", CodeKind.RESTORE, clears=EventType.SMOKE)
    assert sia_meaning("WH").clears is EventType.FLOOD
