"""The missed check-in loop never fails silently: a failing sweep is logged with its traceback, counted
on /metrics, and the loop keeps going (a fault injected into a real service on a real store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alarm_centre.alerts.intake import GroupCommitter
from alarm_centre.store import open_store
from skills.voice import VoiceService


async def test_a_failing_check_in_sweep_is_counted_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = CollectorRegistry()
    async with open_store(str(tmp_path / "s.db")) as store, GroupCommitter(store) as intake:
        service = VoiceService(store, intake, metrics_registry=metrics)
        real = service.raise_missed_check_ins
        calls: list[int] = []
        third = asyncio.Event()

        async def flaky(now: float | None = None) -> list[str]:
            calls.append(1)
            if len(calls) >= 3:
                third.set()
            if len(calls) <= 2:
                raise RuntimeError("database went away")
            return await real(now)

        monkeypatch.setattr(service, "raise_missed_check_ins", flaky)
        task = asyncio.create_task(service.run_check_in_loop(0))
        try:
            async with asyncio.timeout(30):
                await third.wait()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert metrics.get_sample_value("telecare_voice_check_in_sweep_failures_total") == 2
    # two failed sweeps in a row are one fault: its traceback once, when it starts
    traced = [r for r in caplog.records if "check-in sweep failed" in r.getMessage() and r.exc_info]
    assert len(traced) == 1
