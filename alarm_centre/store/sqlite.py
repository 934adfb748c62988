"""The embedded store: SQLite in WAL mode with ``synchronous=FULL``.

Why not aiosqlite for writes: aiosqlite moves every statement to its worker thread one by one, and a
group-commit batch is thousands of small statements. Here statements run on the event loop (each is
microseconds: SQLite works from its page cache) and only ``COMMIT`` -- the fsync -- goes to a worker
thread. One writer connection guarded by a lock; reads use a second connection, which WAL lets run
beside a writer.

Checkpoints (copying the WAL back into the database file, with an fsync of it) are done by a thread of
their own (:class:`Checkpointer`). Left to SQLite, the COMMIT that takes the WAL past ~1000 pages copies
them all -- and every ack waiting for that COMMIT waits for those writes and the fsync. That COMMIT
still checkpoints (only it can let the WAL start over while commits keep coming), but finds almost
every page already copied.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

from alarm_centre.faults import ECHO_SUMMARY_EVERY_S, FaultLog
from alarm_centre.store.base import AlertStore
from alarm_centre.store.schema import JsonRepair, all_migrations, statements
from alarm_centre.store.tx import Row


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(sql, args).rowcount

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
        return None if row is None else dict(zip(row.keys(), tuple(row), strict=True))

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        rows = self._conn.execute(sql, args).fetchall()
        return [dict(zip(r.keys(), tuple(r), strict=True)) for r in rows]

    async def savepoint(self, name: str) -> None:
        self._conn.execute(f"SAVEPOINT {name}")

    async def release(self, name: str) -> None:
        self._conn.execute(f"RELEASE {name}")

    async def rollback_to(self, name: str) -> None:
        self._conn.execute(f"ROLLBACK TO {name}")


#: WAL pages after which a COMMIT checkpoints inline (SQLite's default, about 4 MB). By then the
#: checkpoint thread has copied nearly every page, so that COMMIT only copies the last few and lets the
#: WAL start over from its beginning -- which a checkpoint running beside a steady stream of commits
#: cannot do (there is always a newer frame), so without this the WAL would grow without end.
INLINE_CHECKPOINT_PAGES = 1000
#: Seconds between background checkpoints while writes come in: short beside the time the WAL takes
#: to reach INLINE_CHECKPOINT_PAGES (seconds, at hundreds of events a second).
CHECKPOINT_INTERVAL_S = 0.5
#: After a checkpoint, a WAL a burst made bigger than this is truncated back to it.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: The readiness probe counts the database's disk as full below this many free bytes. Its one row can
#: still be written into WAL pages already on disk where a batch of events, which needs new pages,
#: fails: on a full disk the probe said "ready" between failing batches (the chaos suite, issue 17).
PROBE_MIN_FREE_BYTES = 1024 * 1024


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


log = logging.getLogger(__name__)

#: Files SQLite keeps beside the database in WAL mode.
SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private(path: Path) -> None:
    """Make the database readable by its owner only, before SQLite opens it.

    It holds password hashes, key-safe codes and medical notes. A missing directory is created 0700 and
    a missing file 0600 (SQLite gives its -wal and -shm files the database file's mode); an existing
    file, or side file, that others may read is narrowed to 0600. An existing directory is left as the
    operator set it up.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(file, mode & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError:  # another user's file we may write to: say so, and keep working
            log.warning("%s is mode %o and not ours to narrow to 0600; others may read it", file, mode)


def applied_migrations(conn: sqlite3.Connection) -> int:
    """How many migrations the database has had (0 for a new, empty one)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
    if exists.fetchone() is None:
        return 0
    return int(conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version now in place."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
    for version, step in all_migrations():
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(step, JsonRepair):
                _repair_json(conn, step)
            else:
                for stmt in statements(step, "sqlite"):
                    conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.add(version)
    return max(applied, default=0)


def _repair_json(conn: sqlite3.Connection, repair: JsonRepair) -> None:
    for table, column in repair.columns:
        rows = conn.execute(f"SELECT rowid, {column} FROM {table} WHERE {repair.where(column)}").fetchall()
        conn.executemany(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", repair.repaired(rows))


class Checkpointer:
    """Checkpoints the WAL (``PASSIVE``: never waits for, nor blocks, the writer) from a thread of its
    own, at most every ``interval`` seconds and only after new commits (``commits`` counts them)."""

    def __init__(
        self, path: Path, commits: Callable[[], int], interval: float = CHECKPOINT_INTERVAL_S
    ) -> None:
        self._path = path
        self._commits = commits
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        #: Checkpoints done so far, the thread they ran in, and the last one's (busy, WAL pages, copied).
        self.runs = 0
        self.thread_id: int | None = None
        self.last: tuple[int, int, int] | None = None
        self._seen = commits()
        #: A checkpoint that keeps failing (a full disk) is one fault in the log, not a line a round.
        self.fault = FaultLog(
            log,
            f"background WAL checkpoint of {path} failing",
            level=logging.WARNING,
            every_s=ECHO_SUMMARY_EVERY_S,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a checkpoint in progress finishes first."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        conn = _connect(str(self._path))
        try:
            while not self._stopping.wait(self._interval):
                self.run_once(conn)
        finally:
            conn.close()

    def run_once(self, conn: sqlite3.Connection) -> bool:
        """Checkpoint if anything was committed since the last time; whether it did. A failure (disk
        full, say) is logged: the next round, or a COMMIT past INLINE_CHECKPOINT_PAGES, tries again."""
        commits = self._commits()
        if commits == self._seen:
            return False
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self.fault.failed(exc)
            return False
        self.fault.recovered()
        self._seen = commits
        self.last = (int(row[0]), int(row[1]), int(row[2]))
        self.runs += 1
        self.thread_id = threading.get_ident()
        return True


class SqliteStore(AlertStore):
    """An :class:`AlertStore` in one SQLite file; an async context manager."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._fsync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        #: Transactions committed so far (the checkpoint thread runs only after new ones).
        self.commits = 0
        self.checkpointer = self._new_checkpointer()

    async def __aenter__(self) -> Self:
        make_private(self.path)
        self._writer = _connect(str(self.path))
        before = applied_migrations(self._writer)
        migrate(self._writer)
        if applied_migrations(self._writer) != before:
            # Migrations leave their pages in the WAL (3 MB for a fresh store beside a 4 KB database
            # file): copy them back and truncate it now, so a small disk starts with that space free.
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._writer.execute(f"PRAGMA wal_autocheckpoint={INLINE_CHECKPOINT_PAGES}")
        self._writer.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self._reader = _connect(str(self.path))
        self.checkpointer = self._new_checkpointer()
        self.checkpointer.start()
        return self

    async def probe_write(self) -> None:
        """Raise when the store does not accept writes: its disk has less than
        :data:`PROBE_MIN_FREE_BYTES` free (``OSError`` ENOSPC), or the one-row write fails."""
        stats = os.statvfs(self.path.resolve().parent)
        free = stats.f_bavail * stats.f_frsize
        if free < PROBE_MIN_FREE_BYTES:
            raise OSError(
                errno.ENOSPC,
                f"the database's disk has {free} bytes free (batches of events need at least "
                f"{PROBE_MIN_FREE_BYTES})",
            )
        await super().probe_write()

    def _new_checkpointer(self) -> Checkpointer:
        return Checkpointer(self.path, lambda: self.commits, CHECKPOINT_INTERVAL_S)

    async def __aexit__(self, *exc: object) -> None:
        self.checkpointer.stop()
        async with self._lock:
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None
        self._fsync.shutdown(wait=True)

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            conn = self._writer
            if conn is None:
                raise RuntimeError("store is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            commit = asyncio.get_running_loop().run_in_executor(self._fsync, self._commit, conn)
            try:
                await asyncio.shield(commit)
                self.commits += 1
            except asyncio.CancelledError:
                # The COMMIT is running in its thread: nobody may touch the connection (roll back,
                # close) until it is over. Whether it committed or not, the caller gives no ack, so
                # the unit's retry makes it whole either way.
                try:
                    await _finish(commit)
                finally:
                    if conn.in_transaction:  # the COMMIT failed: leave the connection clean
                        conn.execute("ROLLBACK")
                raise
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_SqliteTx]:
        conn = self._reader
        if conn is None:
            raise RuntimeError("store is closed")
        yield _SqliteTx(conn)


async def _finish(future: asyncio.Future[None]) -> None:
    """Wait for a future to finish, even through further cancellations (which are re-raised after)."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if future.done() and not future.cancelled():
        future.exception()  # mark any commit error as seen; the caller is already failing
    if cancelled:
        raise asyncio.CancelledError
