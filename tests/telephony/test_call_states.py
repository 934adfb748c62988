"""Telephony's state machines (calls, legs): every pair of states through each table, no state written as
an SQL literal, and the small pure rules beside them (client identities, numbers the centre dials)."""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import alarm_centre.telephony as package
from alarm_centre.escalation.states import IllegalStateChange, StateTable
from alarm_centre.telephony.settings import client_identity, dialable
from alarm_centre.telephony.states import CALLS, LEGS, CallState, LegState

LEGAL: dict[str, set[tuple[str, str]]] = {
    "calls": {
        ("waiting", "overflow"),
        ("waiting", "connected"),
        ("waiting", "ended"),
        ("overflow", "connected"),
        ("overflow", "ended"),
        ("dialing", "connected"),
        ("dialing", "ended"),
        ("connected", "ended"),
    },
    "legs": {
        ("queued", "ringing"),
        ("queued", "answered"),
        ("queued", "unanswered"),
        ("queued", "cancelling"),
        ("ringing", "answered"),
        ("ringing", "unanswered"),
        ("ringing", "cancelling"),
        ("cancelling", "unanswered"),
        ("cancelling", "answered"),
        ("answered", "ended"),
        ("answered", "hanging_up"),
        ("hanging_up", "ended"),
    },
}
TABLES: dict[str, tuple[StateTable[Any], type[StrEnum]]] = {
    "calls": (CALLS, CallState),
    "legs": (LEGS, LegState),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_transition_of_each_table(name: str) -> None:
    table, states = TABLES[name]
    assert set(table.moves) == set(states), "every state has a row"
    for current, target in itertools.product(states, repeat=2):
        if (current.value, target.value) in LEGAL[name]:
            assert table.check(current, target) is target
            assert current in table.sources(target)
        else:
            with pytest.raises(IllegalStateChange, match=f"from {current.value} to {target.value}"):
                table.check(current, target)
            assert current not in table.sources(target)


def test_no_state_literal_is_left_in_the_telephony_sql() -> None:
    literal = re.compile(r"\b(state|role|direction|result|verdict|reason)\s*(=|<>|!=|IN)\s*\(?'", re.I)
    for path in Path(package.__file__).parent.glob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not literal.search(line), f"{path.name}:{n}: {line.strip()}"


@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=64))
def test_client_identities_are_safe_and_never_shared(one: str, other: str) -> None:
    a, b = client_identity(one), client_identity(other)
    assert re.fullmatch(r"op_[A-Za-z0-9_]{1,60}", a) and len(a) <= 121
    assert (a == b) is (one == other)


@pytest.mark.parametrize(
    ("number", "ok"),
    [("+447700900123", True), ("999", True), ("112", True), ("911", True), ("998", False), ("+44", False),
     ("447700900123", False), ("client:op_x", False), ("", False)],
)  # fmt: skip
def test_the_numbers_the_centre_dials(number: str, ok: bool) -> None:
    assert dialable(number) is ok
