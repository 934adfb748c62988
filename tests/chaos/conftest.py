"""The chaos suite's fixtures, and its table at the end of the run (every experiment's measurements,
whether it passed or not, so CI logs show the numbers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from harness import IN_CI

from simulators.chaos_rig import Lab, Outcome, Sizes, table
from simulators.outages import FaultUnavailable

#: CI sizes: a few hundred units, seconds of fault (bench/chaos.py runs the longer ones).
CI_SIZES = Sizes(
    units=200, rate=100.0, retry_s=1.0, warm_s=1.5, fault_s=3.0, idle_s=4.0, pause_s=8.0, keepalive=5
)

MEASURED: list[Outcome] = []


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path, CI_SIZES)


@pytest.fixture
def experiment() -> Callable[[Awaitable[Outcome]], Awaitable[Outcome]]:
    """Run an experiment, keep its outcome for the table; a fault this machine cannot stage (no root
    to mount, no binary) skips on a developer's machine and fails in CI."""

    async def run(running: Awaitable[Outcome]) -> Outcome:
        try:
            outcome = await running
        except FaultUnavailable as exc:
            if IN_CI:
                pytest.fail(
                    f"cannot stage the fault: {exc}; CI must be able to (root, mosquitto, PostgreSQL)"
                )
            pytest.skip(f"cannot stage the fault here: {exc}")
        MEASURED.append(outcome)
        print(outcome.as_dict())
        return outcome

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("chaos experiments (issue 17)")
        terminalreporter.write_line(table(MEASURED))
