"""Faults that last a while (a broker down, a full disk, a database restarting): how the bridge waits
between tries and what it says in the log. The one home for both, used by the intake, the transports
and every background loop.

- :class:`Backoff`: waits that start short, double, and stop at a low ceiling, each jittered so that
  nodes and loops do not retry in step.
- :class:`FaultLog`: one fault, three kinds of line. One when it starts (with the traceback, once), a
  summary with counts at most every ``every_s`` while it lasts, one when it ends (how long, how many).
  A lasting fault costs about one line a second instead of one per failed try (the issue-17 runs
  logged 830 to 1,400 lines a second during a store outage).
- :class:`Retry`: the two together for a loop: ``delay = retry.failed(exc)`` after a failed round,
  ``retry.succeeded()`` after a good one.

Nothing here sleeps or reads the time by itself except through the clock it is given, so tests drive
it with an injected clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

#: A lasting fault's summary line comes at most this often (seconds).
SUMMARY_EVERY_S = 1.0
#: The same for a fault that follows from one already summarised every second -- a loop that cannot
#: reach the store the intake reports, acks the broker outage keeps from going out -- so an outage
#: reads as its cause once a second and its echoes now and then.
ECHO_SUMMARY_EVERY_S = 10.0
#: A background loop's first wait after a failed round, and the longest (seconds).
LOOP_RETRY_FIRST_S = 0.25
LOOP_RETRY_MAX_S = 5.0


class Backoff:
    """Jittered exponential waits: ``initial``, then doubling up to ``maximum``; :meth:`reset` after
    a success starts again from ``initial``.

    Each wait is the nominal one times a random factor in ``[1 - jitter, 1]``: never longer than
    ``maximum``, so a ceiling of 1 s means a retry within 1 s of the fault healing.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.5,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial} and {maximum}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.initial = initial
        self.maximum = maximum
        self._jitter = jitter
        self._rng = rng
        self._next = initial
        #: Waits handed out since the last reset.
        self.tries = 0

    def reset(self) -> None:
        """A success: the next wait is ``initial`` again."""
        self._next = self.initial
        self.tries = 0

    def next_delay(self) -> float:
        """The wait before the next try (seconds); each call doubles the next one, up to ``maximum``."""
        nominal = self._next
        self._next = min(self._next * 2, self.maximum)
        self.tries += 1
        return nominal * self._rng(1.0 - self._jitter, 1.0)


def describe(problem: BaseException | str) -> str:
    """A problem as one log-friendly phrase: ``OperationalError: database or disk is full``."""
    if isinstance(problem, BaseException):
        text = str(problem)
        return f"{type(problem).__name__}: {text}" if text else type(problem).__name__
    return problem


class FaultLog:
    """The log lines of one lasting fault, ``what`` phrased as what is wrong ("store cannot commit
    events", "escalation tick failed").

    :meth:`failed` on every failed try, :meth:`recovered` on every good one. It logs at ``level`` when
    the fault starts (with the traceback of the exception, when ``traceback`` is true), then at most one
    summary every ``every_s`` -- only when there were failures since the last line -- and at INFO when
    it ends. ``noun`` names what ``failed(..., n)`` counts ("events not acked"); without one only tries
    are counted.

    A fault that flickers (a full disk where some batches still fit) stays one fault in the log: a
    failure within ``every_s`` of the last line continues the fault instead of starting a new one, and
    the end of a fault shorter than ``every_s`` is logged only once ``every_s`` has passed since the
    last line (by the next call). So a FaultLog writes at most one line per ``every_s`` after its first.
    """

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        noun: str | None = None,
        level: int = logging.ERROR,
        every_s: float = SUMMARY_EVERY_S,
        traceback: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self.what = what
        self._noun = noun
        self._level = level
        self._every = every_s
        self._traceback = traceback
        self._clock = clock
        #: When the fault in progress started (clock seconds), or None while all is well.
        self.since: float | None = None
        #: When the last failure was reported, and what it was.
        self.last_failure_at: float | None = None
        self.last_problem: str | None = None
        #: Failed tries and things (``noun``) in the fault in progress (or the last one, once over).
        self.failures = 0
        self.count = 0
        #: Faults whose start was logged (one per outage, however many tries failed in it).
        self.faults = 0
        self._line_at: float | None = None
        self._unsaid_failures = 0
        self._unsaid = 0
        #: A short fault's end, not logged yet: (started, lasted).
        self._unsaid_end: tuple[float, float] | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def _tally(self, tries: int, things: int) -> str:
        said = f"{tries} failed {'try' if tries == 1 else 'tries'}"
        return f"{said}, {things} {self._noun}" if self._noun else said

    def _quiet_for(self, now: float) -> float:
        return float("inf") if self._line_at is None else now - self._line_at

    def _line(self, level: int, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        self._line_at = self._clock()
        self._log.log(level, message, *args, exc_info=exc_info)

    def failed(self, problem: BaseException | str, n: int = 1) -> bool:
        """A try failed (``n`` things not done); True when this failure's line starts a fault."""
        now = self._clock()
        said = describe(problem)
        self.last_failure_at = now
        self.last_problem = said
        if self.since is None:
            if self._unsaid_end is not None:  # a flicker: the short fault goes on, still counted
                self.since = self._unsaid_end[0]
                self._unsaid_end = None
            elif self._quiet_for(now) < self._every:  # back soon after its end: said in the summary
                self.since = now
                self.failures = self.count = 0
            else:
                self.since = now
                self.failures, self.count = 1, n
                self.faults += 1
                self._unsaid_failures = self._unsaid = 0
                exc_info = problem if self._traceback and isinstance(problem, BaseException) else None
                tally = f" ({n} {self._noun})" if self._noun else ""
                self._line(self._level, "%s: %s%s; retrying", self.what, said, tally, exc_info=exc_info)
                return True
        self.failures += 1
        self.count += n
        self._unsaid_failures += 1
        self._unsaid += n
        if self._quiet_for(now) >= self._every:
            self._line(
                self._level,
                "%s for %.1f s: %s since the last line, %s in all; last: %s",
                self.what,
                now - self.since,
                self._tally(self._unsaid_failures, self._unsaid),
                self._tally(self.failures, self.count),
                said,
            )
            self._unsaid_failures = self._unsaid = 0
        return False

    def recovered(self) -> bool:
        """A try worked; True when this ends a fault (its end is logged at INFO, now or -- for a fault
        shorter than ``every_s`` right after another line -- at a later call)."""
        now = self._clock()
        if self.since is None:
            if self._unsaid_end is not None and self._quiet_for(now) >= self._every:
                self._say_end(self._unsaid_end[1])
            return False
        lasted = now - self.since
        if lasted >= self._every or self._quiet_for(now) >= self._every:
            self._say_end(lasted)
        else:
            self._unsaid_end = (self.since, lasted)
        self.since = None
        return True

    def _say_end(self, lasted: float) -> None:
        self._unsaid_end = None
        self._line(
            logging.INFO,
            "%s: recovered after %.1f s (%s; last problem: %s)",
            self.what,
            lasted,
            self._tally(self.failures, self.count),
            self.last_problem,
        )

    def problem(self) -> str | None:
        """The fault in progress as one phrase for ``/healthz``, or None."""
        if self.since is None:
            return None
        return f"{self.what} for {self._clock() - self.since:.1f} s: {self.last_problem}"


class Retry:
    """A background loop's failures: logged through a :class:`FaultLog` (the traceback once, when the
    fault starts; a summary at most every :data:`ECHO_SUMMARY_EVERY_S`), waited out with a
    :class:`Backoff` (``first_s`` doubling to ``max_s``), so a loop that cannot do its work neither
    spins nor floods the log."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        first_s: float = LOOP_RETRY_FIRST_S,
        max_s: float = LOOP_RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = Backoff(first_s, max_s)
        self.fault = FaultLog(log, what, traceback=True, every_s=ECHO_SUMMARY_EVERY_S, clock=clock)

    def failed(self, exc: BaseException | str) -> float:
        """A round failed: log it (as the fault's start or in its summary); the seconds to wait."""
        self.fault.failed(exc)
        return self.backoff.next_delay()

    def succeeded(self) -> None:
        """A round worked: waits start short again, and a fault in progress is logged as over."""
        self.backoff.reset()
        self.fault.recovered()
