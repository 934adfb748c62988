"""The SMS alarm texts of GSM social alarms, sans-I/O.

Units send short texts. Recognised, case and accents ignored, extra words allowed after the phrase:

- phrases: ``ALARM PENDANT``, ``ALARM FALL``, ``SMOKE ALARM``, ``LOW BATTERY``, ``MAINS FAIL``,
  ``MAINS RESTORED``, ``TEST`` ... (see :data:`PHRASES`); a ``TEST`` prefix marks a test alarm
  (``TEST ALARM PENDANT``), and ``TEST`` alone is a test pendant press for commissioning;
- Contact ID (SIA DC-05) in the form ``[CID] [account] [18|98] QEEE GG ZZZ``, for example
  ``CID 1101 01 001`` or ``1234 18 1101 01 001``: Q=1 new event, Q=3 restore, Q=6 status;
  EEE maps through :data:`devices.dc09_codes.CONTACT_ID` (the one Contact ID table, shared with DC-09).

:func:`parse_sms_alarm` returns an :class:`SmsAlarm` or None; :func:`looks_like_help` says whether any
text reads as a call for help (HELP, SOS, EMERGENCY, FALLEN, HILFE, AU SECOURS ...), so that an SMS
from an unknown number is never silently dropped.

The other wire rules of SMS live here too: :func:`number_candidates` (the forms a sender's number may be
registered under, E.164 first) and :func:`sms_command_text` (a command texted to a unit).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from devices.dc09_codes import CONTACT_ID
from devices.vocabulary import EventType, is_help, priority_of


@dataclass(frozen=True, slots=True)
class SmsAlarm:
    """What an alarm text means."""

    type: EventType
    test: bool = False
    contact_id: int | None = None
    qualifier: int | None = None
    group: str | None = None
    zone: str | None = None
    #: For a Contact ID restore (qualifier 3) other than mains: the type whose condition ended. The
    #: event is then the vocabulary's generic ``restored`` (a technical alert resolves; a call for help
    #: stays open for an operator).
    restores: EventType | None = None


#: Normalised phrase (upper case, ASCII, single spaces) -> type. Longest match wins.
PHRASES: dict[str, EventType] = {
    "ALARM PENDANT": EventType.PENDANT,
    "PENDANT ALARM": EventType.PENDANT,
    "PENDANT": EventType.PENDANT,
    "ALARM BUTTON": EventType.PENDANT,
    "HELP BUTTON": EventType.PENDANT,
    "PANIC": EventType.PANIC,
    "ALARM PANIC": EventType.PANIC,
    "ALARM FALL": EventType.FALL,
    "FALL ALARM": EventType.FALL,
    "FALL DETECTED": EventType.FALL,
    "FALL": EventType.FALL,
    "ALARM SMOKE": EventType.SMOKE,
    "SMOKE ALARM": EventType.SMOKE,
    "SMOKE": EventType.SMOKE,
    "FIRE ALARM": EventType.SMOKE,
    "ALARM FIRE": EventType.SMOKE,
    "ALARM HEAT": EventType.HEAT,
    "HEAT ALARM": EventType.HEAT,
    "ALARM CO": EventType.CO,
    "CO ALARM": EventType.CO,
    "ALARM GAS": EventType.GAS,
    "GAS ALARM": EventType.GAS,
    "ALARM EPILEPSY": EventType.EPILEPSY,
    "EPILEPSY ALARM": EventType.EPILEPSY,
    "SEIZURE": EventType.EPILEPSY,
    "ALARM INACTIVITY": EventType.INACTIVITY,
    "INACTIVITY": EventType.INACTIVITY,
    "BED EXIT": EventType.BED_EXIT,
    "CHAIR EXIT": EventType.CHAIR_EXIT,
    "DOOR EXIT": EventType.DOOR_EXIT,
    "DOOR OPEN": EventType.DOOR_EXIT,
    "ALARM FLOOD": EventType.FLOOD,
    "FLOOD ALARM": EventType.FLOOD,
    "FLOOD": EventType.FLOOD,
    "TEMPERATURE ALARM": EventType.EXTREME_TEMPERATURE,
    "ALARM TEMPERATURE": EventType.EXTREME_TEMPERATURE,
    "BOGUS CALLER": EventType.BOGUS_CALLER,
    "LOW BATTERY": EventType.LOW_BATTERY,
    "BATTERY LOW": EventType.LOW_BATTERY,
    "MAINS FAIL": EventType.MAINS_FAIL,
    "MAINS FAILURE": EventType.MAINS_FAIL,
    "AC FAIL": EventType.MAINS_FAIL,
    "POWER FAIL": EventType.MAINS_FAIL,
    "POWER FAILURE": EventType.MAINS_FAIL,
    "MAINS RESTORED": EventType.MAINS_RESTORED,
    "MAINS RESTORE": EventType.MAINS_RESTORED,
    "MAINS OK": EventType.MAINS_RESTORED,
    "AC RESTORE": EventType.MAINS_RESTORED,
    "AC RESTORED": EventType.MAINS_RESTORED,
    "POWER RESTORED": EventType.MAINS_RESTORED,
    "TAMPER": EventType.TAMPER,
    "SENSOR FAULT": EventType.SENSOR_FAULT,
    "JAMMING": EventType.RADIO_JAMMING,
    "HEARTBEAT": EventType.HEARTBEAT,
    "PERIODIC TEST": EventType.HEARTBEAT,
    "POLL": EventType.HEARTBEAT,
    "CANCEL": EventType.CANCEL,
    "ALARM CANCELLED": EventType.CANCEL,
    "RESET": EventType.CANCEL,
}

#: Words that make free text a call for help, in the languages residents and carers use most.
HELP_WORDS = frozenset(
    {
        "HELP",
        "SOS",
        "ALARM",
        "EMERGENCY",
        "FALL",
        "FALLEN",
        "FELL",
        "HURT",
        "INJURED",
        "PAIN",
        "AMBULANCE",
        "999",
        "112",
        "911",
        "URGENT",
        "FIRE",
        "SMOKE",
        "PANIC",
        "PENDANT",
        "DOCTOR",
        "BLEEDING",
        "COLLAPSED",
        "HILFE",
        "NOTFALL",
        "GESTURZT",
        "AIDE",
        "SECOURS",
        "URGENCE",
        "AYUDA",
        "SOCORRO",
        "EMERGENCIA",
        "AIUTO",
        "HJAELP",
        "HJELP",
        "HJALP",
        "POMOC",
        "HULP",
        "NOOD",
        "AJUDA",
        "PILNE",
        "CYMORTH",
    }
)
HELP_PHRASES = ("CANT GET UP", "CAN NOT GET UP", "CANNOT GET UP", "ON THE FLOOR", "CALL AN AMBULANCE")

_CID_RE = re.compile(
    r"(?:CID\s*)?(?:(?P<acct>[0-9A-F]{4,6})\s+)?(?:(?:18|98)\s*)?"
    r"(?P<q>[136])(?P<eee>\d{3})\s*(?P<gg>\d{2})\s*(?P<zzz>\d{3})\b"
)


def normalise(text: str) -> str:
    """Upper-case ASCII words separated by single spaces (accents stripped, punctuation dropped)."""
    folded = unicodedata.normalize("NFKD", text)
    for special, plain in (("Æ", "AE"), ("æ", "ae"), ("ß", "ss"), ("Ø", "O"), ("ø", "o"), ("Å", "A")):
        folded = folded.replace(special, plain)
    ascii_text = "".join(c for c in folded if not unicodedata.combining(c))
    ascii_text = ascii_text.replace("'", "").replace("\u2019", "")
    words = re.findall(r"[A-Za-z0-9]+", ascii_text)
    return " ".join(words).upper()


def _contact_id(norm: str, test: bool) -> SmsAlarm | None:
    m = _CID_RE.search(norm)
    if not m:
        return None
    code, q = int(m.group("eee")), int(m.group("q"))
    event_type = CONTACT_ID.get(code)
    restores: EventType | None = None
    if q == 3:  # restore: mains is the vocabulary's own; any other known condition a generic restore
        if code == 301:
            event_type = EventType.MAINS_RESTORED
        elif event_type is not None and priority_of(event_type) is not None:
            event_type, restores = EventType.RESTORED, event_type
        else:
            event_type = None
    elif event_type is None:
        if 100 <= code <= 169:  # an alarm class we have no exact type for: treat as a call for help
            event_type = EventType.PANIC
        elif 300 <= code <= 399:
            event_type = EventType.SENSOR_FAULT
    if code == 601:  # manual trigger test report (its restore restores nothing)
        event_type, test = (EventType.PENDANT, True) if q != 3 else (None, test)
    if event_type is None:
        return None
    return SmsAlarm(event_type, test, code, q, m.group("gg"), m.group("zzz"), restores)


def parse_sms_alarm(text: str) -> SmsAlarm | None:
    """The alarm an SMS text reports, or None when the text is not a known alarm format."""
    norm = normalise(text)
    if not norm:
        return None
    test = False
    if norm == "TEST" or norm in ("TEST ALARM", "ALARM TEST"):
        return SmsAlarm(EventType.PENDANT, test=True)
    if norm.startswith("TEST "):
        test, norm = True, norm[5:]
    cid = _contact_id(norm, test)
    if cid is not None:
        return cid
    for phrase in sorted(PHRASES, key=len, reverse=True):
        if norm == phrase or norm.startswith(phrase + " "):
            return SmsAlarm(PHRASES[phrase], test=test)
    return None


def is_help_sms(text: str) -> bool:
    """True when an SMS is a call for help: a priority-1 alarm, or free text that reads as help. The
    modem stores these first when several SMS wait on the SIM."""
    alarm = parse_sms_alarm(text)
    return is_help(alarm.type) if alarm is not None else looks_like_help(text)


def looks_like_help(text: str) -> bool:
    """True when free text reads as a call for help (used for senders we do not know)."""
    norm = normalise(text)
    if not norm:
        return False
    if set(norm.split()) & HELP_WORDS:
        return True
    return any(p in norm for p in HELP_PHRASES)


def sms_event_id(sender: str, modem_timestamp: str, text: str) -> str:
    """A stable event id for one SMS: the same message read again after a restart gets the same id."""
    digest = hashlib.sha256(f"{sender}\x00{modem_timestamp}\x00{text}".encode()).hexdigest()
    return f"sms-{digest[:32]}"


def device_id_for_sender(sender: str) -> str:
    """A device id for an unregistered sender: ``sms-`` and the number's digits (or its letters)."""
    digits = re.sub(r"\D", "", sender)
    if digits:
        return f"sms-{digits}"[:64]
    word = re.sub(r"[^A-Za-z0-9._-]", "", normalise(sender).replace(" ", "-"))
    return f"sms-{word or 'unknown'}"[:64]


# --- sender numbers ----------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+")


def number_candidates(sender: str, country_code: str = "44") -> list[str]:
    """The forms under which ``sender`` may be registered, E.164 first; empty for non-numbers.

    ``+447700900123`` and ``00447700900123`` are international; ``07700900123`` is national (a single
    leading 0) and gets ``+<country_code>``; ``447700900123`` (digits starting with the country code,
    long enough for a full number, as modems report international numbers without their ``+``) gets a
    ``+``. Spaces, dashes, dots and brackets are ignored. The sender as written is tried too, for
    devices registered before numbers were checked.
    """
    raw = sender.strip()
    compact = re.sub(r"[\s().-]", "", raw)
    candidates: list[str] = []
    if compact.startswith("+") and compact[1:].isdigit():
        candidates.append(compact)
    elif compact.isdigit():
        if compact.startswith("00") and len(compact) > 8:
            candidates.append("+" + compact[2:])
        elif compact.startswith("0") and len(compact) > 6:
            candidates.append(f"+{country_code}{compact[1:]}")
        elif compact.startswith(country_code) and len(compact) >= len(country_code) + 9:
            candidates.append("+" + compact)
    for extra in (compact, raw):
        if extra and extra not in candidates and _DIGITS.search(extra):
            candidates.append(extra)
    return candidates


# --- commands by SMS ---------------------------------------------------------------------------------

#: Longest SMS command text: one single-part GSM 7-bit message.
SMS_MAX_CHARS = 160


def sms_command_text(cmd_id: str, cmd: str, args: dict[str, Any] | None) -> str:
    """``TC1 CMD <cmd_id> <cmd>[ <args as compact JSON>]``, ASCII only (see docs/serial-and-gsm.md).

    Raises ValueError when the text would not fit one SMS (160 characters)."""
    text = f"TC1 CMD {cmd_id} {cmd}"
    if args:
        text += " " + json.dumps(args, separators=(",", ":"), ensure_ascii=True, sort_keys=True)
    if len(text) > SMS_MAX_CHARS:
        raise ValueError(f"command text is {len(text)} characters; one SMS holds {SMS_MAX_CHARS}")
    return text
