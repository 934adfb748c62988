"""Several bridge nodes on one PostgreSQL and one Mosquitto with MQTT 5 shared subscriptions.

The proof: two real ``telecare-bridge run`` processes split a fleet's traffic; one is killed with SIGKILL
mid-stream and restarted; every event is stored exactly once and acked, and every call-back command due
meanwhile is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from harness import eventually, free_port, make_config, postgres_database, reachable, running_bridge

from bridge.service import Bridge
from devices.events import DeviceEvent
from devices.vocabulary import EventType
from simulators.unit import SimulatedUnit

pytestmark = pytest.mark.mosquitto

UNITS = 16
EVENTS_PER_UNIT = 12


async def test_embedded_broker_refuses_a_shared_group(tmp_path: Path) -> None:
    config = make_config(tmp_path, TELECARE_MQTT__SHARED_GROUP="bridge")
    with pytest.raises(RuntimeError, match="shared subscriptions"):
        async with Bridge(config):
            pass


async def test_a_change_on_one_node_reaches_the_console_stream_of_another(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str
) -> None:
    host, port = mosquitto
    async with postgres_database() as url:
        common = {"TELECARE_STORE__URL": url, "TELECARE_MQTT__SHARED_GROUP": f"g{uuid.uuid4().hex[:6]}"}
        a_cfg = make_config(
            tmp_path / "a",
            mqtt_url=f"mqtt://{host}:{port}",
            topic_root=topic_root,
            TELECARE_NODE_ID="node-a",
            **common,
        )
        b_cfg = make_config(
            tmp_path / "b",
            mqtt_url=f"mqtt://{host}:{port}",
            topic_root=topic_root,
            TELECARE_NODE_ID="node-b",
            **common,
        )
        async with running_bridge(a_cfg) as a, running_bridge(b_cfg) as b:
            token = await b.token("watcher")
            seen: list[dict[str, Any]] = []
            async with (
                aiohttp.ClientSession() as session,
                session.get(b.url + "/api/v1/stream", headers={"Authorization": f"Bearer {token}"}) as resp,
            ):
                assert resp.status == 200
                await resp.content.readline()
                result = await a.bridge.intake.submit(
                    DeviceEvent("fan-out-1", "e1", EventType.FALL, datetime.now(UTC))
                )
                async with asyncio.timeout(10):
                    async for raw in resp.content:
                        line = raw.decode().strip()
                        if line.startswith("data:"):
                            seen.append(json.loads(line[5:]))
                            if any(m.get("id") == result.alert_id for m in seen):
                                break
            assert any(m.get("id") == result.alert_id and m["type"] == "fall" for m in seen)
            metrics_b = await b.call("GET", "/metrics", user=None)
            assert 'telecare_bridge_info{node="node-b"} 1.0' in metrics_b[1]


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _ready(port: int) -> bool:
    if not reachable("127.0.0.1", port):
        return False
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as resp:
        return resp.status == 200


async def _events_received(port: int) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("telecare_events_received_total{")
    )


STEPS = 3
ESCALATION = (
    "{1: [{after_s: 1, action: highlight}, {after_s: 3, action: highlight}, {after_s: 6, action: highlight}]}"
)


async def test_two_node_processes_one_killed_mid_fleet(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str
) -> None:
    host, port = mosquitto
    async with postgres_database() as url:
        group = f"g{uuid.uuid4().hex[:6]}"
        ports = {"node-a": free_port(), "node-b": free_port()}

        def env_for(node: str) -> dict[str, str]:
            return {
                **os.environ,
                "TELECARE_STORE__URL": url,
                "TELECARE_MQTT__URL": f"mqtt://{host}:{port}",
                "TELECARE_TOPIC_ROOT": topic_root,
                "TELECARE_HTTP__PORT": str(ports[node]),
                "TELECARE_NODE_ID": node,
                "TELECARE_MQTT__SHARED_GROUP": group,
                "TELECARE_MQTT__CLIENT_ID": f"{node}-{group}",
                "TELECARE_MQTT__RECONNECT_MAX_S": "1",
                "TELECARE_OUTBOX__POLL_S": "0.2",
                "TELECARE_FLOODS__ENABLED": "false",
                # Steps that fall due while node A is dead; each must fire exactly once.
                "TELECARE_ESCALATION__POLICIES": ESCALATION,
                "TELECARE_ESCALATION__POLL_S": "0.2",
            }

        logs = {node: tmp_path / f"{node}.log" for node in ports}
        procs = {node: _start(env_for(node), logs[node]) for node in ports}
        sent: set[tuple[str, str]] = set()
        acks: dict[tuple[str, str], dict[str, Any]] = {}
        units: list[SimulatedUnit] = []
        half = asyncio.Event()
        answered = asyncio.Event()
        try:
            for http_port in ports.values():
                await eventually(lambda p=http_port: _ready(p), timeout=40)  # type: ignore[misc]

            async def unit_life(n: int) -> None:
                device_id = f"mn-{n:02d}"
                async with SimulatedUnit(
                    device_id,
                    host=host,
                    port=port,
                    topic_root=topic_root,
                    retry_initial_s=0.5,
                    retry_max_s=1.5,
                ) as unit:
                    units.append(unit)
                    for i in range(EVENTS_PER_UNIT):
                        event_id = f"{device_id}-{i}"
                        sent.add((device_id, event_id))
                        kind = "pendant" if i % 4 == 0 else "low_battery" if i % 4 == 1 else "heartbeat"
                        acks[(device_id, event_id)] = await unit.send(kind, event_id=event_id, timeout=90)
                        if len(acks) >= UNITS * EVENTS_PER_UNIT // 3:
                            half.set()
                        await asyncio.sleep(0.05)
                    # Stay until every call-back command was answered (the cmd_result is acked too).
                    await answered.wait()

            async def release_when_answered() -> None:
                """Every event acked, every outbox command at its unit, every unit's answer acked."""
                conn = await asyncpg.connect(url)
                try:

                    async def all_answered() -> bool:
                        if len(acks) < UNITS * EVENTS_PER_UNIT:
                            return False
                        rows = await conn.fetch("SELECT cmd_id, done_at FROM outbox")
                        at_units = {c["cmd_id"] for u in units for c in u.log.commands}
                        if any(r["done_at"] is None or r["cmd_id"] not in at_units for r in rows):
                            return False
                        return all(
                            set(u.log.attempts) <= {a.get("event_id") for a in u.log.acks} for u in units
                        )

                    await eventually(all_answered, timeout=120)
                finally:
                    await conn.close()
                answered.set()

            async def killer() -> None:
                await half.wait()
                assert await _events_received(ports["node-a"]) > 0, "node A took a share before the kill"
                procs["node-a"].send_signal(signal.SIGKILL)
                procs["node-a"].wait(10)
                await asyncio.sleep(2.0)  # node B alone
                procs["node-a"] = _start(env_for("node-a"), logs["node-a"])

            async with asyncio.TaskGroup() as tg:
                tg.create_task(killer())
                tg.create_task(release_when_answered())
                for n in range(UNITS):
                    tg.create_task(unit_life(n))

            assert set(acks) == sent
            assert all(ack["result"] in ("accepted", "duplicate") for ack in acks.values())
            conn = await asyncpg.connect(url)
            try:
                rows = await conn.fetch(
                    "SELECT device_id, event_id, alert_id FROM events WHERE event_id LIKE 'mn-%'"
                )
                stored = {(r["device_id"], r["event_id"]): r["alert_id"] for r in rows}
                assert set(stored) == sent and len(rows) == len(sent), "every event stored exactly once"
                for key, ack in acks.items():
                    if ack.get("alert_id") is not None:
                        assert str(stored[key]) == ack["alert_id"], key

                async def commands_done() -> bool:
                    n = await conn.fetchval("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")
                    return int(n) == 0

                await eventually(commands_done, timeout=30)
                outbox = await conn.fetch("SELECT alert_id, cmd_id FROM outbox")

                async def steps_done() -> bool:
                    n = await conn.fetchval("SELECT COUNT(*) FROM escalation_steps WHERE state = 'pending'")
                    return int(n) == 0

                await eventually(steps_done, timeout=30)
                highlights = await conn.fetch(
                    "SELECT a.id, COUNT(l.id) AS n FROM alerts a LEFT JOIN alert_log l ON l.alert_id = a.id "
                    "AND l.action = 'escalation_highlight' WHERE a.priority = 1 GROUP BY a.id"
                )
            finally:
                await conn.close()
            assert highlights and {r["n"] for r in highlights} == {STEPS}, "each escalation step fired once"
            per_alert = Counter(r["alert_id"] for r in outbox)
            assert outbox and max(per_alert.values()) == 1, "one call-back per help alert"
            delivered = Counter(c["cmd_id"] for u in units for c in u.log.commands)
            assert set(delivered) == {r["cmd_id"] for r in outbox}, "every command reached its unit"
            assert max(delivered.values()) == 1, f"a command was sent twice: {delivered.most_common(3)}"
            assert "[node-a]" in logs["node-a"].read_text() and "[node-b]" in logs["node-b"].read_text()
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(15)
                if proc.poll() is None:
                    proc.kill()
