"""Fan-out of committed alert changes to live subscribers (console streams, metrics).

The store's listener only queues alert ids, so a commit never waits for slow readers. One task reads
the changed alerts -- most urgent first, a page per query -- and hands each to every subscriber, so in a
flood of technical alarms a fall still reaches the console at once. A subscriber whose queue is full is
told to resynchronise instead of holding up the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from alarm_centre.model import AlertChange
from alarm_centre.store.base import AlertStore

log = logging.getLogger(__name__)

RESYNC: dict[str, Any] = {"resync": True}
#: Changed alerts read per query.
PAGE = 200


class AlertFeed:
    def __init__(self, store: AlertStore, *, subscriber_queue: int = 1000) -> None:
        self._store = store
        self._pending: asyncio.Queue[list[tuple[int, str]]] = asyncio.Queue()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._size = subscriber_queue
        store.add_listener(self._on_changes)
        self.published = 0

    def _on_changes(self, changes: Sequence[AlertChange]) -> None:
        self._pending.put_nowait([(c.priority, c.alert_id) for c in changes])

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def run(self) -> None:
        while True:
            changes = await self._pending.get()
            while not self._pending.empty() and len(changes) < 20_000:
                changes.extend(self._pending.get_nowait())
            if not self._subscribers:
                continue
            # Most urgent first; each alert once, at its most urgent priority.
            ids = list(dict.fromkeys(alert_id for _, alert_id in sorted(changes, key=lambda c: c[0])))
            for start in range(0, len(ids), PAGE):
                if not self._subscribers:
                    break
                try:
                    alerts = await self._store.get_alerts(ids[start : start + PAGE])
                except Exception as exc:
                    log.warning("feed could not read %d changed alerts: %s", len(ids[start:]), exc)
                    continue
                for alert in alerts:
                    self._publish({"alert": alert.to_json()})
                await asyncio.sleep(0)  # let acks and requests through between pages

    def _publish(self, message: dict[str, Any]) -> None:
        self.published += 1
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        queue.get_nowait()
                queue.put_nowait(RESYNC)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
