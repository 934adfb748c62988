"""What the registry knows about residents and their devices, as validated pydantic models.

The registry stores a resident's details in ``residents.data`` (JSON) beside ``id`` and ``name``:
``address``, ``key_safe``, ``medical_notes``, ``language`` and ``responders`` -- an ordered list of
``{"name", "phone"}`` with E.164 numbers (escalation calls them in that order). A device's columns are
``id, kind, resident_id, channel, phone (SIM number), imei, alexa_device_id, heartbeat_interval_s,
heartbeat_grace_s``; the rest (``serial_port``, ``firmware``, ``peripherals``) lives in ``devices.data``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from devices.dc09 import parse_key
from devices.events import DEVICE_ID_RULE, device_id_ok
from devices.phone import check_e164
from devices.vocabulary import EventType

IMEI_RE = re.compile(r"[0-9]{15}")
#: A SIA DC-09 account: 3-16 hex digits (stored upper case).
DC09_ACCOUNT_RE = re.compile(r"[0-9A-Fa-f]{3,16}")
DC09_KEY_RULE = "a DC-09 key is 16, 24 or 32 characters, or 32, 48 or 64 hex digits"
SCAIP_CID_RE = re.compile(r"[0-9]{1,32}")
SCAIP_PASSWORD_RULE = "a SCAIP SIP password is 8-128 printable characters"
LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
LANGUAGE_RULE = "must be a language tag like en-GB or cy, or a language name like English or Welsh"
#: Language names installers type, and the tag each stands for (lower-case name -> tag). The
#: languages most spoken by residents and carers in the UK; anything else is given as a tag.
LANGUAGE_NAMES: dict[str, str] = {
    "english": "en",
    "welsh": "cy",
    "cymraeg": "cy",
    "scottish gaelic": "gd",
    "gaelic": "gd",
    "irish": "ga",
    "cornish": "kw",
    "british sign language": "bfi",
    "bsl": "bfi",
    "polish": "pl",
    "romanian": "ro",
    "punjabi": "pa",
    "urdu": "ur",
    "bengali": "bn",
    "gujarati": "gu",
    "hindi": "hi",
    "tamil": "ta",
    "arabic": "ar",
    "somali": "so",
    "turkish": "tr",
    "portuguese": "pt",
    "spanish": "es",
    "french": "fr",
    "german": "de",
    "italian": "it",
    "lithuanian": "lt",
    "chinese": "zh",
    "cantonese": "yue",
    "mandarin": "cmn",
}
ID_RULE = f"must be {DEVICE_ID_RULE}"


class DeviceKind(StrEnum):
    GSM_UNIT = "gsm_unit"
    IP_UNIT = "ip_unit"
    SERIAL_UNIT = "serial_unit"
    ALEXA = "alexa"


#: The kinds that are telecare units (everything but an Echo): the only home of this rule. Plain
#: strings in a fixed order, so a stored ``kind`` compares equal and SQL ``IN (...)`` lists bind them.
UNIT_KINDS: tuple[str, ...] = (
    DeviceKind.GSM_UNIT.value,
    DeviceKind.IP_UNIT.value,
    DeviceKind.SERIAL_UNIT.value,
)


class PeripheralType(StrEnum):
    PENDANT = "pendant"
    FALL_DETECTOR = "fall_detector"
    SMOKE = "smoke"
    HEAT = "heat"
    CO = "co"
    GAS = "gas"
    FLOOD = "flood"
    DOOR = "door"
    BED_SENSOR = "bed_sensor"
    CHAIR_SENSOR = "chair_sensor"
    EPILEPSY = "epilepsy"
    PIR = "pir"


#: The event a peripheral sends when the installer presses or triggers it.
PERIPHERAL_EVENT: dict[PeripheralType, EventType] = {
    PeripheralType.PENDANT: EventType.PENDANT,
    PeripheralType.FALL_DETECTOR: EventType.FALL,
    PeripheralType.SMOKE: EventType.SMOKE,
    PeripheralType.HEAT: EventType.HEAT,
    PeripheralType.CO: EventType.CO,
    PeripheralType.GAS: EventType.GAS,
    PeripheralType.FLOOD: EventType.FLOOD,
    PeripheralType.DOOR: EventType.DOOR_EXIT,
    PeripheralType.BED_SENSOR: EventType.BED_EXIT,
    PeripheralType.CHAIR_SENSOR: EventType.CHAIR_EXIT,
    PeripheralType.EPILEPSY: EventType.EPILEPSY,
    PeripheralType.PIR: EventType.INACTIVITY,
}


def check_id(value: str) -> str:
    if not device_id_ok(value):
        raise ValueError(f"id {ID_RULE}")
    return value


def normalise_language(value: str) -> str:
    """A resident's language as a BCP 47 tag: ``Welsh`` -> ``cy``, ``EN-gb`` -> ``en-GB``.

    The one rule for every write and every read (API, CLI, CSV/YAML import, demo seeding, the store);
    raises ValueError naming the rule when the value is neither a tag nor a known language name.
    """
    if not isinstance(value, str):
        raise ValueError(LANGUAGE_RULE)
    text = " ".join(value.split())
    named = LANGUAGE_NAMES.get(text.lower())
    if named is not None:
        return named
    if len(text) > 35 or not LANGUAGE_RE.fullmatch(text):
        raise ValueError(LANGUAGE_RULE)  # no echo: what was typed in a resident's record stays there
    primary, *rest = text.split("-")
    # BCP 47 case conventions: language lower, script title (4 letters), region upper (2 letters).
    tidy = [primary.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            tidy.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            tidy.append(part.title())
        else:
            tidy.append(part.lower())
    return "-".join(tidy)


def imei_ok(imei: str) -> bool:
    """Fifteen digits whose Luhn check digit is right."""
    if not IMEI_RE.fullmatch(imei):
        return False
    total = 0
    for i, ch in enumerate(reversed(imei)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def check_dc09_account(value: str | None) -> str | None:
    """A DC-09 account (3-16 hex digits) in upper case; None for none; ValueError otherwise."""
    if value is None or value == "":
        return None
    if not DC09_ACCOUNT_RE.fullmatch(value):
        raise ValueError("a DC-09 account is 3-16 hex digits")
    return value.upper()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


class Responder(_Model):
    name: str = Field(min_length=1, max_length=100)
    phone: str

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return check_e164(value)


class Resident(_Model):
    id: str
    name: str = Field(min_length=1, max_length=200)
    address: str = Field("", max_length=500)
    key_safe: str = Field("", max_length=200)
    medical_notes: str = Field("", max_length=4000)
    language: str = Field("en-GB", max_length=35)
    #: The resident's own phone (E.164, optional): a call to the centre from it is matched to them.
    phone: str | None = None
    #: Called in this order.
    responders: list[Responder] = Field(default_factory=list, max_length=10)
    #: The SIA DC-09 account an upstream monitoring centre knows the resident by (3-16 hex, unique);
    #: their forwarded alerts carry it (else the forwarding path's own account). docs/dc09.md.
    dc09_account: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value)

    @field_validator("dc09_account")
    @classmethod
    def _dc09_account(cls, value: str | None) -> str | None:
        return check_dc09_account(value)

    @field_validator("phone")
    @classmethod
    def _own_phone(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else check_e164(value)

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: Any) -> str:
        return normalise_language(value)

    def data(self) -> dict[str, Any]:
        """What goes into ``residents.data``."""
        return self.model_dump(exclude={"id", "name", "dc09_account", "phone"})

    @classmethod
    def from_row(cls, row: Any) -> Self:
        import json

        data = row["data"]
        extra = json.loads(data) if isinstance(data, str) else dict(data or {})
        # Other features keep their own keys in residents.data, and older writers added keys to
        # responders (``relation``, ``order``): only what this model knows is read.
        known = {k: v for k, v in extra.items() if k in cls.model_fields}
        if isinstance(known.get("responders"), list):
            known["responders"] = [
                {k: v for k, v in r.items() if k in Responder.model_fields} if isinstance(r, dict) else r
                for r in known["responders"]
            ]
        known.pop("dc09_account", None)  # a column of its own (unique), never read from data
        known.pop("phone", None)  # a column of its own (callers are matched on it)
        account = row.get("dc09_account")
        return cls.model_validate(
            {
                "id": row["id"],
                "name": row["name"],
                **known,
                "dc09_account": account,
                "phone": row.get("phone"),
            }
        )


class Peripheral(_Model):
    id: str
    type: PeripheralType
    location: str = Field("", max_length=100)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value)

    @property
    def event_type(self) -> EventType:
        return PERIPHERAL_EVENT[self.type]


class Device(_Model):
    id: str
    kind: DeviceKind
    resident_id: str | None = None
    channel: Literal["mqtt", "serial", "sms", "dc09", "scaip"] = "mqtt"
    #: The unit's SIM number (E.164); SMS alarms are matched on it.
    phone: str | None = None
    imei: str | None = None
    serial_port: str | None = Field(None, max_length=200)
    firmware: str | None = Field(None, max_length=64)
    alexa_device_id: str | None = Field(None, min_length=1, max_length=255)
    #: Seconds between the unit's heartbeats; None: the bridge's ``heartbeats.default_interval_s``.
    heartbeat_interval_s: int | None = Field(None, ge=10, le=7 * 86400)
    #: Extra seconds allowed after a missed heartbeat before ``no_heartbeat`` is raised.
    heartbeat_grace_s: int | None = Field(None, ge=0, le=86400)
    peripherals: list[Peripheral] = Field(default_factory=list, max_length=32)
    #: The SIA DC-09 account the unit reports as (3-16 hex, unique); with ``channel: dc09``.
    dc09_account: str | None = None
    #: The unit's DC-09 AES key: write-only (never in the API's answers, logs or repr).
    #: ``exclude``: no dump (API answer, export, CLI print) ever carries it; :func:`merge` keeps it.
    dc09_key: str | None = Field(None, repr=False, exclude=True)
    #: The SCAIP caller id (``cid``, 1-32 digits as SS 91100 allows, unique) the unit reports as;
    #: with ``channel: scaip``.
    scaip_cid: str | None = None
    #: How the unit gets SCAIP answers: ``in_200`` (the 200 OK's body) or ``message`` (a MESSAGE back);
    #: None: the bridge's ``scaip.answer``.
    scaip_answer: Literal["in_200", "message"] | None = None
    #: The password of the unit's SIP identity (digest, user name = its cid): write-only, like dc09_key.
    scaip_password: str | None = Field(None, repr=False, exclude=True)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not device_id_ok(value):
            raise ValueError(f"device id {ID_RULE}")
        return value

    @field_validator("resident_id")
    @classmethod
    def _resident(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else check_id(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else check_e164(value)

    @field_validator("imei")
    @classmethod
    def _imei(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not imei_ok(value):
            raise ValueError("an IMEI is 15 digits with a valid check digit")
        return value

    @field_validator("dc09_account")
    @classmethod
    def _dc09_account(cls, value: str | None) -> str | None:
        return check_dc09_account(value)

    @field_validator("scaip_cid")
    @classmethod
    def _scaip_cid(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not SCAIP_CID_RE.fullmatch(value):
            raise ValueError("a SCAIP caller id (cid) is 1-32 digits")
        return value

    @field_validator("scaip_answer", mode="before")
    @classmethod
    def _scaip_answer(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("scaip_password", mode="before")
    @classmethod
    def _scaip_password(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not 8 <= len(value) <= 128 or not value.isprintable():
            raise ValueError(SCAIP_PASSWORD_RULE)  # never echo the value: it is a secret
        return value

    @field_validator("dc09_key")
    @classmethod
    def _dc09_key(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            parse_key(value)
        except ValueError:
            raise ValueError(DC09_KEY_RULE) from None  # never echo the value: it is a secret
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [p.id for p in self.peripherals]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"peripheral ids must be unique on a device: {', '.join(dupes)}")
        if self.kind is DeviceKind.ALEXA and (self.peripherals or self.imei or self.serial_port):
            raise ValueError("an Alexa device has no peripherals, IMEI or serial port")
        if self.dc09_key is not None and self.dc09_account is None:
            raise ValueError("a dc09_key needs a dc09_account")
        if self.scaip_password is not None and self.scaip_cid is None:
            raise ValueError("a scaip_password needs a scaip_cid")
        if self.kind is DeviceKind.SERIAL_UNIT and self.channel == "mqtt" and self.serial_port:
            self.channel = "serial"
        return self

    @property
    def is_unit(self) -> bool:
        return self.kind in UNIT_KINDS

    def data(self) -> dict[str, Any]:
        """What goes into ``devices.data``."""
        return self.model_dump(mode="json", include={"serial_port", "firmware", "peripherals"})

    @classmethod
    def from_row(cls, row: Any) -> Self:
        import json

        raw = row["data"]
        extra = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        fields = {
            k: row[k]
            for k in (
                "id",
                "kind",
                "resident_id",
                "channel",
                "phone",
                "alexa_device_id",
                "heartbeat_interval_s",
            )
            if k in row
        }
        for k in (
            "imei",
            "heartbeat_grace_s",
            "dc09_account",
            "dc09_key",
            "scaip_cid",
            "scaip_answer",
            "scaip_password",
        ):
            if k in row:
                fields[k] = row[k]
        fields.update({k: v for k, v in extra.items() if k in ("serial_port", "firmware", "peripherals")})
        return cls.model_validate(fields)


def merge(model: type[Device] | type[Resident], current: Device | Resident, changes: dict[str, Any]) -> Any:
    """``current`` with ``changes`` applied, validated as a whole; the id cannot change."""
    if "id" in changes and changes["id"] != current.id:
        raise ValueError("the id cannot be changed; retire the device and register a new one")
    kept: dict[str, Any] = {}
    if isinstance(current, Device) and current.dc09_key is not None:
        kept["dc09_key"] = current.dc09_key  # write-only, so not in the dump: carried over unless changed
    if isinstance(current, Device) and current.scaip_password is not None:
        kept["scaip_password"] = current.scaip_password  # write-only too
    return model.model_validate({**current.model_dump(mode="json"), **kept, **changes})


#: What a message says in place of a value it would have repeated.
GIVEN = "the value given"


def errors_of(exc: ValidationError) -> list[dict[str, str]]:
    """A pydantic error as ``[{"field", "message"}]`` (the API's 422 detail shape): the one way a
    validation error is shown, by the API, the CLI and bulk import.

    Never the input: pydantic's ``input`` (and ``ctx``) are left out, and a message that repeats what
    was sent (a rule that quotes the value) has it replaced by "the value given" -- a phone number, an
    address or a medical note typed into a form must not come back in an error, be logged with it, or
    be cached by a proxy.
    """
    out = []
    for e in exc.errors(include_url=False, include_context=False):
        msg = e["msg"].removeprefix("Value error, ")
        given = e.get("input")
        if isinstance(given, str) and len(given.strip()) >= 3:
            for echo in {given, given.strip(), given[:40], given.strip()[:40], repr(given[:30])}:
                if len(echo) >= 3:
                    msg = msg.replace(echo, GIVEN)
        out.append({"field": ".".join(str(p) for p in e["loc"]) or "(record)", "message": msg})
    return out


class UnitSettings(_Model):
    """Settings an installer may change remotely; sent to the unit in a ``configure`` command."""

    heartbeat_interval_s: int | None = Field(None, ge=10, le=7 * 86400)
    #: Numbers the unit dials for a speech call, in order (E.164).
    centre_numbers: list[str] | None = Field(None, max_length=4)
    #: Speaker volume, 0-10.
    volume: int | None = Field(None, ge=0, le=10)
    #: Model-specific options, passed through unchanged.
    options: dict[str, str | int | float | bool] | None = None

    @field_validator("centre_numbers")
    @classmethod
    def _numbers(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_e164(v) for v in value]
