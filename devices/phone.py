"""Phone numbers in E.164 form: the one rule for every number the service stores, texts or calls.

E.164 (ITU-T) writes a number as ``+``, a country code that never starts with 0, and the national
number: at most 15 digits in all, no spaces. The shortest numbers in service have 7 digits with their
country code (a 3-digit code and a 4-digit local number in the smallest numbering plans, Niue's +683
for one), so the rule is ``+`` then 7 to 15 digits, the first not 0.

Seven, not one: a looser ``+[1-9][0-9]{1,14}`` once guarded sending and the Twilio simulator while the
registry and the configuration refused anything under 7 digits, so ``+4412`` passed one check and
failed another. A fragment like that never rings anyone; it is refused wherever a number comes in
(registry, configuration, escalation policies) and again before sending, with the same rule. Every
number in the tests, the demo and the docs (``+447700900123`` and the like) keeps it.
"""

from __future__ import annotations

import re
from typing import TypeGuard

#: The rule as a pattern: ``+``, a non-zero digit, 6 to 14 more (use ``fullmatch``; JSON Schema
#: users anchor it as ``^...$``).
E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
E164_EXAMPLE = "+447700900123"


#: A phone number inside text: the E.164 rule above (built from it, not a second copy of it), or a
#: national number (a ``0`` and 9-10 more digits, how senders and residents often write UK numbers).
#: For keeping numbers out of logs (:func:`mask_numbers`), never for deciding what a number is.
NUMBER_IN_TEXT_RE = re.compile(r"(?<![0-9+])(?:" + E164_RE.pattern + r"|0[1-9][0-9]{8,9})(?![0-9])")


def mask_number(value: object) -> str:
    """A phone number as logs may show it: its last three digits (``***123``), enough to tell two
    numbers of one resident apart, too little to call anyone."""
    text = str(value)
    digits = [c for c in text if c.isdigit()]
    return "***" + "".join(digits[-3:]) if len(digits) >= 6 else "***"


def mask_numbers(text: str) -> str:
    """``text`` with every phone number in it masked (:func:`mask_number`)."""
    return NUMBER_IN_TEXT_RE.sub(lambda m: mask_number(m.group(0)), text)


def is_e164(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string holding one E.164 number and nothing else."""
    return isinstance(value, str) and E164_RE.fullmatch(value) is not None


#: Short emergency numbers (999 in the UK, 112 across Europe, 911, 000, 111): not E.164, but a centre
#: dials them from the alert card (Twilio's Emergency Calling) and the audit looks for them.
EMERGENCY_NUMBERS = frozenset({"999", "112", "911", "000", "111"})


def is_emergency_number(value: object) -> bool:
    """Whether ``value`` is one of the short emergency numbers."""
    return isinstance(value, str) and value in EMERGENCY_NUMBERS


def check_e164(value: object) -> str:
    """``value`` when it is an E.164 number; raises ValueError naming the rule otherwise."""
    if not is_e164(value):  # never echo the value: it is someone's phone number
        raise ValueError(f"not an E.164 number (like {E164_EXAMPLE}: '+', country code, digits, no spaces)")
    return value
