"""The readiness probe on SQLite says a full disk is full, even where its one row would still fit
(the chaos suite saw ``/healthz`` answer 200 on a full disk once no event had come for 3 s: issue 17).

A real tmpfs, filled and then grown: needs root to mount, so it skips on a developer's machine
without it and fails in CI."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from harness import IN_CI

from alarm_centre.store.sqlite import PROBE_MIN_FREE_BYTES, SqliteStore
from simulators.outages import FaultUnavailable, SmallDisk


async def test_the_probe_fails_on_a_full_disk_and_passes_once_it_grows(tmp_path: Path) -> None:
    disk = SmallDisk(tmp_path / "disk", 8 * 1024 * 1024)
    try:
        disk.mount()
    except FaultUnavailable as exc:
        if IN_CI:
            pytest.fail(f"{exc}; CI runs as root and must be able to mount a tmpfs")
        pytest.skip(str(exc))
    try:
        async with SqliteStore(disk.path / "bridge.db") as store:
            await store.probe_write()  # room to spare
            disk.fill(leave=PROBE_MIN_FREE_BYTES // 2)
            with pytest.raises(OSError, match="bytes free") as raised:
                await store.probe_write()
            assert raised.value.errno == errno.ENOSPC
            disk.grow(2 * disk.size)
            await store.probe_write()  # room again: ready without waiting for a batch
    finally:
        disk.unmount()
