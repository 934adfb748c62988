"""Need to know: the one table that decides which of a resident's fields each role may see.

Every route and page that shows a resident's personal data (the console's resident card and queue
names, the residents API, the registry export and pages, an alert's note and timeline) passes what it
is about to show through the functions below, which drop what the role may not see and say which
fields were shown, for the audit of reads (:mod:`alarm_centre.privacy.reads`). A field a role may not
see is *write-only* for it: an installer may type a key-safe code at the visit, but never reads one back.

A resident's ``id`` is a pseudonymous key, shown to everyone who may read alerts; it is not a field here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from alarm_centre.alerts.model import Role


class ResidentField(StrEnum):
    """The kinds of a resident's personal data the service holds."""

    NAME = "name"
    ADDRESS = "address"
    #: The resident's own telephone number, where one is kept.
    PHONE = "phone"
    LANGUAGE = "language"
    KEY_SAFE = "key_safe"
    #: Special-category health data.
    MEDICAL_NOTES = "medical_notes"
    #: Names and numbers of the people called out to the resident (also in alert timelines).
    RESPONDERS = "responders"
    #: The account an upstream monitoring centre knows the resident by (DC-09 forwarding).
    DC09_ACCOUNT = "dc09_account"
    #: Anything else kept on the resident's record by other features (the console's extra lines).
    OTHER_DETAILS = "other_details"
    #: What staff write on a resident's alerts (notes, the resolution note).
    ALERT_NOTES = "alert_notes"


F = ResidentField

#: THE table: which fields each role may see. Operators and supervisors handle the resident's calls
#: and need all of it; an admin also handles calls and answers subject access requests. An installer
#: visits the home and works on the units: who, where, which language, which monitoring account -- not
#: the resident's health, the key-safe code, the family's numbers, or what staff wrote on alerts.
NEED_TO_KNOW: dict[Role, frozenset[ResidentField]] = {
    Role.OPERATOR: frozenset(F),
    Role.SUPERVISOR: frozenset(F),
    Role.INSTALLER: frozenset({F.NAME, F.ADDRESS, F.PHONE, F.LANGUAGE, F.DC09_ACCOUNT}),
    Role.ADMIN: frozenset(F),
}

#: Why each field is held (docs/data-protection.md prints this with the table).
PURPOSES: dict[ResidentField, str] = {
    F.NAME: "to greet the resident and tell alerts apart",
    F.ADDRESS: "to send help and to visit",
    F.PHONE: "to call the resident back",
    F.LANGUAGE: "to speak to the resident in their language",
    F.KEY_SAFE: "to let responders and emergency services in",
    F.MEDICAL_NOTES: "to tell responders and ambulance crews what they will find",
    F.RESPONDERS: "to call out family and neighbours",
    F.DC09_ACCOUNT: "to forward alarms to the monitoring centre under the right account",
    F.OTHER_DETAILS: "other details installers recorded",
    F.ALERT_NOTES: "what happened on a call, for the next operator",
}

#: Keys of a resident record (API, export, console card) and the field each one is.
RESIDENT_KEYS: dict[str, ResidentField] = {
    "name": F.NAME,
    "address": F.ADDRESS,
    "phone": F.PHONE,
    "language": F.LANGUAGE,
    "key_safe": F.KEY_SAFE,
    "medical_notes": F.MEDICAL_NOTES,
    "responders": F.RESPONDERS,
    "dc09_account": F.DC09_ACCOUNT,
    "extra": F.OTHER_DETAILS,
}
#: Keys of a record that are not personal data (the pseudonymous id, counts, lists of devices).
NOT_PERSONAL = frozenset({"id", "devices", "hidden", "units"})
#: Keys in an alert timeline entry's detail that name or number a responder (or a supervisor).
TIMELINE_PEOPLE_KEYS = frozenset({"name", "phone", "to", "from", "accepted_by", "responders"})
#: Actors on a timeline that carry a person's name or number after the colon.
PEOPLE_ACTORS = ("responder:", "supervisor:")


def visible(role: Role) -> frozenset[ResidentField]:
    """The fields ``role`` may see."""
    return NEED_TO_KNOW[role]


def may_see(role: Role, field: ResidentField) -> bool:
    return field in NEED_TO_KNOW[role]


def field_of(key: str) -> ResidentField | None:
    """The field a record key holds; None for keys that are not personal data; anything unknown is
    :attr:`ResidentField.OTHER_DETAILS` (a new key is hidden from installers until it is classified)."""
    if key in NOT_PERSONAL:
        return None
    return RESIDENT_KEYS.get(key, F.OTHER_DETAILS)


def _filled(value: Any) -> bool:
    return value not in (None, "", [], {})


def resident_view(role: Role, record: Mapping[str, Any]) -> tuple[dict[str, Any], set[ResidentField]]:
    """``record`` (a resident as the API or an export shows it) without the keys ``role`` may not see,
    and the fields it still shows with a value (what the audit of reads records).

    Hidden keys are left out and listed under ``hidden``, so a client can tell "not recorded" from
    "not for you".
    """
    allowed = NEED_TO_KNOW[role]
    out: dict[str, Any] = {}
    shown: set[ResidentField] = set()
    hidden: list[str] = []
    for key, value in record.items():
        field = field_of(key)
        if field is None:
            out[key] = value
        elif field in allowed:
            out[key] = value
            if _filled(value):
                shown.add(field)
        else:
            hidden.append(key)
    if hidden:
        out["hidden"] = sorted(hidden)
    return out, shown


def card_view(role: Role, card: Mapping[str, Any]) -> tuple[dict[str, Any], set[ResidentField]]:
    """The console's resident card for ``role``: hidden fields are emptied (``None``, or ``[]`` for the
    lists the console iterates) rather than removed, so the card keeps its shape, and named in ``hidden``."""
    allowed = NEED_TO_KNOW[role]
    out: dict[str, Any] = {}
    shown: set[ResidentField] = set()
    hidden: list[str] = []
    for key, value in card.items():
        field = field_of(key)
        if field is None or field in allowed:
            out[key] = value
            if field is not None and _filled(value):
                shown.add(field)
        else:
            out[key] = [] if isinstance(value, list) else None
            if _filled(value):
                hidden.append(key)
    out["hidden"] = sorted(hidden)
    return out, shown


def alert_view(role: Role, alert: Mapping[str, Any]) -> tuple[dict[str, Any], set[ResidentField]]:
    """An alert (``Alert.to_json()``, optionally with its ``timeline``) for ``role``: the note and what
    timeline entries say about responders are kept only for roles that may see them."""
    out = dict(alert)
    shown: set[ResidentField] = set()
    if _filled(out.get("note")):
        if may_see(role, F.ALERT_NOTES):
            shown.add(F.ALERT_NOTES)
        else:
            out["note"] = None
    if "timeline" in out:
        entries, seen = timeline_view(role, out["timeline"])
        out["timeline"] = entries
        shown |= seen
    return out, shown


def timeline_view(
    role: Role, entries: Iterable[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], set[ResidentField]]:
    """Timeline entries (``TimelineEntry.to_json()``) for ``role``: responders' names and numbers (in
    the detail and in actors like ``responder:Tom``) and staff notes are removed where not allowed."""
    people = may_see(role, F.RESPONDERS)
    notes = may_see(role, F.ALERT_NOTES)
    shown: set[ResidentField] = set()
    out: list[dict[str, Any]] = []
    for entry in entries:
        item = dict(entry)
        actor = str(item.get("actor", ""))
        detail = dict(item.get("detail") or {})
        named = actor.startswith(PEOPLE_ACTORS) or any(_filled(detail.get(k)) for k in TIMELINE_PEOPLE_KEYS)
        if named and people:
            shown.add(F.RESPONDERS)
        elif named:
            if actor.startswith(PEOPLE_ACTORS):
                item["actor"] = actor.split(":", 1)[0]
            detail = {k: v for k, v in detail.items() if k not in TIMELINE_PEOPLE_KEYS}
        if _filled(detail.get("note")) or item.get("action") == "note":
            if notes:
                shown.add(F.ALERT_NOTES)
            else:
                detail.pop("note", None)
                detail.pop("text", None)
        item["detail"] = detail
        out.append(item)
    return out, shown


def hidden_keys(role: Role) -> frozenset[str]:
    """The resident record keys ``role`` may not see (for exports that leave whole columns out)."""
    return frozenset(key for key, field in RESIDENT_KEYS.items() if field not in NEED_TO_KNOW[role])
