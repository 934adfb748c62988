"""Fan-out of committed alert changes to live subscribers (console streams, metrics).

The store's listener only queues alert ids, so a commit never waits for slow readers. One task reads
the changed alerts -- most urgent first, a page per query -- and hands each to every subscriber, so in a
flood of technical alarms a fall still reaches the console at once. A subscriber whose queue is full is
told to resynchronise instead of holding up the rest.

A subscriber may name its user: when that user's access changes (signed out, disabled, new role), on
this node or another, the subscriber gets :data:`ACCESS_CHANGED` at once and re-checks its credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.base import AlertStore

log = logging.getLogger(__name__)

RESYNC: dict[str, Any] = {"resync": True}
#: Put in a subscriber's queue when its user's access changed: re-check the credentials now.
ACCESS_CHANGED: dict[str, Any] = {"access_changed": True}
#: Changed alerts read per query.
PAGE = 200


class AlertFeed:
    def __init__(self, store: AlertStore, *, subscriber_queue: int = 1000) -> None:
        self._store = store
        self._pending: asyncio.Queue[list[tuple[int, str]]] = asyncio.Queue()
        #: Each subscriber's queue and the user it streams for (None: nobody in particular).
        self._subscribers: dict[asyncio.Queue[dict[str, Any]], str | None] = {}
        self._size = subscriber_queue
        store.add_listener(self._on_changes)
        store.add_access_listener(self._on_access_changes)
        self.published = 0

    def _on_changes(self, changes: Sequence[AlertChange]) -> None:
        self._pending.put_nowait([(c.priority, c.alert_id) for c in changes])

    def _on_access_changes(self, names: Sequence[str]) -> None:
        changed = set(names)
        for queue, user in list(self._subscribers.items()):
            if user is not None and user in changed:
                _put(queue, ACCESS_CHANGED)

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
                    alerts = await self._store.alerts.get_alerts(ids[start : start + PAGE])
                except Exception as exc:
                    log.warning("feed could not read %d changed alerts: %s", len(ids[start:]), exc)
                    continue
                for alert in alerts:
                    self._publish({"alert": alert.to_json()})
                await asyncio.sleep(0)  # let acks and requests through between pages

    def _publish(self, message: dict[str, Any]) -> None:
        self.published += 1
        for queue in list(self._subscribers):
            _put(queue, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, *, user: str | None = None) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of changes for one reader; ``user`` names whose access changes it must hear of."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._size)
        self._subscribers[queue] = user
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)


def _put(queue: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
    """Queue ``message``; a full queue is emptied and told to resynchronise first (nothing is lost
    that a resync does not bring back, and an access change is never dropped)."""
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                queue.get_nowait()
        queue.put_nowait(RESYNC)
        if message is ACCESS_CHANGED:
            queue.put_nowait(message)
