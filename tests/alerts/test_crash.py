"""Crash test: the bridge process is killed with SIGKILL while a fleet sends, then restarted.

Every event acked before the kill must be in the store, and once the units' retries settle every event
is stored exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from harness import eventually, free_port, reachable

from simulators.unit import SimulatedUnit

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

UNITS = 12
EVENTS_PER_UNIT = 25


def start_bridge(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def test_sigkill_mid_storm_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str
) -> None:
    host, port = mosquitto
    http_port = free_port()
    db = tmp_path / "crash.db"
    env = {
        **os.environ,
        "TELECARE_STORE__URL": str(db),
        "TELECARE_MQTT__URL": f"mqtt://{host}:{port}",
        "TELECARE_TOPIC_ROOT": topic_root,
        "TELECARE_HTTP__PORT": str(http_port),
        "TELECARE_MQTT__CLIENT_ID": f"crash-bridge-{uuid.uuid4().hex[:8]}",
        "TELECARE_MQTT__RECONNECT_MAX_S": "1",
    }
    log = tmp_path / "bridge.log"
    proc = start_bridge(env, log)
    acked_before_kill: set[tuple[str, str]] = set()
    acked: set[tuple[str, str]] = set()
    killed = asyncio.Event()
    sent: set[tuple[str, str]] = set()
    try:
        await eventually(_async(lambda: reachable("127.0.0.1", http_port)), timeout=30)

        async def unit_life(n: int) -> None:
            device_id = f"crash-{n:02d}"
            async with SimulatedUnit(
                device_id,
                host=host,
                port=port,
                topic_root=topic_root,
                retry_initial_s=0.5,
                retry_max_s=2.0,
                answer_commands=False,
            ) as unit:
                for i in range(EVENTS_PER_UNIT):
                    event_id = f"{device_id}-{i}"
                    sent.add((device_id, event_id))
                    event_type = "pendant" if i % 5 == 0 else "heartbeat" if i % 2 else "low_battery"
                    ack = await unit.send(event_type, event_id=event_id, timeout=90)
                    assert ack["result"] in ("accepted", "duplicate")
                    acked.add((device_id, event_id))
                    if not killed.is_set():
                        acked_before_kill.add((device_id, event_id))
                    await asyncio.sleep(0.02)

        fleet = [asyncio.create_task(unit_life(n)) for n in range(UNITS)]
        await eventually(_async(lambda: len(acked) >= UNITS * 5), timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed.set()
        await asyncio.sleep(1.0)
        proc = start_bridge(env, log)
        async with asyncio.timeout(180):
            await asyncio.gather(*fleet)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()

    assert acked_before_kill, "the kill came after some acks"
    assert len(acked) == UNITS * EVENTS_PER_UNIT
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT device_id, event_id FROM events").fetchall()
    stored_set = {(d, e) for d, e in stored}
    assert len(stored) == len(stored_set), "no event stored twice"
    assert acked_before_kill <= stored_set, "everything acked before the kill survived it"
    assert stored_set == sent, "once retries settle, every event is stored exactly once"
    # Help events from one unit joined its one open alert: one help alert per unit, not one per press.
    help_alerts = conn.execute("SELECT COUNT(*) FROM alerts WHERE type = 'pendant'").fetchone()[0]
    assert help_alerts == UNITS
    assert "Traceback" not in log.read_text(errors="replace")


def _async(check):  # type: ignore[no-untyped-def]
    async def wrapped() -> bool:
        return bool(check())

    return wrapped


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    http_port = free_port()
    env = {
        **os.environ,
        "TELECARE_STORE__URL": str(tmp_path / "stop.db"),
        "TELECARE_HTTP__PORT": str(http_port),
        "TELECARE_MQTT__EMBEDDED_PORT": str(free_port()),
    }
    log = tmp_path / "bridge.log"
    proc = start_bridge(env, log)
    try:
        deadline = time.monotonic() + 30
        while not _ready(http_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ready(http_port), log.read_text()
        proc.send_signal(sig)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert "stopped" in text and "Traceback" not in text
    assert not reachable("127.0.0.1", http_port)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
