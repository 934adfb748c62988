"""Test-only intake for the serial and GSM transport tests: a dict keyed by (device_id, event_id)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from alarm_centre.alerts.intake import IngestResult, StoreUnavailable
from devices.events import DeviceEvent
from devices.vocabulary import NO_ALERT

T = TypeVar("T")


class MemoryIntake:
    """Stores events in memory; answers accepted/duplicate with a stable alert id.

    ``unavailable = True`` makes ``submit`` raise StoreUnavailable (fault injection);
    ``reject_types`` makes it answer ``rejected`` for those types.
    """

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], DeviceEvent] = {}
        self.alert_ids: dict[tuple[str, str], str | None] = {}
        self.submissions: list[DeviceEvent] = []
        self.unavailable = False
        self.reject_types: set[str] = set()
        self.stored = asyncio.Condition()

    async def submit(self, event: DeviceEvent) -> IngestResult:
        self.submissions.append(event)
        await asyncio.sleep(0)  # a real store yields to the loop while it commits
        if self.unavailable:
            raise StoreUnavailable("fault injected: store unavailable")
        if event.type in self.reject_types:  # bridge-only types are the codecs' to refuse, as for real
            return IngestResult("rejected", error=f"type {event.type} refused")
        key = (event.device_id, event.event_id)
        async with self.stored:
            if key in self.events:
                return IngestResult("duplicate", self.alert_ids[key])
            self.events[key] = event
            alert = None if event.type in NO_ALERT else f"A{len(self.events):05d}"
            self.alert_ids[key] = alert
            self.stored.notify_all()
        return IngestResult("accepted", alert)

    async def wait_for(self, count: int) -> None:
        """Wait until ``count`` distinct events are stored (wrap in asyncio.timeout)."""
        async with self.stored:
            await self.stored.wait_for(lambda: len(self.events) >= count)


async def eventually(check: Callable[[], bool], *, timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(step)


async def within(awaitable: Awaitable[T], timeout: float = 10.0) -> T:
    async with asyncio.timeout(timeout):
        return await awaitable
