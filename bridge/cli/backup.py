"""``telecare-bridge backup FILE`` and ``telecare-bridge restore FILE``: a consistent copy of the SQLite
store while the bridge runs, and a checked restore into a new store (docs/deploying.md, "Backups").

The backup uses SQLite's online backup API, so it is consistent even with the bridge writing (WAL
mode), and is written mode 0600 (it holds the same special-category data as the store). A restore
checks the file (``PRAGMA integrity_check``, a schema this bridge knows), refuses to overwrite a store
that exists unless ``--replace`` is given, and puts the file in place in one rename; the bridge brings
an older schema up to date when it starts. PostgreSQL stores are backed up with ``pg_dump`` and restored
with ``pg_restore`` (the same guide).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from bridge.cli.common import EXIT_FAILED, EXIT_USAGE, describe_store, fail, load


class BadBackup(Exception):
    """A file that is not a usable backup of a bridge store."""


def _sqlite_store(args: argparse.Namespace) -> Path:
    from alarm_centre.store import sqlite_path

    config = load(args)
    path = sqlite_path(config.store.url)
    if path is None:
        fail(
            "the store is PostgreSQL: back it up with pg_dump --format=custom and restore it with "
            "pg_restore (docs/deploying.md, Backups)",
            EXIT_USAGE,
        )
    return Path(path)


def check_backup(path: Path) -> int:
    """The schema version of a backup file; BadBackup when it is damaged or not a bridge store."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BadBackup(f"cannot open {path}: {exc}") from None
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()
        if verdict is None or verdict[0] != "ok":
            raise BadBackup(f"{path} is damaged: {verdict[0] if verdict else 'no answer'}")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BadBackup(f"{path} is not a telecare-bridge store: {exc}") from None
    finally:
        conn.close()
    if row is None or row[0] is None:
        raise BadBackup(f"{path} has no schema version: not a telecare-bridge store")
    return int(row[0])


def backup_sqlite(store: Path, target: Path) -> int:
    """Copy ``store`` to ``target`` (0600) with the online backup API; returns the schema version."""
    if not store.exists():
        raise BadBackup(f"there is no store at {store}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    source = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    copy = sqlite3.connect(partial)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        copy.close()
        source.close()
    try:
        version = check_backup(partial)
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return version


def restore_sqlite(backup: Path, store: Path, *, replace: bool) -> int:
    """Put ``backup`` in place as ``store`` (0600) after checking it; returns its schema version."""
    version = check_backup(backup)
    if store.exists() and not replace:
        raise FileExistsError(f"{store} exists: restore into a new store, or give --replace")
    store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = store.with_name(f".{store.name}.{os.getpid()}.restoring")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(backup, "rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        for stale in (store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
            stale.unlink(missing_ok=True)  # the old store's journal must not be replayed onto the backup
        os.replace(partial, store)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return version


def cmd_backup(args: argparse.Namespace) -> None:
    store = _sqlite_store(args)
    target = Path(args.file)
    try:
        version = backup_sqlite(store, target)
    except (BadBackup, sqlite3.Error, OSError) as exc:
        fail(f"backup failed: {exc}", EXIT_FAILED)
    print(
        f"{target}: backup of {describe_store(str(store))}, schema {version}, {target.stat().st_size} bytes"
    )


def cmd_restore(args: argparse.Namespace) -> None:
    store = _sqlite_store(args)
    try:
        version = restore_sqlite(Path(args.file), store, replace=args.replace)
    except (BadBackup, FileExistsError, sqlite3.Error, OSError) as exc:
        fail(f"restore refused: {exc}", EXIT_FAILED)
    print(f"restored {args.file} (schema {version}) as {describe_store(str(store))}")
    print("start the bridge: it brings the schema up to date and serves the restored data", file=sys.stderr)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``backup`` and ``restore`` to the top-level subcommands."""
    p = sub.add_parser(
        "backup",
        parents=[common],
        help="copy the SQLite store consistently, even while the bridge runs (mode 0600)",
    )
    p.add_argument("file", help="the backup file to write")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser(
        "restore",
        parents=[common],
        help="check a backup and put it in place as the configured SQLite store (bridge stopped)",
    )
    p.add_argument("file", help="a file written by telecare-bridge backup")
    p.add_argument("--replace", action="store_true", help="overwrite the store that is there")
    p.set_defaults(func=cmd_restore)
