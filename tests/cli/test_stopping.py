"""Stopping on a signal (bridge/cli/common.py): a shutdown that takes long names what it waits for."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from bridge.cli import common


def test_a_slow_stop_names_the_tasks_it_waits_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(common, "STOP_REPORT_S", 0.0)
    reported: list[str] = []

    async def main() -> None:
        told = asyncio.Event()

        class Heard(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                reported.append(record.getMessage())
                told.set()

        heard = Heard(logging.WARNING)
        common.log.addHandler(heard)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            try:
                await asyncio.Event().wait()
            finally:
                await told.wait()  # a clean-up that takes long: the report names this wait
        finally:
            common.log.removeHandler(heard)

    with caplog.at_level(logging.WARNING, logger=common.log.name):
        common.run_until_signal(main)
    assert len(reported) == 1
    assert "still stopping 0 s after SIGINT; waiting for 1 task: " in reported[0]
    assert "test_stopping.py:" in reported[0]


def test_a_quick_stop_reports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "STOP_REPORT_S", 0.0)
    reported: list[str] = []

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reported.append(record.getMessage())

    async def main() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.Event().wait()

    heard = Heard(logging.WARNING)
    common.log.addHandler(heard)
    try:
        common.run_until_signal(main)
    finally:
        common.log.removeHandler(heard)
    assert reported == []
