"""Safety loops never swallow an error in silence: it is logged with its traceback, counted in
``telecare_loop_errors_total{loop}`` and the loop goes on; cancellation still stops it."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from harness import RunningBridge, eventually

from bridge.metrics import BridgeMetrics


def loop_errors(text: str, loop: str) -> float:
    found = re.search(rf'^telecare_loop_errors_total{{loop="{loop}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_failed_round_is_counted_and_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    metrics = BridgeMetrics("n1")
    caplog.set_level(logging.INFO, logger="bridge.metrics")
    for _ in range(2):
        with metrics.loop_round("gauges"):
            raise RuntimeError("store gone")
    with metrics.loop_round("gauges"):
        pass
    with metrics.loop_round("gauges"):
        raise RuntimeError("store gone")
    assert metrics.loop_errors.labels("gauges")._value.get() == 3
    records = [r for r in caplog.records if r.name == "bridge.metrics"]
    # One fault (alarm_centre/faults.py): it starts with its traceback; the repeats and a good round
    # between them, all within seconds, are counted, not logged again (at most a line per 10 s).
    assert [(r.levelno, r.exc_info is not None) for r in records] == [(logging.WARNING, True)]
    assert "gauges round failed: RuntimeError: store gone" in records[0].getMessage()


async def test_a_round_does_not_swallow_cancellation() -> None:
    metrics = BridgeMetrics("n1")

    inside = asyncio.Event()

    async def loop() -> None:
        while True:
            with metrics.loop_round("gauges"):
                inside.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(loop())
    await inside.wait()  # the cancellation lands inside a round
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert metrics.loop_errors.labels("gauges")._value.get() == 0


async def test_the_gauges_survive_a_store_that_cannot_answer(
    embedded_bridge: RunningBridge, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.metrics")
    alerts = embedded_bridge.store.alerts
    real = alerts.open_alert_counts
    calls = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:  # the fault: the first two rounds fail
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("store cannot answer")
        return await real(*args, **kwargs)

    monkeypatch.setattr(alerts, "open_alert_counts", failing)

    async def counted(n: float) -> bool:
        status, text = await embedded_bridge.call("GET", "/metrics", user=None)
        return status == 200 and loop_errors(text, "gauges") == n

    async def went_on() -> bool:  # each scrape is a round of the gauges
        status, _ = await embedded_bridge.call("GET", "/metrics", user=None)
        return status == 200 and calls >= 3

    await eventually(lambda: counted(2), timeout=20)
    await eventually(went_on, timeout=20)  # and the gauges kept being read
    traced = [r for r in caplog.records if r.name == "bridge.metrics" and r.exc_info is not None]
    assert traced and "store cannot answer" in str(traced[0].exc_info[1])
