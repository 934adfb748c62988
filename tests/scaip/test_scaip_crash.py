"""Crash test for the SCAIP receiver: ``telecare-bridge run`` is killed with SIGKILL while units send
alarms, then restarted on the same port and store. The units retransmit per RFC 3261 (UDP) and, when a
transaction times out or the TCP connection drops, send the same ``mrq`` (same ``ref``) again in a new
transaction, reconnecting, as real units do, until every alarm is answered snu 0.

Every alarm answered before the kill survived it, and once the resends settle every alarm is stored
exactly once: one event per unit and ``ref``, none lost, none twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
from harness import eventually, free_port, make_config, postgres_database, reachable

from alarm_centre.store import open_store
from bridge.feature_registry import make_registry
from devices.registry import Device
from devices.scaip import MessageResponse, Snu, build_mrq
from simulators.scaip_unit import ScaipUnit

pytestmark = pytest.mark.slow

ALARMS_PER_UNIT = 20
#: (cid, transport, Timer F in seconds): UDP units that retransmit through the restart within one
#: transaction, UDP units whose transactions time out first (so they send the mrq again in a new one),
#: and TCP units whose connection the kill drops.
UNITS: list[tuple[str, Literal["udp", "tcp"], float]] = [
    *((f"46799{n:02d}", "udp", 32.0) for n in range(3)),
    *((f"46798{n:02d}", "udp", 2.0) for n in range(3)),
    *((f"46797{n:02d}", "tcp", 32.0) for n in range(4)),
]
#: What each unit sends in turn: a pendant press, a fall, a low battery (dty, stc).
ALARMS = [("0003", "0010"), ("0005", "0009"), ("0014", "0014")]


@pytest.fixture(params=["sqlite", "postgres"])
async def crash_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A SQLite file, or a fresh PostgreSQL database, that outlives the bridge process."""
    if request.param == "sqlite":
        yield str(tmp_path / "crash.db")
        return
    async with postgres_database() as url:
        yield url


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _ready(http_port: int) -> bool:
    if not reachable("127.0.0.1", http_port):
        return False
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{http_port}/healthz") as resp,
    ):
        return resp.status == 200


async def _register(tmp_path: Path, url: str) -> None:
    """Register the units (the store is created here, before the bridge first starts)."""
    config = make_config(tmp_path, TELECARE_STORE__URL=url)
    async with open_store(url) as store:
        registry = make_registry(config, store)
        for cid, _, _ in UNITS:
            fields = {"id": f"crash-{cid}", "kind": "ip_unit", "channel": "scaip", "scaip_cid": cid}
            await registry.create_device(Device.model_validate(fields), actor="test", source="system")


async def test_sigkill_mid_batch_stores_every_alarm_once(tmp_path: Path, crash_store_url: str) -> None:
    await _register(tmp_path, crash_store_url)
    http_port, scaip_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")},
        "TELECARE_STORE__URL": crash_store_url,
        "TELECARE_HTTP__PORT": str(http_port),
        "TELECARE_MQTT__EMBEDDED_PORT": str(free_port()),
        "TELECARE_SCAIP__LISTEN": f"127.0.0.1:{scaip_port}",
        "TELECARE_NODE_ID": "scaip-crash",
    }
    log = tmp_path / "bridge.log"
    proc = _start(env, log)
    sent: set[tuple[str, str]] = set()
    answered: set[tuple[str, str]] = set()
    answered_before_kill: set[tuple[str, str]] = set()
    third = asyncio.Event()
    killed = asyncio.Event()
    units: list[ScaipUnit] = []
    total = len(UNITS) * ALARMS_PER_UNIT
    try:
        await eventually(lambda: _ready(http_port), timeout=40)

        async def unit_life(cid: str, transport: Literal["udp", "tcp"], timer_f_s: float) -> None:
            async with ScaipUnit(
                "127.0.0.1", scaip_port, cid=cid, transport=transport, timer_f_s=timer_f_s
            ) as unit:
                units.append(unit)
                for i in range(ALARMS_PER_UNIT):
                    dty, stc = ALARMS[i % len(ALARMS)]
                    ref = f"K{i}"
                    sent.add((cid, ref))
                    # Bounded: 60 attempts a second apart (each up to Timer F) cover the restart.
                    answer = await unit.deliver(build_mrq(ref=ref, cid=cid, dty=dty, stc=stc), attempts=60)
                    assert isinstance(answer.mrs, MessageResponse), (cid, ref, answer)
                    assert answer.mrs.snu is Snu.OK and answer.mrs.ref == ref, (cid, ref, answer.mrs)
                    answered.add((cid, ref))
                    if not killed.is_set():
                        answered_before_kill.add((cid, ref))
                    if len(answered) >= total // 3:
                        third.set()

        async def killer() -> None:
            nonlocal proc
            await third.wait()
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            killed.set()
            proc = _start(env, log)  # same port, same store; the units are retransmitting meanwhile

        async with asyncio.timeout(180), asyncio.TaskGroup() as tg:
            tg.create_task(killer())
            for cid, transport, timer_f_s in UNITS:
                tg.create_task(unit_life(cid, transport, timer_f_s))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()

    assert killed.is_set() and answered_before_kill, "the kill came after some answers"
    assert len(answered_before_kill) < total, "the kill came before the last answer"
    assert answered == sent and len(sent) == total
    tcp = [u for u in units if u.transport == "tcp"]
    assert all(u.connections > 1 for u in tcp), "TCP units reconnected after the kill"
    assert sum(u.resends for u in units) > 0, "requests in flight at the kill were sent again"
    assert sum(u.sent_count for u in units) > total, "datagrams lost to the kill were retransmitted"
    async with open_store(crash_store_url) as store, store.read() as tx:
        rows = await tx.fetchall("SELECT device_id, data FROM events WHERE device_id LIKE 'crash-%'")
    stored = Counter(
        (row["device_id"].removeprefix("crash-"), json.loads(row["data"])["scaip"]["ref"]) for row in rows
    )
    assert not [key for key, n in stored.items() if n > 1], "no alarm stored twice"
    assert answered_before_kill <= set(stored), "every alarm answered before the kill survived it"
    assert set(stored) == sent, "once the resends settle, every alarm is stored"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
