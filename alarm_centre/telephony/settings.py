"""What the telephony engine needs from configuration, and the rules about numbers it dials.

``bridge/feature_telephony.py`` builds :class:`TelephonySettings` from the ``telephony:`` section; the
engine, the runner and the routes read only this.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from devices.phone import is_e164, is_emergency_number

#: What Twilio's Voice SDK accepts as a client identity (we make ours from the user name).
_IDENTITY_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
CLIENT_PREFIX = "client:"


def dialable(number: str) -> bool:
    """A number the centre may dial: E.164, or a short emergency number."""
    return is_e164(number) or is_emergency_number(number)


def client_identity(user: str) -> str:
    """The Voice SDK identity of a console user: readable, only ``[A-Za-z0-9_]``, and unique (a digest
    of the exact name is appended, so ``a.b`` and ``a_b`` never share one)."""
    digest = hashlib.sha256(user.encode()).hexdigest()[:10]
    return f"op_{_IDENTITY_UNSAFE.sub('_', user)[:40]}_{digest}"


@dataclass(frozen=True, slots=True)
class OperatorLine:
    """How one operator is reached: a phone number, or ``client:<identity>`` (the browser)."""

    name: str
    address: str

    @property
    def browser(self) -> bool:
        return self.address.startswith(CLIENT_PREFIX)

    @property
    def via(self) -> str:
        return "browser" if self.browser else "phone"


@dataclass(frozen=True, slots=True)
class TelephonySettings:
    enabled: bool = False
    numbers: tuple[str, ...] = ()
    #: Twilio's number calls out come from (``twilio.from_number``).
    from_number: str = ""
    operators: Mapping[str, OperatorLine] = field(default_factory=dict)
    ring_s: float = 20.0
    overflow_after_s: float = 60.0
    overflow_number: str = ""
    record: bool = True
    announcement: str = ""
    retention_days: int = 90
    emergency_number: str = "999"
    audit_calls_per_handler: int = 2
    hold_music_url: str = ""
    language: str = "en-GB"
    lease_s: float = 30.0
    node: str = "node"

    def line(self, user: str) -> OperatorLine | None:
        """How ``user`` takes calls, or None when they take none."""
        return self.operators.get(user)

    @property
    def retention_s(self) -> float:
        return self.retention_days * 86400.0


def operator_lines(phones: Mapping[str, str], browsers: tuple[str, ...]) -> dict[str, OperatorLine]:
    """Operators by name: a phone number each, or the browser (a Voice SDK client identity)."""
    lines = {name: OperatorLine(name, number) for name, number in phones.items()}
    for name in browsers:
        lines[name] = OperatorLine(name, CLIENT_PREFIX + client_identity(name))
    return lines
