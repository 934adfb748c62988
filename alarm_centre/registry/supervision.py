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

A sweep that fails is logged with its traceback, counted in ``telecare_registry_sweep_failures_total``
(by ``sweep``: ``heartbeats``, ``commissioning_timeouts``) and tried again on the next pass: a loop that
keeps people safe never fails silently, and never stops.
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
from alarm_centre.registry.service import Registry
from devices.events import DeviceEvent
from devices.vocabulary import EventType

log = logging.getLogger(__name__)


#: The sweeps whose failures are counted.
SWEEPS = ("heartbeats", "commissioning_timeouts")


class SweepFailures:
    """Failed sweeps, by sweep, for ``/metrics`` (``metrics_registry`` None: counted, not exported)."""

    def __init__(self, metrics_registry: CollectorRegistry | None = None) -> None:
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
    except Exception:
        failures.count("commissioning_timeouts")
        log.exception("closing timed-out commissioning visits failed; trying again on the next sweep")


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
        """Sweep every ``check_every_s`` until cancelled; a failing sweep is logged and retried."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures.count("heartbeats")
                log.exception("heartbeat sweep failed; trying again in %g s", self._every)
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
        """Sweep until cancelled; a failing sweep is logged with its traceback, counted and retried."""
        while True:
            await close_timed_out_visits(self._registry, self.failures)
            await asyncio.sleep(self._every)
