"""The embedded store: SQLite in WAL mode with ``synchronous=FULL``.

Why not aiosqlite for writes: aiosqlite moves every statement to its worker thread one by one, and a
group-commit batch is thousands of small statements. Here statements run on the event loop (each is
microseconds: SQLite works from its page cache) and only ``COMMIT`` -- the fsync -- goes to a worker
thread. One writer connection guarded by a lock; reads use a second connection, which WAL lets run
beside a writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

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

    async def __aenter__(self) -> Self:
        make_private(self.path)
        self._writer = _connect(str(self.path))
        migrate(self._writer)
        self._reader = _connect(str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
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
