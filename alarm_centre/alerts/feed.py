"""Fan-out of committed alert changes to live subscribers (console streams, metrics).

The store's listener only notes alert ids, so a commit never waits for slow readers. Two readers read
the changed alerts -- a page per query -- and hand each to every subscriber: one for calls for help
(priority 1), one for the rest, most urgent first. A fall committed while a page of a flood of
technical alarms is being read (tens of milliseconds on a busy node) is read by its own reader at
once, in a page of its own, not after that page nor with 199 others. An alert's priority is fixed
when it is raised (by its type), so the two readers never read the same alert, and each alert's
changes go out in the order they were read.

Most changes of a call for help need no read at all: the transaction that made them read the alert
as it commits it (:func:`alarm_centre.store.base.with_help_alerts`; other nodes get it with the
change notification), and it is pushed at once. One that the help reader holds (waiting, or in the
page being read) is read again instead, so nothing older goes out after it.

Each subscriber's queue is ordered the same way (most urgent first, then oldest first), so a slow
reader with thousands of changes waiting still gets a fall next. A subscriber whose queue is full is
told to resynchronise instead of holding up the rest.

A subscriber may name its user: when that user's access changes (signed out, disabled, new role), on
this node or another, the subscriber gets :data:`ACCESS_CHANGED` at once and re-checks its credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.base import AlertStore
from devices.vocabulary import Priority

log = logging.getLogger(__name__)

RESYNC: dict[str, Any] = {"resync": True}
#: Put in a subscriber's queue when its user's access changed: re-check the credentials now.
ACCESS_CHANGED: dict[str, Any] = {"access_changed": True}
#: Changed alerts read per query.
PAGE = 200
#: Where a message that is not an alert ranks in a subscriber's queue: before every alert.
_CONTROL_RANK = 0
#: Where an alert without a priority ranks: after every alert that has one.
_LAST_RANK = 99


class SubscriberQueue(asyncio.Queue[dict[str, Any]]):
    """A subscriber's messages, most urgent first: :data:`RESYNC` and :data:`ACCESS_CHANGED`, then
    alerts by priority; in arrival order within a rank. Otherwise an ordinary bounded queue."""

    def _init(self, maxsize: int) -> None:
        self._heap: list[tuple[int, int, dict[str, Any]]] = []
        self._order = itertools.count()

    def _put(self, item: dict[str, Any]) -> None:
        heapq.heappush(self._heap, (_rank(item), next(self._order), item))

    def _get(self) -> dict[str, Any]:
        return heapq.heappop(self._heap)[2]

    def qsize(self) -> int:
        return len(self._heap)

    def empty(self) -> bool:
        return not self._heap

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._heap)


def _rank(message: dict[str, Any]) -> int:
    alert = message.get("alert")
    if not isinstance(alert, dict):
        return _CONTROL_RANK
    priority = alert.get("priority")
    return priority if isinstance(priority, int) else _LAST_RANK


class _Changed:
    """Changed alerts not yet pushed, per priority, each in the order it changed, and a wake-up."""

    def __init__(self) -> None:
        self.waiting: dict[int, OrderedDict[str, None]] = {}
        self.arrived = asyncio.Event()
        #: The page being read: what its reader will push may be older than a change just committed.
        self.reading: frozenset[str] = frozenset()

    def add(self, priority: int, alert_id: str) -> None:
        self.waiting.setdefault(priority, OrderedDict())[alert_id] = None
        self.arrived.set()

    def holds(self, alert_id: str) -> bool:
        """Whether the alert waits to be read or is being read (its later changes must be read too,
        so they go out after what that read pushes)."""
        return alert_id in self.reading or any(alert_id in level for level in self.waiting.values())

    async def next_page(self) -> list[str]:
        """Up to :data:`PAGE` alert ids, most urgent first, once there are any."""
        while not self.waiting:
            self.arrived.clear()
            await self.arrived.wait()
        return _most_urgent(self.waiting, PAGE)


class AlertFeed:
    def __init__(self, store: AlertStore, *, subscriber_queue: int = 1000) -> None:
        self._store = store
        #: Calls for help (priority 1) changed, and everything else: each lane has a reader of its own.
        self._help = _Changed()
        self._rest = _Changed()
        #: Each subscriber's queue and the user it streams for (None: nobody in particular).
        self._subscribers: dict[asyncio.Queue[dict[str, Any]], str | None] = {}
        self._size = subscriber_queue
        store.add_listener(self._on_changes)
        store.add_access_listener(self._on_access_changes)
        self.published = 0

    def _on_changes(self, changes: Sequence[AlertChange]) -> None:
        if not self._subscribers:
            return  # nobody to tell; a console that connects later loads the queue first
        committed: dict[str, dict[str, Any]] = {}
        for change in changes:
            if change.priority != Priority.EMERGENCY:
                self._rest.add(change.priority, change.alert_id)
            elif change.alert is not None and not self._help.holds(change.alert_id):
                committed[change.alert_id] = change.alert
            else:
                committed.pop(change.alert_id, None)
                self._help.add(change.priority, change.alert_id)
        for alert in committed.values():  # a call for help as its transaction committed it: no read
            self._publish({"alert": alert})

    def _on_access_changes(self, names: Sequence[str]) -> None:
        changed = set(names)
        for queue, user in list(self._subscribers.items()):
            if user is not None and user in changed:
                _put(queue, ACCESS_CHANGED)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def run(self) -> None:
        """Read and push changed alerts until cancelled: calls for help and the rest side by side."""
        async with asyncio.TaskGroup() as readers:
            readers.create_task(self._read(self._help), name="alert-feed-help")
            readers.create_task(self._read(self._rest), name="alert-feed")

    async def _read(self, changed: _Changed) -> None:
        while True:
            ids = await changed.next_page()
            if not self._subscribers:
                continue
            changed.reading = frozenset(ids)
            try:
                alerts = await self._store.alerts.get_alerts(ids)
            except Exception as exc:
                log.warning("feed could not read %d changed alerts: %s", len(ids), exc)
                continue
            finally:
                changed.reading = frozenset()
            for alert in alerts:
                self._publish({"alert": alert.to_json()})
            await asyncio.sleep(0)  # let acks and requests (and new commits) through between pages

    def _publish(self, message: dict[str, Any]) -> None:
        self.published += 1
        for queue in list(self._subscribers):
            _put(queue, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, *, user: str | None = None) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of changes for one reader, most urgent first; ``user`` names whose access changes
        it must hear of."""
        queue = SubscriberQueue(self._size)
        self._subscribers[queue] = user
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)


def _most_urgent(waiting: dict[int, OrderedDict[str, None]], count: int) -> list[str]:
    """Take up to ``count`` alert ids out of ``waiting``, the most urgent priority first."""
    ids: list[str] = []
    for priority in sorted(waiting):
        level = waiting[priority]
        while level and len(ids) < count:
            ids.append(level.popitem(last=False)[0])
        if not level:
            del waiting[priority]
        if len(ids) >= count:
            break
    return ids


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
