"""Heartbeat supervision without a timer per unit.

Every unit row carries ``heartbeat_due_at`` (indexed): the registry's event hook moves it forward to
``received + interval + grace`` whenever the unit is heard from. A single loop asks the index for rows
whose deadline has passed -- a range scan that costs nothing when no unit is late -- and submits one
``no_heartbeat`` event per late unit through the intake (``source="system"``, the only source the store
accepts that type from). The event id is derived from the missed deadline, so a crash and a re-run
collapse into one alert; the hook clears the deadline in the same transaction, so it is raised ONCE.
The core resolves the alert when a heartbeat arrives, and the hook then arms a new deadline.
Sweeps also close commissioning visits whose test mode has timed out (:class:`CommissioningTimeouts`
does that alone when heartbeat supervision is off).

A sweep that fails is counted in ``telecare_registry_sweep_failures_total`` (by ``sweep``:
``heartbeats``, ``commissioning_timeouts``), logged as a fault (with its traceback when it starts, a
summary at most every 10 s while it lasts, a line when it ends: :class:`alarm_centre.faults.FaultLog`)
and tried again after a wait that grows while it lasts: a loop that keeps people safe never fails
silently, never stops, and does not spin on a store that cannot write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from alarm_centre.alerts.intake import Intake
from alarm_centre.faults import (
    ECHO_SUMMARY_EVERY_S,
    LOOP_RETRY_FIRST_S,
    LOOP_RETRY_MAX_S,
    Backoff,
    FaultLog,
    Retry,
)
from alarm_centre.registry.service import Registry
from devices.events import DeviceEvent
from devices.vocabulary import EventType

log = logging.getLogger(__name__)


#: The sweeps whose failures are counted.
SWEEPS = ("heartbeats", "commissioning_timeouts")


class SweepFailures:
    """Failed sweeps, by sweep, for ``/metrics`` (``metrics_registry`` None: counted, not exported)."""

    def __init__(self, metrics_registry: CollectorRegistry | None = None) -> None:
        #: The visit sweep's fault in the log (it runs inside every heartbeat sweep, and alone).
        self.visits_fault = FaultLog(
            log, "closing timed-out commissioning visits failed", traceback=True, every_s=ECHO_SUMMARY_EVERY_S
        )
        self.counter = Counter(
            "telecare_registry_sweep_failures_total",
            "Registry sweeps that failed (logged with the traceback; tried again on the next pass)",
            ["sweep"],
            registry=metrics_registry,
        )
        for sweep in SWEEPS:  # exported at 0 from the start, so an alert rule sees the first failure
            self.counter.labels(sweep)
        #: The same counts, for tests and benches that run without ``/metrics``.
        self.counts: dict[str, int] = {}

    def count(self, sweep: str) -> None:
        self.counter.labels(sweep).inc()
        self.counts[sweep] = self.counts.get(sweep, 0) + 1


async def close_timed_out_visits(registry: Registry, failures: SweepFailures) -> None:
    """Close commissioning visits whose test mode has timed out; a failure is logged, counted, survived."""
    try:
        await registry.expire_visits()
    except Exception as exc:
        failures.count("commissioning_timeouts")
        failures.visits_fault.failed(exc)
    else:
        failures.visits_fault.recovered()


@dataclass
class SweepStats:
    sweeps: int = 0
    raised: int = 0
    last_sweep_s: float = 0.0
    max_sweep_s: float = 0.0
    total_sweep_s: float = 0.0


class HeartbeatSupervisor:
    """Finds late units with one indexed query per sweep and raises ``no_heartbeat`` for each, once."""

    def __init__(
        self,
        registry: Registry,
        intake: Intake,
        *,
        check_every_s: float = 5.0,
        batch: int = 1000,
        clock: Callable[[], float] | None = None,
        failures: SweepFailures | None = None,
    ) -> None:
        self._registry = registry
        self.failures = failures or SweepFailures()
        self._intake = intake
        self._every = check_every_s
        self._batch = batch
        self._clock = clock or registry.clock
        self.stats = SweepStats()

    async def sweep(self) -> int:
        """One pass: raise for every unit past its deadline now; returns how many were raised."""
        started = time.perf_counter()
        raised = 0
        while True:
            now = self._clock()
            late = await self._registry.due_heartbeats(now, self._batch)
            if not late:
                break
            received = datetime.fromtimestamp(now, UTC)
            events = [
                DeviceEvent(
                    device_id=row["id"],
                    event_id=f"no_heartbeat-{round(float(row['heartbeat_due_at']) * 1000)}",
                    type=EventType.NO_HEARTBEAT,
                    received_at=received,
                    source="system",
                    data={"due_at": float(row["heartbeat_due_at"]), "last_seen_at": row["last_seen_at"]},
                )
                for row in late
            ]
            results = await asyncio.gather(*(self._intake.submit(e) for e in events))
            raised += sum(1 for r in results if r.result == "accepted")
            for event, result in zip(events, results, strict=True):
                if result.result == "rejected":
                    log.error("no_heartbeat for %s was refused: %s", event.device_id, result.error)
            if len(late) < self._batch or not any(r.result == "accepted" for r in results):
                break
        await close_timed_out_visits(self._registry, self.failures)
        spent = time.perf_counter() - started
        self.stats.sweeps += 1
        self.stats.raised += raised
        self.stats.last_sweep_s = spent
        self.stats.max_sweep_s = max(self.stats.max_sweep_s, spent)
        self.stats.total_sweep_s += spent
        if raised:
            log.warning("no heartbeat from %d unit(s)", raised)
        return raised

    async def run(self) -> None:
        """Sweep every ``check_every_s`` until cancelled; a failing sweep is logged and retried after
        ``check_every_s`` or the retry's backoff, whichever is longer."""
        retry = Retry(log, "heartbeat sweep failed")
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures.count("heartbeats")
                await asyncio.sleep(max(self._every, retry.failed(exc)))
                continue
            retry.succeeded()
            await asyncio.sleep(self._every)


class CommissioningTimeouts:
    """Closes timed-out commissioning visits every ``check_every_s`` when heartbeat supervision is off."""

    def __init__(
        self, registry: Registry, *, check_every_s: float = 5.0, failures: SweepFailures | None = None
    ) -> None:
        self._registry = registry
        self._every = check_every_s
        self.failures = failures or SweepFailures()

    async def run(self) -> None:
        """Sweep until cancelled; a failing sweep is logged, counted and retried (backing off)."""
        backoff = Backoff(LOOP_RETRY_FIRST_S, LOOP_RETRY_MAX_S)
        while True:
            await close_timed_out_visits(self._registry, self.failures)
            if self.failures.visits_fault.active:
                await asyncio.sleep(max(self._every, backoff.next_delay()))
            else:
                backoff.reset()
                await asyncio.sleep(self._every)
