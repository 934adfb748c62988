"""One home per rule: each rule below is defined once and imported wherever it is used.

The scans read the source tree (``ast``), so a second copy fails here the day it is written, before it
can drift from the first: the E.164 number rule once lived in five modules with two patterns, the unit
kinds in three, the help-alert key in two, the device clock-skew limit in two (one of them dead), and
small helpers (``_j``, ``_dig``) were copied from module to module. The behavioural tests below pin what
the unified rules decide, in particular for numbers one old copy accepted and another refused.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alarm_centre.escalation.notify import DeliveryFailed, Notifier
from alarm_centre.escalation.policy import parse_steps
from alarm_centre.escalation.responders import read_responders
from alarm_centre.store.tx import InvalidRequest
from bridge.config import EscalationConfig, TwilioConfig
from devices.events import CLOCK_SKEW_LIMIT_S, DeviceEvent
from devices.phone import E164_RE, check_e164, is_e164
from devices.registry import UNIT_KINDS, Device, DeviceKind, Resident
from devices.vocabulary import (
    EventType,
    alert_key,
    help_key,
    restore_target,
    restored_data,
    unknown_signal_data,
)
from simulators.twilio_server import TwilioServer

ROOT = Path(__file__).resolve().parent.parent
#: The product's source: every room of the design card that ships.
PACKAGES = ("devices", "alarm_centre", "skills", "bridge", "simulators")
HOME_E164 = "devices/phone.py"
HOME_UNIT_KINDS = "devices/registry.py"
HOME_SKEW = "devices/events.py"
HOME_HELP_KEY = "devices/vocabulary.py"
HOME_JSON = "devices/strict_json.py"


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


MODULES = dict(_modules())


def _strings(tree: ast.Module) -> Iterator[ast.Constant]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


def _assigned_names(tree: ast.Module) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    yield name.id, node.lineno
                elif isinstance(name, ast.Attribute):
                    yield name.attr, node.lineno


def _e164_like(text: str) -> bool:
    """Whether ``text`` is a regular expression that reads a phone number in E.164 form: it takes
    ``+447700900123`` whole and refuses the same digits without their ``+``."""
    if len(text) > 300 or "+" not in text:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pattern = re.compile(text)
        except (re.error, OverflowError, RecursionError):
            return False
    return pattern.fullmatch("+447700900123") is not None and pattern.fullmatch("447700900123") is None


# -- the scans -----------------------------------------------------------------------------------------
def test_the_scan_reads_the_whole_product() -> None:
    assert {HOME_E164, HOME_UNIT_KINDS, HOME_SKEW, HOME_HELP_KEY, HOME_JSON} <= MODULES.keys()
    assert len(MODULES) > 50


def test_the_e164_detector_knows_every_old_copy() -> None:
    for old in (r"\+[1-9][0-9]{6,14}", r"\+[1-9][0-9]{1,14}", r"^\+[1-9][0-9]{6,14}$", r"\+\d{7,15}"):
        assert _e164_like(old), old
    for other in (r"[\x21-\x7e]{1,255}", r"\+CMTI: *\"([^\"]*)\", *(\d+)", r"[\s().-]", "+447700900123"):
        assert not _e164_like(other), other


def test_one_e164_pattern() -> None:
    found = [
        f"{module}:{node.lineno}"
        for module, tree in MODULES.items()
        for node in _strings(tree)
        if _e164_like(node.value)
    ]
    assert len(found) == 1 and found[0].startswith(HOME_E164 + ":"), (
        f"an E.164 pattern outside {HOME_E164} (import devices.phone.is_e164 instead): {found}"
    )
    names = [
        f"{module}:{line}"
        for module, tree in MODULES.items()
        for name, line in _assigned_names(tree)
        if "E164" in name.upper() and module != HOME_E164
    ]
    assert names == [], f"E.164 constants outside {HOME_E164}: {names}"


def test_one_unit_kinds() -> None:
    unit_kinds = {"gsm_unit", "ip_unit", "serial_unit"}
    names = [
        f"{module}:{name}"
        for module, tree in MODULES.items()
        for name, _ in _assigned_names(tree)
        if "UNIT_KIND" in name.upper()
    ]
    assert names == [f"{HOME_UNIT_KINDS}:UNIT_KINDS"], names
    # A list of kinds written out again (a tuple, a set, an SQL IN list in a string) is a second copy too.
    copies: list[str] = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                named = {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in unit_kinds}
                if len(named) >= 2:
                    copies.append(f"{module}:{node.lineno}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "'" in node.value  # an SQL list of kinds
                and sum(kind in node.value for kind in unit_kinds) >= 2
            ):
                copies.append(f"{module}:{node.lineno}")
    assert copies == [], f"unit kinds written out again (import devices.registry.UNIT_KINDS): {copies}"


def test_one_clock_skew_limit() -> None:
    names = [
        f"{module}:{name}"
        for module, tree in MODULES.items()
        for name, _ in _assigned_names(tree)
        if "SKEW" in name.upper() and name.isupper()
    ]
    assert names == [f"{HOME_SKEW}:CLOCK_SKEW_LIMIT_S"], names


def test_one_help_key() -> None:
    """The open key of a help alert is written in one function; nothing else spells ``...:help``."""
    spelled = [
        f"{module}:{node.lineno}"
        for module, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        and any(isinstance(v, ast.Constant) and str(v.value).endswith(":help") for v in node.values)
    ]
    assert len(spelled) == 2 and all(s.startswith(HOME_HELP_KEY + ":") for s in spelled), spelled


def test_one_alert_key() -> None:
    """Every open-alert key (``device:<id>:<type>...``) is spelled in :func:`alert_key` (and
    :func:`help_key`): a second spelling would let a restore or a heartbeat miss the alert it ends."""
    spelled = [
        f"{module}:{node.lineno}"
        for module, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        and node.values
        and isinstance(node.values[0], ast.Constant)
        and node.values[0].value == "device:"
        and any(isinstance(v, ast.Constant) and str(v.value).startswith(":") for v in node.values[1:])
    ]
    assert spelled and all(s.startswith(HOME_HELP_KEY + ":") for s in spelled), spelled


def test_json_columns_are_written_by_one_rule() -> None:
    """``safe_dumps(..., default=str)`` is :func:`devices.strict_json.column_text`; nobody inlines it."""
    inlined = [
        f"{module}:{node.lineno}"
        for module, tree in MODULES.items()
        if module != HOME_JSON
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "safe_dumps"
        and any(k.arg == "default" for k in node.keywords)
    ]
    assert inlined == [], inlined


def _body_key(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring may differ; the rule is the code
    return ast.dump(node.args) + ast.dump(ast.Module(body=body, type_ignores=[]))


def test_no_helper_is_copied_between_modules() -> None:
    """Two module-level functions with the same arguments and the same code in two modules are one
    helper in two homes (``_j`` once lived in three, ``_dig`` in two): give it one and import it."""
    homes: dict[str, list[str]] = defaultdict(list)
    for module, tree in MODULES.items():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                homes[_body_key(node)].append(f"{module}:{node.name}")
    copies = [places for places in homes.values() if len({p.split(":")[0] for p in places}) > 1]
    assert copies == [], copies


def test_the_copy_detector_sees_a_renamed_copy() -> None:
    first = ast.parse("def _j(value):\n    return safe_dumps(value, default=str)\n").body[0]
    renamed = ast.parse('def to_text(value):\n    """Doc."""\n    return safe_dumps(value, default=str)\n')
    renamed = renamed.body[0]
    assert isinstance(first, ast.FunctionDef) and isinstance(renamed, ast.FunctionDef)
    assert _body_key(first) == _body_key(renamed)


# -- the E.164 rule, as every consumer applies it ------------------------------------------------------
#: (number, verdict, why). The first block was accepted by the ``{1,14}`` copies (sending, the Twilio
#: simulator) and refused by the ``{6,14}`` copies (registry, configuration, policies).
NUMBERS: list[tuple[str, bool, str]] = [
    ("+4412", False, "a country code and a fragment: no number rings"),
    ("+123456", False, "6 digits: shorter than any number in service"),
    ("+12", False, "the shortest the old sending check took"),
    ("+6831234", True, "7 digits: Niue's 4-digit numbers with their country code"),
    ("+447700900123", True, "a UK mobile (Ofcom drama range)"),
    ("+123456789012345", True, "15 digits: E.164's longest"),
    ("+1234567890123456", False, "16 digits: longer than E.164 allows"),
    ("+0447700900123", False, "country codes never start with 0"),
    ("447700900123", False, "no +"),
    ("+44 7700 900123", False, "spaces"),
    ("+447700900123\n", False, "a trailing newline ($ would have let it through)"),
    ("+\u0664\u0664\u0667\u0667\u0660\u0660\u0669\u0660\u0660\u0661\u0662\u0663", False, "other digits"),
    ("", False, "empty"),
]


@pytest.mark.parametrize(("number", "ok", "why"), NUMBERS)
def test_every_consumer_applies_the_same_e164_rule(number: str, ok: bool, why: str) -> None:
    assert is_e164(number) is ok, why
    assert (E164_RE.fullmatch(number) is not None) is ok

    def accepts(check: Any) -> bool:
        try:
            check()
        except (ValueError, InvalidRequest, DeliveryFailed):
            return False
        return True

    step = {"after_s": 60, "action": "sms", "to": [number]}
    verdicts = {
        "check_e164": accepts(lambda: check_e164(number)),
        "twilio.supervisor_numbers": accepts(
            lambda: TwilioConfig.model_validate({"supervisor_numbers": [number]})
        ),
        "twilio.from_number": accepts(
            lambda: TwilioConfig.model_validate(
                {"enabled": True, "account_sid": "AC1", "auth_token": "t", "from_number": number}
            )
        ),
        "escalation step (config)": accepts(
            lambda: EscalationConfig.model_validate({"policies": {1: [step]}})
        ),
        "escalation step (API)": accepts(lambda: parse_steps([step])),
        "notifier from_number": accepts(
            lambda: Notifier(account_sid="AC1", auth_token="t", from_number=number)
        ),
    }
    assert verdicts == dict.fromkeys(verdicts, ok), why
    # The registry trims what installers type before the rule, by design (its models strip whitespace),
    # and a unit's empty SIM number means it has none.
    registry = {
        "resident responder": accepts(
            lambda: Resident.model_validate(
                {"id": "r1", "name": "R", "responders": [{"name": "Tom", "phone": number}]}
            )
        )
    }
    if number:
        registry["device SIM"] = accepts(
            lambda: Device.model_validate({"id": "u1", "kind": "gsm_unit", "phone": number})
        )
    assert registry == dict.fromkeys(registry, is_e164(number.strip())), why
    if "\n" not in number and " " not in number:  # read_responders drops spaces first, by design
        assert (len(read_responders({"responders": [{"name": "A", "phone": number}]})[0]) == 1) is ok, why


@pytest.mark.parametrize(("number", "ok"), [("+4412", False), ("+123456", False), ("+6831234", True)])
async def test_sending_and_the_twilio_simulator_agree_with_the_registry(number: str, ok: bool) -> None:
    """The numbers only the old ``{1,14}`` copies took: the notifier refuses them before calling Twilio,
    and the simulator, posted to directly, answers Twilio's 21211 for them too."""
    async with TwilioServer() as twilio:
        async with Notifier(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token,
            from_number="+441632960000",
            api_base_url=twilio.base_url,
            request_timeout=5.0,
            max_attempts=1,
        ) as notifier:
            if ok:
                await notifier.send_sms(to=number, body="test")
            else:
                with pytest.raises(DeliveryFailed) as refused:
                    await notifier.send_sms(to=number, body="test")
                assert (refused.value.code, refused.value.retryable) == (21211, False)
                assert twilio.attempts == []
        url = f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
        auth = {"Authorization": aiohttp.encode_basic_auth(twilio.account_sid, twilio.auth_token)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url, headers=auth, data={"To": number, "From": "+441632960000", "Body": "direct"}
            ) as answer,
        ):
            body = await answer.json()
        assert (answer.status < 300) is ok, body
        if not ok:
            assert body["code"] == 21211


# -- the other rules -----------------------------------------------------------------------------------
def test_unit_kinds_are_every_kind_but_the_echo() -> None:
    assert set(UNIT_KINDS) == {k.value for k in DeviceKind} - {DeviceKind.ALEXA.value}
    assert all(type(k) is str for k in UNIT_KINDS)  # bind as SQL parameters on either store
    assert "gsm_unit" in UNIT_KINDS and DeviceKind.SERIAL_UNIT in UNIT_KINDS


def test_help_collapses_per_resident_else_per_device() -> None:
    assert help_key("unit-1", "res-1") == help_key("echo-1", "res-1") == "resident:res-1:help"
    assert help_key("unit-1", None) == "device:unit-1:help" != help_key("unit-2", None)


def test_alert_keys_per_unit_type_and_for_unknown_signals_per_code() -> None:
    def key(event_type: EventType, **data: str) -> str:
        return alert_key("unit-1", "res-1", event_type, unknown_signal_data(**data) if data else {})

    assert key(EventType.PENDANT) == key(EventType.SMOKE) == help_key("unit-1", "res-1")
    assert key(EventType.LOW_BATTERY) == "device:unit-1:low_battery" != key(EventType.TAMPER)
    one = key(EventType.UNKNOWN_SIGNAL, protocol="dc09", code="1999")
    assert one == "device:unit-1:unknown_signal:dc09:1999"
    assert one != key(EventType.UNKNOWN_SIGNAL, protocol="dc09", code="1888")
    assert one != key(EventType.UNKNOWN_SIGNAL, protocol="scaip", code="1999")
    long_code = "#1234|" + "X" * 4000  # an unreadable data block is its own code: keyed by its digest
    long_key = key(EventType.UNKNOWN_SIGNAL, protocol="dc09", code=long_code)
    assert len(long_key) < 150 and long_key != key(
        EventType.UNKNOWN_SIGNAL, protocol="dc09", code=long_code + "Y"
    )


def test_a_restore_names_an_alert_type_or_nothing() -> None:
    assert restore_target(EventType.MAINS_RESTORED, {}) is EventType.MAINS_FAIL
    assert restore_target(EventType.RESTORED, restored_data(EventType.SMOKE)) is EventType.SMOKE
    for bad in ({}, {"restores": "heartbeat"}, {"restores": "teleport"}, {"restores": 7}, {"restores": None}):
        assert restore_target(EventType.RESTORED, bad) is None, bad
    assert restore_target(EventType.LOW_BATTERY, restored_data(EventType.SMOKE)) is None


@pytest.mark.parametrize(
    ("offset_s", "skewed"),
    [
        (0.0, False),
        (CLOCK_SKEW_LIMIT_S, False),
        (CLOCK_SKEW_LIMIT_S + 1, True),
        (-CLOCK_SKEW_LIMIT_S - 1, True),
    ],
)
def test_clock_skew_is_flagged_past_the_limit_either_way(offset_s: float, skewed: bool) -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    event = DeviceEvent("unit-1", "e1", EventType.PENDANT, now, ts=now + timedelta(seconds=offset_s))
    assert event.clock_skewed is skewed
    assert DeviceEvent("unit-1", "e2", EventType.PENDANT, now).clock_skewed is False  # no device time
    assert CLOCK_SKEW_LIMIT_S == 300.0  # five minutes, as docs/wire-contract.md promises
