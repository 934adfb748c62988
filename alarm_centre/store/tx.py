"""The store's small transaction interface, shared by the backends, the repositories and the features.

A backend supplies :class:`Tx`; work runs as ``work(tx, post)`` inside ``store.transaction(work)`` and
collects in :class:`PostCommit` what listeners hear of once the transaction has committed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.model import AlertChange
from devices import strict_json
from devices.events import DeviceEvent

Row = Mapping[str, Any]
T = TypeVar("T")


class Tx(Protocol):
    """One open transaction. SQL uses ``?`` placeholders; backends translate."""

    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetchone(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchall(self, sql: str, *args: Any) -> list[Row]: ...
    async def savepoint(self, name: str) -> None: ...
    async def release(self, name: str) -> None: ...
    async def rollback_to(self, name: str) -> None: ...


class PostCommit:
    """What a transaction changed, delivered to listeners once it has committed."""

    def __init__(self) -> None:
        self.changes: list[AlertChange] = []
        self.outbox = False
        #: Users whose access changed (signed out, disabled, new role, password or token).
        self.users: set[str] = set()


#: The work of one write transaction.
Work = Callable[[Tx, PostCommit], Awaitable[T]]
#: Run in the ingest transaction after a new alert row is inserted (escalation snapshot, flood grouping).
RaiseHook = Callable[[Tx, PostCommit, Row, DeviceEvent], Awaitable[None]]
#: Run in the ingest transaction after each newly stored event, with its unit and the alert it joined.
EventHook = Callable[[Tx, PostCommit, DeviceEvent, "Row | None", "int | None"], Awaitable[None]]

#: Run in the resolving transaction after an alert is resolved: a feature stops its own side effects.
ResolveHook = Callable[[Tx, PostCommit, Row, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Raised:
    """A new alert row and the event that raised it."""

    alert: Row
    event: DeviceEvent


@dataclass(frozen=True, slots=True)
class Stored:
    """A newly stored event, its unit (registered and active, else None) and the alert it belongs to."""

    event: DeviceEvent
    device: Row | None
    alert_id: int | None


#: A raise hook's batch form: called with a batch's new alerts at once by PostgreSQL's set-based ingest,
#: it must leave exactly what its :data:`RaiseHook` leaves called on each in turn, in a number of
#: statements that does not grow with the batch.
RaiseBatchHook = Callable[[Tx, PostCommit, Sequence[Raised]], Awaitable[None]]
#: An event hook's batch form, the same way (:data:`EventHook`).
EventBatchHook = Callable[[Tx, PostCommit, Sequence[Stored]], Awaitable[None]]


H = TypeVar("H")
B = TypeVar("B")


class OrderedHooks(Generic[H]):
    """Hooks run in a declared order (``alarm_centre.host.HookOrder``), lowest first; hooks of equal order
    in the order they were added. Adding the same hook twice is a no-op."""

    def __init__(self) -> None:
        self._added: list[tuple[int, H]] = []
        #: The hooks, in the order they run (what a transaction iterates).
        self.hooks: tuple[H, ...] = ()

    def add(self, hook: H, order: int) -> None:
        if hook not in self.hooks:
            self._added.append((order, hook))
            self.hooks = tuple(h for _, h in sorted(self._added, key=lambda entry: entry[0]))


class BatchableHooks(OrderedHooks[H], Generic[H, B]):
    """:class:`OrderedHooks` whose hooks may each come with a batch form (:data:`RaiseBatchHook`,
    :data:`EventBatchHook`), used where a whole batch is handled at once."""

    def __init__(self) -> None:
        super().__init__()
        self._batch: dict[H, B] = {}

    def add(self, hook: H, order: int, batch: B | None = None) -> None:
        super().add(hook, order)
        if batch is not None:
            self._batch.setdefault(hook, batch)

    @property
    def pairs(self) -> tuple[tuple[H, B | None], ...]:
        """Each hook with its batch form (None: call the hook once per item), in the order they run."""
        return tuple((h, self._batch.get(h)) for h in self.hooks)


class Database(Protocol):
    """What a repository needs of the store it belongs to: write transactions and reads.

    Repositories take this (and the repositories they use) rather than the whole ``AlertStore``, so the
    store composes them and nothing imports back up.
    """

    async def transaction(self, work: Work[T]) -> T: ...
    def read(self) -> AbstractAsyncContextManager[Tx]: ...
    def skip_locked(self) -> str: ...


async def log_action(  # an audit record: who, when, from where
    tx: Tx,
    post: PostCommit,
    alert: Row,
    action: AuditAction,
    actor: str,
    source: str,
    detail: dict[str, Any],
    now: float,
    *,
    state: str | None = None,
) -> None:
    """Write one timeline entry of ``alert`` and tell listeners of the change after the commit."""
    await tx.execute(
        "INSERT INTO alert_log (alert_id, at, action, actor, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
        alert["id"],
        now,
        action.value,
        actor,
        str(source),
        dumps(detail),
    )
    change = AlertChange(str(alert["id"]), action, int(alert["priority"]), state or alert["state"])
    post.changes.append(change)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One timeline entry, as :func:`log_action` takes it: for writing many in one statement."""

    alert: Row
    action: AuditAction
    actor: str
    source: str
    detail: dict[str, Any]
    at: float
    state: str | None = None


class NotFound(LookupError):
    """No such alert (or user, or device)."""


class Conflict(Exception):
    """The alert is held by someone else, or the request clashes with existing state."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class RetryLater(RuntimeError):
    """An event that cannot be stored just now but can be in a moment (another node holds its unit)."""


class InvalidRequest(ValueError):
    """A request the store refuses on its content (an unknown outcome code, say)."""


class EventFailed(Exception):
    """One event of a batch failed while it was tried whole (the batch is then stored event by event)."""


def lost_unique_race(exc: BaseException) -> bool:
    """Whether ``exc`` is a unique index refusing a row another transaction committed first.

    The check before a write (``SELECT ... WHERE account = ?``) cannot see a row a concurrent
    transaction has not committed yet; the index then refuses the insert. Running the work once more
    lets its own check see that row and name the clash (a 409 or 422, not a 500).
    """
    name = type(exc).__name__
    return name == "UniqueViolationError" or (name == "IntegrityError" and "UNIQUE" in str(exc))


def now() -> float:
    """The store's clock: seconds since the epoch."""
    return time.time()


def dumps(value: Any) -> str:
    """A JSON column value: strict JSON (never ``NaN``), anything unknown written as its ``str``."""
    return strict_json.column_text(value)
