"""Crash test for the DC-09 receiver: ``telecare-bridge run`` is killed with SIGKILL while panels send,
then restarted on the same port and store. The panels resend every frame not ACKed (the same bytes, the
same sequence number, reconnecting over TCP), as real panels do, until all are ACKed.

Every frame ACKed before the kill survived it, and once the resends settle every frame is stored exactly
once: one event per account and sequence number, none lost, none twice.
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

import aiohttp
import pytest
from harness import eventually, free_port, make_config, postgres_database, reachable

from alarm_centre.store import open_store
from bridge.feature_registry import make_registry
from devices.dc09 import ContactId, Qualifier, Token, contact_id_data, parse_key
from devices.registry import Device
from simulators.dc09_panel import Dc09Panel

pytestmark = pytest.mark.slow

KEY_TEXT = "00112233445566778899AABBCCDDEEFF"
FRAMES_PER_PANEL = 24
#: (account, key, transport): encrypted and clear panels on TCP, and one of each on UDP.
PANELS = [
    *((f"C{n:03d}", KEY_TEXT if n % 2 else None, "tcp") for n in range(8)),
    ("D000", None, "udp"),
    ("D001", KEY_TEXT, "udp"),
]
#: What each panel sends in turn: a link test, a periodic test, a pendant, a low battery.
CODES: list[int | None] = [None, 602, 101, 302]


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
    """Register the panels (the store is created here, before the bridge first starts)."""
    config = make_config(tmp_path, TELECARE_STORE__URL=url)
    async with open_store(url) as store:
        registry = make_registry(config, store)
        for account, key, _ in PANELS:
            fields = {"id": f"crash-{account}", "kind": "ip_unit", "channel": "dc09", "dc09_account": account}
            if key is not None:
                fields["dc09_key"] = key
            await registry.create_device(Device.model_validate(fields), actor="test", source="system")


async def test_sigkill_mid_batch_stores_every_frame_once(tmp_path: Path, crash_store_url: str) -> None:
    await _register(tmp_path, crash_store_url)
    http_port, dc09_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")},
        "TELECARE_STORE__URL": crash_store_url,
        "TELECARE_HTTP__PORT": str(http_port),
        "TELECARE_MQTT__EMBEDDED_PORT": str(free_port()),
        "TELECARE_DC09__LISTEN": f"127.0.0.1:{dc09_port}",
        "TELECARE_NODE_ID": "dc09-crash",
    }
    log = tmp_path / "bridge.log"
    proc = _start(env, log)
    sent: set[tuple[str, int]] = set()
    acked: set[tuple[str, int]] = set()
    acked_before_kill: set[tuple[str, int]] = set()
    third = asyncio.Event()
    killed = asyncio.Event()
    panels: list[Dc09Panel] = []
    total = len(PANELS) * FRAMES_PER_PANEL
    try:
        await eventually(lambda: _ready(http_port), timeout=40)

        async def panel_life(account: str, key: str | None, transport: str) -> None:
            async with Dc09Panel(
                "127.0.0.1",
                dc09_port,
                account=account,
                key=parse_key(key) if key else None,
                transport="tcp" if transport == "tcp" else "udp",
                resend_s=1.0,
            ) as panel:
                panels.append(panel)
                for i in range(FRAMES_PER_PANEL):
                    code = CODES[i % len(CODES)]
                    if code is None:
                        frame = panel.frame(Token.NULL)
                    else:
                        cid = ContactId(Qualifier.NEW, code, "01", f"{i:03d}")
                        frame = panel.frame(Token.ADM_CID, contact_id_data(account, cid))
                    sent.add((account, panel.sequence))
                    # Bounded: 60 tries a second apart covers the restart; a panel then gives up.
                    answer = await panel.send_raw(frame, attempts=60)
                    assert answer.token == "ACK", (account, panel.sequence, answer)
                    acked.add((account, panel.sequence))
                    if not killed.is_set():
                        acked_before_kill.add((account, panel.sequence))
                    if len(acked) >= total // 3:
                        third.set()

        async def killer() -> None:
            nonlocal proc
            await third.wait()
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            killed.set()
            proc = _start(env, log)  # same port, same store; the panels are resending meanwhile

        async with asyncio.timeout(150), asyncio.TaskGroup() as tg:
            tg.create_task(killer())
            for account, key, transport in PANELS:
                tg.create_task(panel_life(account, key, transport))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()

    assert killed.is_set() and acked_before_kill, "the kill came after some ACKs"
    assert len(acked_before_kill) < total, "the kill came before the last ACK"
    assert acked == sent and len(sent) == total
    assert any(p.connections > 1 for p in panels), "TCP panels reconnected after the kill"
    assert sum(p.sent_frames for p in panels) > total, "frames in flight at the kill were resent"
    async with open_store(crash_store_url) as store, store.read() as tx:
        rows = await tx.fetchall("SELECT device_id, data FROM events WHERE device_id LIKE 'crash-%'")
    stored = Counter(
        (row["device_id"].removeprefix("crash-"), json.loads(row["data"])["dc09"]["sequence"]) for row in rows
    )
    assert not [key for key, n in stored.items() if n > 1], "no frame stored twice"
    assert acked_before_kill <= set(stored), "every frame ACKed before the kill survived it"
    assert set(stored) == sent, "once the resends settle, every frame is stored"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
