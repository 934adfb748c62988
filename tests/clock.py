"""A wall clock a test moves by hand, so nothing waits on real time to see a deadline pass."""

from __future__ import annotations

import time


class SteppedClock:
    """Seconds since the epoch, starting at the real time and moving only when the test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
