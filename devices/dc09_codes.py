"""Contact ID and SIA DCS event codes onto our event vocabulary, both ways: the one mapping table (DC-09,
and the Contact ID in SMS alarm texts).

Inbound, :func:`meaning_of` reads a DC-09 payload (:mod:`devices.dc09`) into :class:`CodeMeaning` values:
an event of one of our types, a restore that clears an open alert of a type, or an unknown code that
keeps its raw text (the receiver raises it as an ``unknown_signal`` of its own and ACKs it: never a DUH
loop).
Outbound, :func:`forward_codes` gives the Contact ID and SIA codes for one of our types, for the
forwarder. docs/dc09.md prints both tables for installers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from devices.dc09 import ContactId, Qualifier, SiaDcs
from devices.vocabulary import NO_ALERT, EventType


@dataclass(frozen=True, slots=True)
class CodeRow:
    """One row of the table: a Contact ID event code, the SIA codes for the event and its restore (None
    where SIA has none), our type, and whether the code is a test rather than a real event."""

    contact_id: int
    sia: str | None
    sia_restore: str | None
    event_type: EventType
    test: bool = False
    what: str = ""


#: The inbound table. Where two rows share a SIA code, the first is the SIA code's meaning.
TABLE: tuple[CodeRow, ...] = (
    CodeRow(100, "MA", "MH", EventType.PENDANT, what="medical alarm"),
    CodeRow(101, "QA", "QH", EventType.PENDANT, what="personal emergency"),
    CodeRow(102, None, None, EventType.INACTIVITY, what="fail to report in"),
    CodeRow(110, "FA", "FH", EventType.SMOKE, what="fire alarm"),
    CodeRow(111, "FA", "FH", EventType.SMOKE, what="smoke"),
    CodeRow(114, "KA", "KH", EventType.HEAT, what="heat"),
    CodeRow(120, "PA", "PH", EventType.PANIC, what="panic"),
    CodeRow(121, "HA", "HH", EventType.PANIC, what="duress"),
    CodeRow(122, "HA", "HH", EventType.PANIC, what="silent panic"),
    CodeRow(137, "TA", "TR", EventType.TAMPER, what="tamper"),
    CodeRow(144, "TA", "TR", EventType.TAMPER, what="sensor tamper"),
    CodeRow(151, "GA", "GH", EventType.GAS, what="gas"),
    CodeRow(154, "WA", "WH", EventType.FLOOD, what="water leakage"),
    CodeRow(158, None, None, EventType.EXTREME_TEMPERATURE, what="high temperature"),
    CodeRow(159, None, None, EventType.EXTREME_TEMPERATURE, what="low temperature"),
    CodeRow(162, "GA", "GH", EventType.CO, what="carbon monoxide"),
    CodeRow(301, "AT", "AR", EventType.MAINS_FAIL, what="AC (mains) loss"),
    CodeRow(302, "YT", "YR", EventType.LOW_BATTERY, what="low system battery"),
    CodeRow(344, "XQ", "XH", EventType.RADIO_JAMMING, what="RF receiver jam"),
    CodeRow(380, "UT", "UJ", EventType.SENSOR_FAULT, what="sensor trouble"),
    CodeRow(383, "TA", "TR", EventType.TAMPER, what="sensor tamper"),
    CodeRow(384, "XT", "XR", EventType.LOW_BATTERY, what="RF low battery"),
    CodeRow(601, "RX", None, EventType.PENDANT, test=True, what="manual trigger test"),
    CodeRow(602, "RP", None, EventType.HEARTBEAT, what="periodic test report"),
    CodeRow(603, "RP", None, EventType.HEARTBEAT, what="periodic RF transmission"),
)

#: Contact ID code -> our type: the table's view for readers of Contact ID outside DC-09 (SMS alarm
#: texts, ``devices/sms_alarm.py``), which apply their own qualifier rules. One table, so the two
#: paths never read a code differently.
CONTACT_ID: dict[int, EventType] = {row.contact_id: row.event_type for row in TABLE}

#: The outbound table: our type -> (Contact ID code, SIA code). Every type that raises an alert has a
#: row (so every alert can be forwarded); voice help is a personal emergency (101, QA). Types with no
#: Contact ID of their own take the nearest: 100/MA medical, 140/UA general alarm, 350/YC communication.
#: A code read back through :data:`TABLE` is help exactly when our type is (a bogus caller or inactivity
#: never arrives upstream as a panic or a medical alarm): tests/dc09/test_dc09_codes.py.
FORWARD: dict[EventType, tuple[int, str]] = {
    EventType.VOICE_HELP: (101, "QA"),
    EventType.PENDANT: (101, "QA"),
    EventType.FALL: (100, "MA"),
    EventType.SMOKE: (111, "FA"),
    EventType.HEAT: (114, "KA"),
    EventType.CO: (162, "GA"),
    EventType.GAS: (151, "GA"),
    EventType.EPILEPSY: (100, "MA"),
    EventType.PANIC: (120, "PA"),
    EventType.INACTIVITY: (102, "UA"),
    EventType.BED_EXIT: (140, "UA"),
    EventType.CHAIR_EXIT: (140, "UA"),
    EventType.DOOR_EXIT: (140, "UA"),
    EventType.FLOOD: (154, "WA"),
    EventType.EXTREME_TEMPERATURE: (158, "UA"),
    EventType.BOGUS_CALLER: (140, "UA"),
    EventType.NO_HEARTBEAT: (350, "YC"),
    EventType.UNKNOWN_SIGNAL: (140, "UA"),
    EventType.LOW_BATTERY: (302, "YT"),
    EventType.MAINS_FAIL: (301, "AT"),
    EventType.TAMPER: (383, "TA"),
    EventType.SENSOR_FAULT: (380, "UT"),
    EventType.RADIO_JAMMING: (344, "XQ"),
    EventType.HEARTBEAT: (602, "RP"),
}
#: SIA restore codes for the outbound SIA codes that have one.
SIA_RESTORE: dict[str, str] = {
    "QA": "QH",
    "MA": "MH",
    "FA": "FH",
    "KA": "KH",
    "GA": "GH",
    "PA": "PH",
    "HA": "HH",
    "UA": "UR",
    "WA": "WH",
    "YC": "YK",
    "YT": "YR",
    "AT": "AR",
    "TA": "TR",
    "UT": "UJ",
    "XQ": "XH",
}
#: Restores that are a type of their own in the vocabulary; every other restore is a ``restored`` event
#: naming the restored type (:func:`devices.vocabulary.restored_data`), which the store applies.
RESTORE_TYPE: dict[EventType, EventType] = {EventType.MAINS_FAIL: EventType.MAINS_RESTORED}


class CodeKind(StrEnum):
    """What a code means for the receiver."""

    EVENT = "event"  # store an event of ``event_type``
    RESTORE = "restore"  # the condition of ``clears`` has ended
    UNKNOWN = "unknown"  # a code this table does not know: raise it as its own alert, showing ``raw``


@dataclass(frozen=True, slots=True)
class CodeMeaning:
    """What one code in a frame means.

    ``raw`` is the code as sent (``1101``, ``3301``, ``MA``, ``AR``). For an EVENT, ``event_type`` is
    our type, ``test`` marks a test press (601, RX) and ``still_present`` a Contact ID status report
    (qualifier 6) of a condition already reported. For a RESTORE, ``clears`` is the type whose open
    alert it ends and ``event_type`` the vocabulary's own type for that restore where it has one
    (``mains_restored``), else None (the receiver sends a ``restored`` naming ``clears``). For UNKNOWN only
    ``raw`` is set.
    """

    raw: str
    kind: CodeKind
    event_type: EventType | None = None
    clears: EventType | None = None
    test: bool = False
    still_present: bool = False

    @property
    def known(self) -> bool:
        """Whether the table knows the code."""
        return self.kind is not CodeKind.UNKNOWN


_BY_CONTACT_ID: dict[int, CodeRow] = {row.contact_id: row for row in TABLE}
_BY_SIA: dict[str, CodeRow] = {}
_BY_SIA_RESTORE: dict[str, CodeRow] = {}
for _row in TABLE:
    if _row.sia is not None:
        _BY_SIA.setdefault(_row.sia, _row)
    if _row.sia_restore is not None:
        _BY_SIA_RESTORE.setdefault(_row.sia_restore, _row)


def _event(raw: str, row: CodeRow, still_present: bool = False) -> CodeMeaning:
    return CodeMeaning(raw, CodeKind.EVENT, row.event_type, test=row.test, still_present=still_present)


def _restore(raw: str, row: CodeRow) -> CodeMeaning:
    if row.test or row.event_type in NO_ALERT:  # a test or a heartbeat has nothing to restore
        return CodeMeaning(raw, CodeKind.UNKNOWN)
    own = RESTORE_TYPE.get(row.event_type)
    return CodeMeaning(raw, CodeKind.RESTORE, own, clears=row.event_type)


def contact_id_meaning(event: ContactId) -> CodeMeaning:
    """The meaning of a Contact ID event (qualifier 1 new, 3 restore, 6 still present)."""
    row = _BY_CONTACT_ID.get(event.code)
    if row is None:
        return CodeMeaning(event.raw, CodeKind.UNKNOWN)
    if event.qualifier is Qualifier.RESTORE:
        return _restore(event.raw, row)
    return _event(event.raw, row, still_present=event.qualifier is Qualifier.STILL_PRESENT)


def sia_meaning(code: str) -> CodeMeaning:
    """The meaning of a two-letter SIA code."""
    if (row := _BY_SIA.get(code)) is not None:
        return _event(code, row)
    if (row := _BY_SIA_RESTORE.get(code)) is not None:
        return _restore(code, row)
    return CodeMeaning(code, CodeKind.UNKNOWN)


def meaning_of(payload: ContactId | SiaDcs) -> tuple[CodeMeaning, ...]:
    """The meaning of every event in a payload (a SIA DCS block may carry several)."""
    if isinstance(payload, ContactId):
        return (contact_id_meaning(payload),)
    return tuple(sia_meaning(event.code) for event in payload.events)


def forward_codes(event_type: EventType, *, restore: bool = False) -> tuple[ContactId, str] | None:
    """The Contact ID event (group ``00``, zone ``000``: the caller sets its own) and the SIA code that
    forward ``event_type`` (``restore``: the end of it), or None for a type that is never forwarded
    (``cancel``, ``cmd_result`` ...). ``mains_restored`` forwards as the restore of ``mains_fail``."""
    if event_type is EventType.MAINS_RESTORED:
        event_type, restore = EventType.MAINS_FAIL, True
    codes = FORWARD.get(event_type)
    if codes is None:
        return None
    code, sia = codes
    if restore:
        sia_restore = SIA_RESTORE.get(sia)
        if sia_restore is None:
            return None
        return ContactId(Qualifier.RESTORE, code, "00", "000"), sia_restore
    return ContactId(Qualifier.NEW, code, "00", "000"), sia
