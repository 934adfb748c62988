"""The store's core: transactions, what listeners hear after each commit, and the hooks features add to
the ingest transaction. Everything else lives in one repository per concern, composed here:

- ``store.intake`` (``ingest.py``): device events into alerts;
- ``store.alerts`` (``alerts.py``): the timeline, operator transitions, system resolutions, reading;
- ``store.outbox`` (``outbox.py``): side effects performed after the commit;
- ``store.users`` (``users.py``): API tokens, roles, access changes;
- ``store.devices`` (``devices.py``): registering units and residents, their online status.

Each backend (SQLite in ``sqlite.py``, PostgreSQL in ``postgres.py``) supplies the transaction
(``tx.py``: :class:`Tx`) and the ``_write`` / ``read`` context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Self

from alarm_centre.alerts.intake import BatchStore, IngestResult
from alarm_centre.alerts.lifecycle import IllegalTransition
from alarm_centre.alerts.model import Alert, AlertChange, TimelineEntry
from alarm_centre.faults import LOOP_RETRY_MAX_S, Backoff
from alarm_centre.store.alerts import Alerts, alert_from_row
from alarm_centre.store.devices import Devices
from alarm_centre.store.ingest import Ingest
from alarm_centre.store.ingest_sets import BatchStart, Link, Repeat
from alarm_centre.store.outbox import Outbox
from alarm_centre.store.raising import NewAlert
from alarm_centre.store.tx import (
    BatchableHooks,
    Conflict,
    EventBatchHook,
    EventFailed,
    EventHook,
    InvalidRequest,
    LogEntry,
    NotFound,
    OrderedHooks,
    PostCommit,
    RaiseBatchHook,
    RaiseHook,
    ResolveHook,
    Row,
    T,
    Tx,
    Work,
)
from alarm_centre.store.tx import now as _now
from alarm_centre.store.users import Users
from devices.events import DeviceEvent
from devices.vocabulary import Priority

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[AlertChange]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Lanes:
    """Where the intake stores its batches when not on the bridge's loop: calls for help, and the rest
    (None: on the store itself, on the bridge's loop)."""

    help: BatchStore | None = None
    others: BatchStore | None = None


#: Told the names of users whose access changed, after the commit (on every node).
AccessListener = Callable[[Sequence[str]], None]
#: How often a store without a notification channel (SQLite) looks for access changes that another
#: process (``telecare-bridge users disable``) committed. PostgreSQL delivers them by NOTIFY instead.
ACCESS_POLL_S = 0.25


class AlertStore:
    """The store's public interface; backends subclass it and provide transactions."""

    dialect = "sqlite"
    #: Whether transactions may run side by side (each on a connection of its own): the intake then
    #: stores calls for help alongside a batch of others instead of after it.
    concurrent_writers = False

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._access_listeners: list[AccessListener] = []
        self._outbox_wakers: list[Callable[[], None]] = []
        self.last_write_error: str | None = None
        self._raise_hooks: BatchableHooks[RaiseHook, RaiseBatchHook] = BatchableHooks()
        self._event_hooks: BatchableHooks[EventHook, EventBatchHook] = BatchableHooks()
        self._resolve_hooks: OrderedHooks[ResolveHook] = OrderedHooks()
        self.outbox = Outbox(self)
        self.alerts = Alerts(self, self.outbox, self._resolve_hooks)
        self.intake = Ingest(self, self.alerts, self.outbox)
        self.users = Users(self)
        self.devices = Devices(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # -- backend hooks ---------------------------------------------------------------------------
    def _write(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    def read(self) -> AbstractAsyncContextManager[Tx]:
        """A read-only view of committed state."""
        raise NotImplementedError

    def round_trip_counts(self) -> dict[str, int]:
        """Statements sent to a database server so far, by kind (``write``, ``read``); none for SQLite,
        which runs in-process."""
        return {}

    def skip_locked(self) -> str:
        """The clause that lets other nodes skip rows this claim locks (PostgreSQL); empty here."""
        return ""

    def lanes(self) -> AbstractAsyncContextManager[Lanes]:
        """Where the intake stores calls for help and the rest apart from the bridge's event loop while
        this is open (PostgreSQL: ``pg_lanes``); none here -- SQLite's statements take no turns."""
        return contextlib.nullcontext(Lanes())

    async def claim_unit(self, tx: Tx, device_id: str) -> None:
        """Called before an event of ``device_id`` is stored, in its transaction: a backend shared by
        several nodes makes the unit's events wait their turn here (or raises RetryLater); none here."""
        return None

    async def start_batch(self, tx: Tx, events: Sequence[DeviceEvent]) -> BatchStart | None:
        """Claim, record and read a batch's events set-based (:class:`BatchStart`), or ``None``: each
        event is then stored on its own. Here (SQLite, in-process) statements cost no round trip."""
        return None

    async def link_events(self, tx: Tx, links: Sequence[Link]) -> None:
        """Note on each ``(device_id, event_id)`` the alert it joined."""
        for device_id, event_id, alert_id in links:
            await tx.execute(
                "UPDATE events SET alert_id = ? WHERE device_id = ? AND event_id = ?",
                alert_id,
                device_id,
                event_id,
            )

    async def lock_open_alerts(self, tx: Tx, keys: Sequence[str]) -> dict[str, Row]:
        """The open alerts of ``keys`` (only a store whose :meth:`start_batch` answers is asked)."""
        raise NotImplementedError

    async def add_repeats(self, tx: Tx, repeats: Sequence[Repeat]) -> None:
        """Count and log repeats of open alerts (only a store whose :meth:`start_batch` answers is asked)."""
        raise NotImplementedError

    async def insert_alerts(self, tx: Tx, alerts: Sequence[NewAlert], now: float) -> dict[str, Row]:
        """Insert new alerts, each unless its key is open already; the rows inserted, by key (only a
        store whose :meth:`start_batch` answers is asked)."""
        raise NotImplementedError

    async def log_actions(self, tx: Tx, post: PostCommit, entries: Sequence[LogEntry]) -> None:
        """Write timeline entries, in order (only a store whose :meth:`start_batch` answers is asked)."""
        raise NotImplementedError

    async def resident_units(self, tx: Tx, resident_ids: Sequence[str]) -> dict[str, Row]:
        """Each resident's first active unit (only a store whose :meth:`start_batch` answers is asked)."""
        raise NotImplementedError

    # -- hooks in the ingest transaction ------------------------------------------------------
    def add_raise_hook(self, hook: RaiseHook, order: int, batch: RaiseBatchHook | None = None) -> None:
        """Run ``hook`` in the ingest transaction after each new alert row (escalation snapshot, flood
        grouping), lowest ``order`` first (:class:`OrderedHooks`). ``batch``, its batch form, is used
        when a batch's new alerts are written at once (PostgreSQL); without it ``hook`` runs per alert."""
        self._raise_hooks.add(hook, order, batch)

    def add_event_hook(self, hook: EventHook, order: int, batch: EventBatchHook | None = None) -> None:
        """Run ``hook`` in the ingest transaction after each newly stored event, with the alert it joined
        (``batch``: its batch form, as for :meth:`add_raise_hook`)."""
        self._event_hooks.add(hook, order, batch)

    def add_resolve_hook(self, hook: ResolveHook, order: int) -> None:
        """Run ``hook`` in the resolving transaction of every alert: a feature stops its side effects."""
        self._resolve_hooks.add(hook, order)

    @property
    def raise_hooks(self) -> tuple[RaiseHook, ...]:
        return self._raise_hooks.hooks

    @property
    def event_hooks(self) -> tuple[EventHook, ...]:
        return self._event_hooks.hooks

    @property
    def raise_hook_pairs(self) -> tuple[tuple[RaiseHook, RaiseBatchHook | None], ...]:
        return self._raise_hooks.pairs

    @property
    def event_hook_pairs(self) -> tuple[tuple[EventHook, EventBatchHook | None], ...]:
        return self._event_hooks.pairs

    # -- listeners -------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Called after each commit that changed alerts, with the changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_outbox_waker(self, waker: Callable[[], None]) -> None:
        """Called after each commit that added work to the outbox."""
        self._outbox_wakers.append(waker)

    def add_access_listener(self, listener: AccessListener) -> None:
        """Called after each commit (on this node or, through the store, another) that changed a
        user's access, with the user names."""
        self._access_listeners.append(listener)

    async def follow_access_changes(self) -> None:
        """Hand access changes committed by other processes to the access listeners, until cancelled.

        This base version reads the ``access_changes`` table every :data:`ACCESS_POLL_S` (one indexed
        query per node, not per stream); a store with a notification channel overrides it.
        """
        last: int | None = None  # changes up to here were made before we started following
        backoff = Backoff(ACCESS_POLL_S, LOOP_RETRY_MAX_S)
        while True:
            wait = ACCESS_POLL_S
            try:
                async with self.read() as tx:
                    if last is None:
                        row = await tx.fetchone("SELECT COALESCE(MAX(id), 0) AS last FROM access_changes")
                        last = int(row["last"]) if row else 0
                        rows = []
                    else:
                        rows = await tx.fetchall(
                            "SELECT id, user_name FROM access_changes WHERE id > ? ORDER BY id", last
                        )
            except Exception as exc:  # closing, briefly locked, or the store down: back off and retry
                log.debug("could not read access changes: %s", exc)
                rows = []
                wait = backoff.next_delay()
            else:
                backoff.reset()
            if rows:
                last = int(rows[-1]["id"])
                self._tell_access({str(r["user_name"]) for r in rows})
            await asyncio.sleep(wait)

    def _tell_access(self, names: set[str]) -> None:
        for listener in list(self._access_listeners):
            try:
                listener(sorted(names))
            except Exception:
                log.exception("access listener failed")

    async def _after_commit(self, post: PostCommit) -> None:
        if post.users:
            self._tell_access(post.users)
        if post.outbox:
            for wake in self._outbox_wakers:
                wake()
        if post.changes:
            for listener in list(self._listeners):
                try:
                    result = listener(post.changes)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("alert listener failed")

    # -- transactions ----------------------------------------------------------------------------
    async def transaction(self, work: Work[T]) -> T:
        """Run ``work(tx, post)`` in one write transaction; listeners hear of ``post`` after the commit.

        Feature modules (registry, escalation, voice, ...) keep their own SQL and call this.
        """
        post = PostCommit()
        try:
            async with self._write() as tx:
                result = await work(tx, post)
                await self._before_commit(tx, post)
        except (NotFound, Conflict, InvalidRequest, IllegalTransition, EventFailed):
            raise
        except Exception as exc:
            self.last_write_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_write_error = None
        await self._after_commit(post)
        return result

    async def _before_commit(self, tx: Tx, post: PostCommit) -> None:
        """The last statements of every write transaction: the calls for help it changed, read as they
        will be committed (see :func:`with_help_alerts`)."""
        await with_help_alerts(tx, post)

    async def probe_write(self) -> None:
        """Write and commit one row: raises when the store does not accept writes."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "INSERT INTO health_probe (id, at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                _now(),
            )

        await self.transaction(work)

    # -- the alert path, as callers know it (the work is in the repositories) --------------------
    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        """Store a batch of device events in one transaction; one result per event, in order."""
        return await self.intake.store(events)

    async def acknowledge(self, alert_id: str, *, actor: str, source: str) -> Alert:
        """Claim an alert. Idempotent for the holder; Conflict if someone else holds it."""
        return await self.alerts.acknowledge(alert_id, actor=actor, source=source)

    async def resolve(
        self, alert_id: str, *, outcome: str, note: str | None, actor: str, source: str
    ) -> Alert:
        """Close an acknowledged alert with an outcome code; only its holder may resolve it."""
        return await self.alerts.resolve(alert_id, outcome=outcome, note=note, actor=actor, source=source)

    async def get_alert(self, alert_id: str) -> tuple[Alert, list[TimelineEntry]]:
        """One alert and its timeline, oldest entry first."""
        return await self.alerts.get_alert(alert_id)

    async def event_count(self) -> int:
        """How many device events are stored."""
        return await self.alerts.event_count()


async def with_help_alerts(tx: Tx, post: PostCommit) -> None:
    """Attach to each change of a call for help (priority 1) its alert as committed, read in one
    statement at the end of the transaction: every node's live feed then pushes a fall without reading
    it again (tens of milliseconds of a busy loop's turns in a storm)."""
    ids = sorted({int(c.alert_id) for c in post.changes if c.priority == Priority.EMERGENCY})
    if not ids:
        return
    marks = ", ".join("?" for _ in ids)
    rows = await tx.fetchall(f"SELECT * FROM alerts WHERE id IN ({marks})", *ids)
    alerts = {str(r["id"]): alert_from_row(r).to_json() for r in rows}
    post.changes = [
        dataclasses.replace(c, alert=alerts.get(c.alert_id)) if c.priority == Priority.EMERGENCY else c
        for c in post.changes
    ]
