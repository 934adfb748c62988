"""Commissioning visits: the state table walked move by move, and each way a visit ends on a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alarm_centre.registry.commissioning import (
    TRANSITIONS,
    IllegalVisitTransition,
    VisitAction,
    VisitState,
    next_state,
    state_of,
)
from alarm_centre.registry.service import Registry
from alarm_centre.store import open_store
from alarm_centre.store.tx import Conflict
from devices.registry import Device

#: Every legal move: (from, action) -> to. Anything else is refused.
LEGAL = {
    (VisitState.IN_PROGRESS, VisitAction.FINISH): VisitState.FINISHED,
    (VisitState.IN_PROGRESS, VisitAction.TIME_OUT): VisitState.TIMED_OUT,
    (VisitState.IN_PROGRESS, VisitAction.RETIRE_DEVICE): VisitState.DEVICE_RETIRED,
}


@pytest.mark.parametrize("state", list(VisitState))
@pytest.mark.parametrize("action", list(VisitAction))
def test_every_move_of_the_table(state: VisitState, action: VisitAction) -> None:
    if (state, action) in LEGAL:
        assert next_state(state, action) is LEGAL[(state, action)]
    else:
        with pytest.raises(IllegalVisitTransition) as refused:
            next_state(state, action)
        assert refused.value.state is state and refused.value.action is action
        assert isinstance(refused.value, Conflict)  # an API client gets a 409


def test_the_table_names_every_state() -> None:
    assert set(TRANSITIONS) == set(VisitState)
    # The stored finish reasons, which the API and old rows carry, are the closed states' values.
    assert {s.value for s in VisitState} - {"in progress"} == {"finished", "timed out", "device retired"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[tuple[Registry, Clock]]:
    clock = Clock()
    async with open_store(str(tmp_path / "s.db")) as store:
        reg = Registry(store, clock=clock)
        reg.install()
        yield reg, clock


async def ended(reg: Registry, device_id: str) -> dict[str, object]:
    visit = await reg.visit(device_id)
    async with reg.store.read() as tx:
        row = await tx.fetchone("SELECT * FROM commissioning_visits WHERE id = ?", visit["visit_id"])
    assert row is not None
    assert state_of(row).value == visit["finish_reason"]
    return visit


async def test_each_legal_move_on_a_real_store(registry: tuple[Registry, Clock]) -> None:
    reg, clock = registry
    for n in ("u1", "u2", "u3"):
        await reg.create_device(Device(id=n, kind="gsm_unit"), actor="ian", source="api")
        started = await reg.start_visit(n, installer="ian", minutes=10)
        assert started["in_test_mode"] and started["finish_reason"] is None
    await reg.finish_visit("u1", actor="ian")
    await reg.retire("u3", actor="ian", source="api")
    clock.now += 11 * 60
    assert await reg.expire_visits() == 1
    assert (await ended(reg, "u1"))["finish_reason"] == VisitState.FINISHED
    assert (await ended(reg, "u2"))["finish_reason"] == VisitState.TIMED_OUT
    assert (await ended(reg, "u3"))["finish_reason"] == VisitState.DEVICE_RETIRED
    # A closed visit makes no further move: there is nothing in progress to finish.
    with pytest.raises(Conflict):
        await reg.finish_visit("u1", actor="ian")
