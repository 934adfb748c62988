"""The one home of waiting and logging through a lasting fault (``alarm_centre/faults.py``), on an
injected clock: waits grow and stay under their ceiling, a fault is a line when it starts, a summary at
most once a second, and a line when it ends -- also when it flickers -- and nothing else spells them."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import pytest
from clock import SteppedClock

from alarm_centre.faults import Backoff, FaultLog, Retry, describe

ROOT = Path(__file__).resolve().parent.parent
LOGGER = "test.faults"


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def fault(caplog: pytest.LogCaptureFixture) -> tuple[FaultLog, SteppedClock]:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = SteppedClock(1000.0)
    return FaultLog(
        logging.getLogger(LOGGER), "store cannot commit events", noun="events", clock=clock
    ), clock


# -- Backoff -----------------------------------------------------------------------------------------
def test_backoff_doubles_up_to_its_ceiling_and_starts_short_again() -> None:
    backoff = Backoff(0.1, 1.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_backoff_jitter_never_waits_past_the_ceiling() -> None:
    rng = random.Random(17)
    backoff = Backoff(0.1, 1.0, rng=rng.uniform)
    waits = [backoff.next_delay() for _ in range(500)]
    assert max(waits) <= 1.0 and min(waits[10:]) >= 0.5  # jittered in [0.5, 1] x the nominal wait
    assert len({round(w, 6) for w in waits[10:]}) > 100  # nodes do not retry in step


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"), [(0, 1, 0.5), (2, 1, 0.5), (-1, 1, 0.5), (1, 2, 1.0)]
)
def test_backoff_refuses_nonsense(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, jitter=jitter)


# -- FaultLog ----------------------------------------------------------------------------------------
def test_a_lasting_fault_is_a_start_a_summary_a_second_and_an_end(
    fault: tuple[FaultLog, SteppedClock], caplog: pytest.LogCaptureFixture
) -> None:
    log, clock = fault
    assert log.failed(OSError("database or disk is full"), 50)  # the start
    for _ in range(80):  # 80 failed batches in 5 s: 16 a second
        clock.advance(0.0625)
        assert not log.failed(OSError("database or disk is full"), 50)
    assert (
        log.active
        and log.problem() == "store cannot commit events for 5.0 s: OSError: database or disk is full"
    )
    clock.advance(0.5)
    assert log.recovered()
    assert not log.active and log.problem() is None
    said = lines(caplog)
    assert len(said) == 1 + 5 + 1  # at most one line a second
    assert said[0] == (
        logging.ERROR,
        "store cannot commit events: OSError: database or disk is full (50 events); retrying",
        False,
    )
    assert (
        "for 1.0 s: 16 failed tries, 800 events since the last line, 17 failed tries, 850 events in all"
        in said[1][1]
    )
    assert said[-1][0] == logging.INFO
    assert "recovered after 5.5 s (81 failed tries, 4050 events; last problem: OSError" in said[-1][1]


def test_the_traceback_is_logged_once_when_the_fault_starts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = SteppedClock(0.0)
    log = FaultLog(logging.getLogger(LOGGER), "escalation tick failed", traceback=True, clock=clock)
    for _ in range(30):
        try:
            raise RuntimeError("store gone")
        except RuntimeError as exc:
            log.failed(exc)
        clock.advance(0.1)
    assert [traced for _, _, traced in lines(caplog)] == [True, False, False]


def test_a_flickering_fault_stays_one_fault(
    fault: tuple[FaultLog, SteppedClock], caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk where some batches still fit: failure, success, failure ... is not a line each."""
    log, clock = fault
    for _ in range(40):  # 2 s of a batch failing, the next fitting, every 50 ms
        log.failed("database or disk is full", 10)
        clock.advance(0.025)
        log.recovered()
        clock.advance(0.025)
    said = lines(caplog)
    assert len(said) <= 3, said  # the start, and at most a line a second after it
    assert said[0][1].startswith("store cannot commit events: database or disk is full")
    clock.advance(1.0)
    log.recovered()  # the short fault's end, told once a second has passed since the last line
    assert "recovered" in lines(caplog)[-1][1]
    assert len(lines(caplog)) <= 4


def test_a_new_fault_after_a_quiet_spell_is_a_new_start(
    fault: tuple[FaultLog, SteppedClock], caplog: pytest.LogCaptureFixture
) -> None:
    log, clock = fault
    log.failed("broker gone")
    clock.advance(2)
    log.recovered()
    clock.advance(10)
    assert log.failed("broker gone again")
    assert log.faults == 2
    assert [level for level, _, _ in lines(caplog)] == [logging.ERROR, logging.INFO, logging.ERROR]


def test_recovering_without_a_fault_says_nothing(
    fault: tuple[FaultLog, SteppedClock], caplog: pytest.LogCaptureFixture
) -> None:
    log, _ = fault
    for _ in range(10):
        assert not log.recovered()
    assert lines(caplog) == []


def test_a_problem_reads_as_one_phrase() -> None:
    assert describe(OSError("disk full")) == "OSError: disk full"
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe("no answer") == "no answer"


# -- Retry -------------------------------------------------------------------------------------------
def test_a_retry_backs_off_while_rounds_fail_and_starts_short_after_one_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = SteppedClock(0.0)
    retry = Retry(logging.getLogger(LOGGER), "outbox failed", first_s=0.25, max_s=5.0, clock=clock)
    waits = []
    for _ in range(8):
        wait = retry.failed(RuntimeError("store gone"))
        waits.append(wait)
        clock.advance(wait)
    assert waits[-1] <= 5.0 and sum(waits) > 10  # a failing round costs nothing like a spin
    assert sum(waits[:3]) < 1.75
    retry.succeeded()
    assert retry.failed(RuntimeError("again")) <= 0.25
    said = lines(caplog)
    assert said[0][2] and "outbox failed: RuntimeError: store gone; retrying" in said[0][1]
    assert any("recovered" in text for _, text, _ in said)


# -- one home ----------------------------------------------------------------------------------------
def test_backoff_and_fault_logging_have_one_home() -> None:
    """No other module of the product defines a backoff or a fault log of its own."""
    found = []
    for package in ("devices", "alarm_centre", "skills", "bridge"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() == "alarm_centre/faults.py":
                continue
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    word in node.name for word in ("Backoff", "FaultLog", "LogLimiter")
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.name}")
    # the listeners' refusal limiter (bridge/transports/guard.py) counts hostile input, not a fault
    assert found == ["bridge/transports/guard.py:LogLimiter"], found
