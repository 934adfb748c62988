"""The scale-out store: PostgreSQL on asyncpg, the same :class:`AlertStore` logic as SQLite.

- ``?`` placeholders become ``$1..$n`` (quoted strings and identifiers are left alone).
- Writes run in a pooled connection's transaction; reads use the pool in autocommit.
- Migrations take a session advisory lock, so several nodes starting at once migrate once.
- ``skip_locked()`` makes claims (outbox, escalation steps) ``FOR UPDATE SKIP LOCKED``: any node
  can take the work, none takes it twice.
- Every write transaction that changed alerts or a user's access sends ``pg_notify`` *inside* the
  transaction, so the notification is delivered exactly when (and only if) the commit happens. Each
  node LISTENs and hands other nodes' changes to its own listeners (console streams, metrics, access
  checks) the way local commits do; its own notifications are recognised by an origin token and
  skipped, so nothing is delivered twice.
- Each event takes a transaction-level advisory lock on its device first, without waiting: if another
  node is storing an event of the same unit right now, the event is set aside and stored after this
  batch commits, in a transaction that waits for that lock (taken in device order, so two nodes never
  deadlock), where it becomes a duplicate or joins the open alert. One slow unit never stalls a batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

import asyncpg

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.intake import IngestResult
from alarm_centre.alerts.model import AlertChange
from alarm_centre.faults import ECHO_SUMMARY_EVERY_S, Backoff, FaultLog
from alarm_centre.store import pg_batch
from alarm_centre.store.base import AlertStore, Lanes
from alarm_centre.store.ingest_sets import BatchStart, Link, Repeat, open_keys_known_up_front
from alarm_centre.store.pg_lanes import StoreLane
from alarm_centre.store.raising import NewAlert
from alarm_centre.store.schema import JsonRepair, all_migrations, statements
from alarm_centre.store.tx import InvalidRequest, LogEntry, PostCommit, RetryLater, Row, Tx
from devices.cancellation import stop
from devices.events import DeviceEvent

log = logging.getLogger(__name__)
#: asyncpg's pool logs a warning with a traceback each time it fails to reconnect its idle connections
#: (every second or two while the database is down). The store's own fault lines say that once, with
#: counts (alarm_centre/faults.py); a pool error that matters still shows.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

CHANNEL = "telecare_alert_changes"
#: pg_notify payloads must stay under 8000 bytes.
NOTIFY_LIMIT = 7000
MIGRATION_LOCK = 0x7E1EC0DE
#: Errors that mean "another node was storing the same thing at the same moment": retry the event.
RETRYABLE = ("DeviceBusy", "UniqueViolationError", "DeadlockDetectedError", "SerializationError")
RETRY_ROUNDS = 3
#: Advisory-lock namespace (first key) for "a transaction is storing this device's event".
DEVICE_LOCK_SPACE = 60
_wait_for_device = contextvars.ContextVar("wait_for_device", default=False)
#: Longest wait between tries to re-open the LISTEN connection (seconds): short, so other nodes'
#: changes reach this node's consoles again soon after the database is back.
LISTEN_RETRY_MAX_S = 1.0


class _Lost:
    """Queued when a listening connection ends (each connection its own)."""


class DeviceBusy(RetryLater):
    """Another node's open transaction is storing an event of this device; retry after our commit."""


_translated: dict[str, str] = {}


def translate(sql: str) -> str:
    """``?`` placeholders to ``$n``, skipping quoted strings, quoted identifiers and comments."""
    cached = _translated.get(sql)
    if cached is not None:
        return cached
    out: list[str] = []
    n = 0
    i = 0
    length = len(sql)
    while i < length:
        ch = sql[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < length:
                if sql[end] == ch:
                    if end + 1 < length and sql[end + 1] == ch:  # doubled quote inside the literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
            continue
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = length if end < 0 else end
            out.append(sql[i:end])
            i = end
            continue
        if ch == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
        i += 1
    result = "".join(out)
    if len(_translated) < 4096:
        _translated[sql] = result
    return result


def _rowcount(status: str) -> int:
    """asyncpg answers ``UPDATE 3`` / ``INSERT 0 1``; the last number is the row count."""
    tail = status.rsplit(" ", 1)[-1] if status else ""
    return int(tail) if tail.isdigit() else 0


def _storable(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold U+0000 (SQLite can): refuse it as bad input, not a driver error (a 500).
    Arrays (the set-based statements of a batch) are checked element by element."""
    for value in args:
        values = value if isinstance(value, list) else (value,)
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise InvalidRequest("text may not contain the NUL character (U+0000)")
    return args


class RoundTrips:
    """Statements sent to PostgreSQL by one store (``BEGIN`` and ``COMMIT`` included): each waits for its
    answer, so this is what a batch costs in round trips (``telecare_store_round_trips_total``). Counted
    from the bridge's loop and the intake's lanes (threads of their own)."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def count(self, n: int = 1) -> None:
        with self._lock:
            self.total += n


class PgTx:
    """A :class:`Tx` on one asyncpg connection; each statement is one round trip, counted in ``trips``."""

    def __init__(self, conn: Any, trips: RoundTrips) -> None:
        self._conn = conn
        self._trips = trips

    async def execute(self, sql: str, *args: Any) -> int:
        self._trips.count()
        return _rowcount(await self._conn.execute(translate(sql), *_storable(args)))

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        self._trips.count()
        record = await self._conn.fetchrow(translate(sql), *_storable(args))
        return None if record is None else dict(record.items())

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        self._trips.count()
        return [dict(r.items()) for r in await self._conn.fetch(translate(sql), *_storable(args))]

    async def savepoint(self, name: str) -> None:
        self._trips.count()
        await self._conn.execute(f"SAVEPOINT {name}")

    async def release(self, name: str) -> None:
        self._trips.count()
        await self._conn.execute(f"RELEASE SAVEPOINT {name}")

    async def rollback_to(self, name: str) -> None:
        self._trips.count()
        await self._conn.execute(f"ROLLBACK TO SAVEPOINT {name}")


async def migrate(conn: Any) -> int:
    """Bring the schema up to date under an advisory lock; returns the version now in place."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        applied = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_version")}
        for version, step in all_migrations():
            if version in applied:
                continue
            async with conn.transaction():
                if isinstance(step, JsonRepair):
                    await _repair_json(conn, step)
                else:
                    for stmt in statements(step, "postgresql"):
                        await conn.execute(stmt)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            applied.add(version)
        return max(applied, default=0)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _repair_json(conn: Any, repair: JsonRepair) -> None:
    for table, column in repair.columns:
        rows = await conn.fetch(f"SELECT ctid, {column} FROM {table} WHERE {repair.where(column)}")
        fixes = repair.repaired((r[0], r[1]) for r in rows)
        if fixes:
            await conn.executemany(f"UPDATE {table} SET {column} = $1 WHERE ctid = $2", fixes)


def _encode_changes(
    origin: str, changes: Sequence[AlertChange], outbox: bool, users: Sequence[str] = ()
) -> list[str]:
    """Notification payloads (each under the pg_notify limit) for one transaction's changes."""
    payloads: list[str] = []
    chunk: list[list[Any]] = []
    #: Alerts of calls for help as committed, by id, sent with their changes (``"a"``; a node that
    #: does not know the key ignores it and reads the alert).
    alerts: dict[str, dict[str, Any]] = {}
    size = 0

    def message(last: bool) -> str:
        body: dict[str, Any] = {"o": origin, "c": chunk}
        if alerts:
            body["a"] = alerts
        if last:
            body["w"] = outbox
        return json.dumps(body, separators=(",", ":"))

    for c in changes:
        item = [c.alert_id, c.action, c.priority, c.state]
        item_size = len(json.dumps(item)) + 1
        alert = None
        if c.alert is not None and c.alert_id not in alerts:
            alert_size = len(json.dumps(c.alert, separators=(",", ":"))) + len(c.alert_id) + 4
            if alert_size <= NOTIFY_LIMIT // 2:  # else too big to send: the other nodes read it
                alert = c.alert
                item_size += alert_size
        if chunk and size + item_size > NOTIFY_LIMIT:
            payloads.append(message(last=False))
            chunk, alerts, size = [], {}, 0
        chunk.append(item)
        if alert is not None:
            alerts[c.alert_id] = alert
        size += item_size
    if chunk or outbox:
        payloads.append(message(last=True))
    for start in range(0, len(users), 50):  # user names are at most 64 characters
        payloads.append(
            json.dumps({"o": origin, "c": [], "u": list(users[start : start + 50])}, separators=(",", ":"))
        )
    return payloads


def _alert_json(value: Any) -> dict[str, Any] | None:
    """An alert sent with its change, if it is one (an object with an id)."""
    return value if isinstance(value, dict) and "id" in value else None


async def _nothing_to_reset(conn: Any) -> None:
    """What a connection needs on its way back to the pool, beyond the rollback of anything left open
    (asyncpg does that): nothing. Pool connections keep no session state -- no session advisory locks,
    cursors, LISTEN or SET (migrations and the listener use connections of their own) -- and asyncpg's
    default reset costs a statement, a round trip, per transaction."""
    return None


class PostgresStore(AlertStore):
    """An :class:`AlertStore` on PostgreSQL; an async context manager owning a pool and a listener."""

    dialect = "postgresql"
    concurrent_writers = True

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10, listen: bool = True) -> None:
        super().__init__()
        self.url = url
        self._min = min_size
        self._max = max_size
        self._listen = listen
        self._pool: Any = None
        self.origin = uuid.uuid4().hex[:16]
        #: Notifications heard, and the end of a listening connection (:class:`_Lost`).
        self._incoming: asyncio.Queue[str | _Lost] = asyncio.Queue()
        self._listener_task: asyncio.Task[None] | None = None
        self._listener_ready = asyncio.Event()
        #: Changes heard from other nodes (for tests and metrics).
        self.remote_changes = 0
        #: Statements sent in write transactions and in reads (``telecare_store_round_trips_total``).
        self.round_trips = RoundTrips()
        self.read_round_trips = RoundTrips()
        #: The intake's lanes while :meth:`lanes` is open.
        self._lanes: tuple[StoreLane, ...] = ()
        #: The loop the store was opened on (the bridge's), and news handed back to it from the lane.
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._handed_back: set[concurrent.futures.Future[None]] = set()

    async def __aenter__(self) -> Self:
        self._main_loop = asyncio.get_running_loop()
        conn = await asyncpg.connect(self.url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self.url, min_size=self._min, max_size=self._max, reset=_nothing_to_reset
        )
        if self._listen:
            self._listener_task = asyncio.create_task(self._listen_loop(), name="pg-listen")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._listener_ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        listener, self._listener_task = self._listener_task, None
        await stop(listener)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(5):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    # -- the intake's lanes ----------------------------------------------------------------------
    @asynccontextmanager
    async def lanes(self) -> AsyncIterator[Lanes]:
        """While open, the intake's transactions run on event loops and connections of their own
        (:mod:`alarm_centre.store.pg_lanes`): one lane for calls for help, one for the rest."""
        async with StoreLane(self, "help") as help_lane, StoreLane(self, "others") as others:
            self._lanes = (help_lane, others)
            try:
                yield Lanes(help=help_lane, others=others)
            finally:
                self._lanes = ()

    async def new_pool(self, size: int) -> Any:
        """A pool of connections on the running loop (a lane's)."""
        return await asyncpg.create_pool(self.url, min_size=1, max_size=size, reset=_nothing_to_reset)

    def _lane_here(self) -> StoreLane | None:
        """The lane whose loop is running this code, if any."""
        return next((lane for lane in self._lanes if lane.owns_running_loop()), None)

    def _pool_here(self) -> Any:
        """The pool of the loop asking: a lane's on its thread, else the store's."""
        lane = self._lane_here()
        pool = lane.pool if lane is not None else self._pool
        if pool is None:
            raise RuntimeError("store is closed")
        return pool

    async def _after_commit(self, post: PostCommit) -> None:
        """Listeners live on the bridge's loop: what a lane committed is handed back to it (when there
        is anything to tell: most of a soak's transactions are heartbeats that change nothing)."""
        if not (post.changes or post.outbox or post.users):
            return
        if self._lane_here() is not None and self._main_loop is not None:
            told = asyncio.run_coroutine_threadsafe(super()._after_commit(post), self._main_loop)
            self._handed_back.add(told)
            told.add_done_callback(self._handed_back.discard)
            return
        await super()._after_commit(post)

    # -- transactions ----------------------------------------------------------------------------
    @asynccontextmanager
    async def _write(self) -> AsyncIterator[PgTx]:
        pool = self._pool_here()
        self.round_trips.count(2)  # BEGIN and COMMIT (or ROLLBACK)
        async with pool.acquire() as conn, conn.transaction():
            yield PgTx(conn, self.round_trips)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[PgTx]:
        pool = self._pool_here()
        async with pool.acquire() as conn:
            yield PgTx(conn, self.read_round_trips)

    def skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def round_trip_counts(self) -> dict[str, int]:
        return {"write": self.round_trips.total, "read": self.read_round_trips.total}

    async def _before_commit(self, tx: Tx, post: PostCommit) -> None:
        """As :meth:`AlertStore._before_commit`, then a NOTIFY that commits with the transaction."""
        await super()._before_commit(tx, post)
        if post.changes or post.outbox or post.users:
            payloads = _encode_changes(self.origin, post.changes, post.outbox, sorted(post.users))
            await tx.execute(  # one statement, in order, whatever the number of payloads
                "SELECT pg_notify(?, p.payload) FROM (SELECT payload FROM unnest(?::text[]) "
                "WITH ORDINALITY AS u(payload, n) ORDER BY n) AS p",
                CHANNEL,
                payloads,
            )

    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        """As :meth:`AlertStore.ingest`; events that met another node's write of the same unit are
        stored in a second transaction that waits its turn."""
        results = list(await super().ingest(events))
        for _ in range(RETRY_ROUNDS):
            again = sorted(
                (
                    n
                    for n, r in enumerate(results)
                    if r.result == "rejected" and r.error and r.error.endswith(RETRYABLE)
                ),
                key=lambda n: (events[n].device_id, n),
            )
            if not again:
                break
            log.info("storing %d event(s) after another node's write of the same unit", len(again))
            token = _wait_for_device.set(True)
            try:
                retried = await super().ingest([events[n] for n in again])
            finally:
                _wait_for_device.reset(token)
            for n, result in zip(again, retried, strict=True):
                results[n] = result
        return results

    async def start_batch(self, tx: Tx, events: Sequence[DeviceEvent]) -> BatchStart:
        """The batch's units claimed, events recorded, units read and open alerts locked in one
        statement, whatever the batch's size (:mod:`alarm_centre.store.pg_batch`)."""
        return await pg_batch.start(
            tx,
            events,
            wait=_wait_for_device.get(),
            lock_space=DEVICE_LOCK_SPACE,
            busy_error="DeviceBusy",
            open_keys=open_keys_known_up_front(events),
        )

    async def link_events(self, tx: Tx, links: Sequence[Link]) -> None:
        await pg_batch.link_events(tx, links)

    async def lock_open_alerts(self, tx: Tx, keys: Sequence[str]) -> dict[str, Row]:
        return await pg_batch.lock_open_alerts(tx, keys)

    async def add_repeats(self, tx: Tx, repeats: Sequence[Repeat]) -> None:
        await pg_batch.add_repeats(tx, repeats)

    async def insert_alerts(self, tx: Tx, alerts: Sequence[NewAlert], now: float) -> dict[str, Row]:
        return await pg_batch.insert_alerts(tx, alerts, now)

    async def log_actions(self, tx: Tx, post: PostCommit, entries: Sequence[LogEntry]) -> None:
        await pg_batch.log_actions(tx, post, entries)

    async def resident_units(self, tx: Tx, resident_ids: Sequence[str]) -> dict[str, Row]:
        return await pg_batch.resident_units(tx, resident_ids)

    async def claim_unit(self, tx: Tx, device_id: str) -> None:
        """Hold the unit's advisory lock for the transaction, so two nodes never store events of one unit
        at once: wait for it on a retry, otherwise raise :class:`DeviceBusy` (the event is retried)."""
        if _wait_for_device.get():
            await tx.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", DEVICE_LOCK_SPACE, device_id)
        else:
            row = await tx.fetchone(
                "SELECT pg_try_advisory_xact_lock(?, hashtext(?)) AS ok", DEVICE_LOCK_SPACE, device_id
            )
            if row is None or not row["ok"]:
                raise DeviceBusy(device_id)

    async def follow_access_changes(self) -> None:
        """Access changes arrive by NOTIFY (from every node and from ``telecare-bridge users``)."""
        if not self._listen:
            await super().follow_access_changes()
        await asyncio.Event().wait()

    # -- LISTEN/NOTIFY ---------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        """Keep one connection LISTENing; dispatch what other nodes committed. A lost or refused
        connection is one fault in the log, retried within :data:`LISTEN_RETRY_MAX_S`."""
        backoff = Backoff(0.1, LISTEN_RETRY_MAX_S)
        fault = FaultLog(
            log,
            "LISTEN connection to PostgreSQL down (changes from other nodes may be missed)",
            level=logging.WARNING,
            every_s=ECHO_SUMMARY_EVERY_S,
        )
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.url)
                # The connection's end is queued behind what it delivered: one await per notification
                # (a call for help reaches the console a few turns of a busy loop sooner).
                lost = _Lost()
                conn.add_termination_listener(lambda _c, lost=lost: self._incoming.put_nowait(lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listener_ready.set()
                backoff.reset()
                fault.recovered()
                while (item := await self._incoming.get()) is not lost:
                    if isinstance(item, str):
                        await self._dispatch(item)
                fault.failed("connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fault.failed(exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(backoff.next_delay())

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._incoming.put_nowait(payload)

    async def _dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message.get("o") == self.origin:
                return  # our own commit: _after_commit already told our listeners
            post = PostCommit()
            alerts = message.get("a")
            if not isinstance(alerts, dict):
                alerts = {}  # none sent (or not as an object): the feed reads the alerts
            post.changes = [
                AlertChange(str(a), AuditAction(str(b)), int(c), str(d), _alert_json(alerts.get(str(a))))
                for a, b, c, d in message.get("c", [])
            ]
            post.outbox = bool(message.get("w"))
            post.users = {str(name) for name in message.get("u", [])}
        except (ValueError, TypeError) as exc:
            log.warning("ignored a malformed change notification: %s", exc)
            return
        self.remote_changes += len(post.changes)
        await self._after_commit(post)
