"""Backups and a tested restore (docs/deploying.md, "Backups"): a store backed up while the bridge writes
to it, restored into a fresh store, is served by a new bridge over HTTP with everything in it -- SQLite
with ``telecare-bridge backup``/``restore``, PostgreSQL with ``pg_dump``/``pg_restore``."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest
from harness import IN_CI, make_config, postgres_database, running_bridge
from privacy_support import ADA, seed_resident

from bridge.cli.backup import BadBackup, check_backup

CLI = [sys.executable, "-m", "bridge.cli"]
#: A working directory without a config.yaml: the commands run on defaults and the environment.
EMPTY = tempfile.mkdtemp(prefix="cli-no-config-")


async def cli(store_url: str, *args: str) -> tuple[int, str, str]:
    env = {"PATH": "/usr/bin:/bin", "TELECARE_STORE__URL": store_url}
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, cwd=EMPTY, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def serves_the_restored_data(tmp_path: Path, store_url: str, alerts: int) -> None:
    async with running_bridge(make_config(tmp_path, TELECARE_STORE__URL=store_url)) as restored:
        status, body = await restored.call("GET", "/api/v1/residents/res-ada", user="root", role="admin")
        assert status == 200 and body["key_safe"] == ADA["key_safe"] and len(body["responders"]) == 2
        status, listed = await restored.call("GET", "/api/v1/alerts?state=all", user="root", role="admin")
        assert status == 200 and len(listed["alerts"]) == alerts


async def test_sqlite_backup_while_running_and_restore_into_a_fresh_store(tmp_path: Path) -> None:
    live = tmp_path / "live" / "bridge.db"
    live.parent.mkdir()
    backup = tmp_path / "backups" / "telecare-backup.db"
    async with running_bridge(make_config(tmp_path, TELECARE_STORE__URL=str(live))) as bridge:
        await seed_resident(bridge.store)
        # Written while the bridge keeps writing (WAL): the backup API copies a consistent state.
        code, out, err = await cli(str(live), "backup", str(backup))
        assert code == 0, err
        assert str(backup) in out and "schema" in out
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert check_backup(backup) >= 90

    fresh = tmp_path / "restored" / "bridge.db"
    code, out, err = await cli(str(fresh), "restore", str(backup))
    assert code == 0, err
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    code, _, err = await cli(str(fresh), "restore", str(backup))
    assert code == 1 and "exists: restore into a new store, or give --replace" in err
    garbage = tmp_path / "not-a-backup.db"
    garbage.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    code, _, err = await cli(str(tmp_path / "other.db"), "restore", str(garbage))
    assert code == 1 and "restore refused" in err and not (tmp_path / "other.db").exists()
    with pytest.raises(BadBackup):
        check_backup(garbage)
    await serves_the_restored_data(tmp_path, str(fresh), alerts=2)


async def test_the_sqlite_commands_send_postgresql_users_to_pg_dump(tmp_path: Path) -> None:
    code, _, err = await cli("postgresql://nobody@127.0.0.1:1/x", "backup", str(tmp_path / "b.db"))
    assert code == 2 and "pg_dump --format=custom" in err


async def test_postgresql_dump_and_restore_into_a_fresh_database(tmp_path: Path) -> None:
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        if IN_CI:
            pytest.fail("pg_dump and pg_restore must be installed in CI")
        pytest.skip("pg_dump and pg_restore are not installed")
    dump = tmp_path / "telecare.dump"
    async with (
        postgres_database() as source_url,
        running_bridge(make_config(tmp_path, TELECARE_STORE__URL=source_url)) as bridge,
    ):
        await seed_resident(bridge.store)
        proc = await asyncio.create_subprocess_exec(
            pg_dump,
            "--format=custom",
            "--no-owner",
            f"--file={dump}",
            source_url,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    async with postgres_database() as fresh_url:
        proc = await asyncio.create_subprocess_exec(
            pg_restore, "--no-owner", f"--dbname={fresh_url}", str(dump), stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(120):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        await serves_the_restored_data(tmp_path, fresh_url, alerts=2)
