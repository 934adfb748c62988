"""The escalation loop never fails silently: a failure is logged with its traceback, counted in
``telecare_escalation_loop_errors{stage}``, and the loop keeps going (issue 11; these stages were
wrapped in ``suppress(Exception)`` before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

import pytest
from harness import eventually
from prometheus_client import CollectorRegistry

from alarm_centre.escalation.engine import Escalation, EscalationSettings
from alarm_centre.escalation.metrics import EscalationMetrics
from alarm_centre.escalation.runner import EscalationRunner
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from devices.cancellation import stop


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    async with open_store(store_url) as opened:
        yield opened


def errors(metrics: EscalationMetrics, stage: str) -> float:
    value: float = metrics.loop_errors.labels(stage)._value.get()
    return value


class Broken(Escalation):
    """A real escalation whose restart sweep and due-time query fail (the injected fault)."""

    def __init__(self, store: AlertStore) -> None:
        super().__init__(store, EscalationSettings())
        self.ticks = 0

    async def start_callouts(self, alert_ids: Iterable[str] | None = None) -> list[str]:
        if alert_ids is None:
            raise OSError("disk gone during the sweep")
        return await super().start_callouts(alert_ids)

    async def next_due(self) -> float | None:
        raise OSError("disk gone reading due times")

    async def run_due_steps(self, *, now: float | None = None, limit: int = 100) -> int:
        self.ticks += 1
        return await super().run_due_steps(now=now, limit=limit)


async def test_loop_failures_are_logged_counted_and_survived(
    store: AlertStore, caplog: pytest.LogCaptureFixture
) -> None:
    escalation = Broken(store)
    metrics = EscalationMetrics(CollectorRegistry())
    caplog.set_level(logging.ERROR, logger="alarm_centre.escalation.runner")
    async with EscalationRunner(
        escalation, None, metrics, public_url=lambda: "http://127.0.0.1:9", poll_s=0.01
    ) as runner:
        task = asyncio.create_task(runner.run())
        try:

            async def three_ticks() -> bool:
                return escalation.ticks >= 3 and errors(metrics, "next_due") >= 3

            await eventually(three_ticks)
        finally:
            await stop(task)
    assert task.cancelled(), "only cancellation ends the loop"
    assert errors(metrics, "callout_sweep") == 1
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert any(
        "call-out sweep" in r.getMessage() and "during the sweep" in str(r.exc_info[1])
        for r in failures
        if r.exc_info
    )
    assert any("next due" in r.getMessage() for r in failures)
