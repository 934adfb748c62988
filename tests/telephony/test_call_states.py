"""Telephony's state machines (calls, legs): every pair of states through each table, no state written as
an SQL literal, and the small pure rules beside them (client identities, numbers the centre dials)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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


async def test_the_telephony_loop_backs_off_and_logs_a_lasting_fault_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that cannot be written: the loop's passes fail; it waits longer after each (up to the
    loops' ceiling) and logs the fault with its traceback once, not once per pass (issue 17)."""
    from types import SimpleNamespace

    from alarm_centre.faults import LOOP_RETRY_MAX_S
    from alarm_centre.telephony.runner import TelephonyRunner

    async def full_disk() -> None:
        raise OSError(28, "No space left on device")

    telephony = SimpleNamespace(time_out_offers=full_disk)
    metrics = SimpleNamespace(loop_errors=SimpleNamespace(labels=lambda _: SimpleNamespace(inc=lambda: None)))
    runner = TelephonyRunner(
        telephony,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        metrics,  # type: ignore[arg-type]
        public_url=lambda: "http://127.0.0.1",
        tz=ZoneInfo("Europe/London"),
    )
    pauses: list[float] = []

    async def pause(delay: float) -> None:
        pauses.append(delay)
        if len(pauses) == 12:
            raise asyncio.CancelledError

    runner._pause = pause  # type: ignore[method-assign]
    with (
        caplog.at_level(logging.DEBUG, logger="alarm_centre.telephony.runner"),
        pytest.raises(asyncio.CancelledError),
    ):
        await runner.run()
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(pauses)), pauses  # jittered
    assert pauses[0] <= 0.25 and max(pauses) <= LOOP_RETRY_MAX_S and pauses[-1] > 1.0, pauses
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in caplog.records]
    assert len(caplog.records) <= 3, [r.getMessage() for r in caplog.records]
