"""The SQLite store checkpoints its WAL in a thread of its own, not inside the COMMIT an ack waits for."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import eventually

from alarm_centre.store import sqlite as sqlite_store
from alarm_centre.store.sqlite import INLINE_CHECKPOINT_PAGES, WAL_SIZE_LIMIT, Checkpointer, SqliteStore
from devices.events import DeviceEvent
from devices.vocabulary import EventType


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SqliteStore]:
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL_S", 0.01)
    async with SqliteStore(tmp_path / "alerts.db") as opened:
        yield opened


def heartbeat() -> DeviceEvent:
    return DeviceEvent(
        device_id="unit-1",
        event_id=uuid.uuid4().hex[:16],
        type=EventType.HEARTBEAT,
        received_at=datetime.now(UTC),
    )


async def test_the_checkpoint_runs_in_its_own_thread_after_commits(store: SqliteStore) -> None:
    await store.ingest([heartbeat() for _ in range(20)])

    async def checkpointed() -> bool:
        return store.checkpointer.runs > 0

    await eventually(checkpointed)
    assert store.checkpointer.thread_id not in (None, threading.get_ident())  # not the event loop's
    last = store.checkpointer.last
    assert last is not None and last[0] == 0  # PASSIVE: never busy-waits for the writer


async def test_commits_checkpoint_inline_only_as_a_safety_net(store: SqliteStore) -> None:
    # The pragmas are per connection: read them through the store's own writer.
    async with store._write() as tx:
        pages = await tx.fetchone("PRAGMA wal_autocheckpoint")
        limit = await tx.fetchone("PRAGMA journal_size_limit")
    assert pages is not None and list(pages.values()) == [INLINE_CHECKPOINT_PAGES]
    assert limit is not None and list(limit.values()) == [WAL_SIZE_LIMIT]


async def test_no_checkpoint_without_new_commits(tmp_path: Path) -> None:
    commits = [0]
    path = tmp_path / "alerts.db"
    async with SqliteStore(path):
        pass  # the schema, in WAL mode
    checkpointer = Checkpointer(path, lambda: commits[0])
    conn = sqlite3.connect(path)
    try:
        assert not checkpointer.run_once(conn)
        commits[0] += 1
        assert checkpointer.run_once(conn)
        assert not checkpointer.run_once(conn)
    finally:
        conn.close()
    assert checkpointer.runs == 1


async def test_a_failed_checkpoint_is_logged_and_tried_again_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commits = [0]
    path = tmp_path / "alerts.db"
    async with SqliteStore(path):
        pass
    checkpointer = Checkpointer(path, lambda: commits[0])
    commits[0] += 1
    broken = sqlite3.connect(path)
    broken.close()  # fault injected: every statement on it fails with sqlite3.ProgrammingError
    assert not checkpointer.run_once(broken)
    assert "background WAL checkpoint" in caplog.text and checkpointer.runs == 0
    conn = sqlite3.connect(path)
    try:
        assert checkpointer.run_once(conn)  # the commits it missed are still due
    finally:
        conn.close()


async def test_closing_the_store_stops_the_thread(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "alerts.db") as store:
        assert store.checkpointer.alive
        await store.ingest([heartbeat()])
    assert not store.checkpointer.alive


async def test_a_fresh_store_leaves_no_wal_behind_its_migrations(tmp_path: Path) -> None:
    """Migrations write their pages to the WAL; they are checkpointed and the WAL truncated at once, so
    a new store on a small disk is not a 4 KB database beside a 0.5-3 MB WAL (issue 17)."""
    path = tmp_path / "alerts.db"
    async with SqliteStore(path):
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size == 0
        assert path.stat().st_size > 100_000  # the schema is in the database file itself


async def test_opening_a_migrated_store_does_not_wait_for_a_checkpoint(tmp_path: Path) -> None:
    """With nothing to migrate, opening the store does not checkpoint (it may share the file with a
    running bridge: a TRUNCATE checkpoint would wait for its readers)."""
    path = tmp_path / "alerts.db"
    async with SqliteStore(path) as store:
        await store.ingest([heartbeat() for _ in range(50)])
        wal = path.with_name(path.name + "-wal")
        store.checkpointer.stop()  # keep the WAL as it is
        size = wal.stat().st_size
        assert size > 0
        async with SqliteStore(path):  # a second opener, as the CLI is beside the bridge
            assert wal.stat().st_size == size
