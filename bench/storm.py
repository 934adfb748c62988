"""Storm bench: 10,000 units report ``mains_fail`` within one second while a few report ``fall``.

Falls go on the v1.1 ``alarm`` topic (``--v1.0``: on ``event``, as older units send them).

Runs the real bridge as processes (``telecare-bridge run``) against a private Mosquitto with raised
queue limits (the system default ``max_queued_messages 1000`` drops QoS 1 messages to a lagging
subscriber -- DESIGN.md), in several set-ups one after the other: one node on SQLite, then 1, 2, 3 ...
nodes on one PostgreSQL with a shared subscription (``--pg-nodes``), each on a fresh store; ``--runs``
repeats the whole round, so every run measures every set-up at about the same machine load. The units
are spread over many MQTT connections and retry unacked events, as real units do.

Prints, per set-up and run (one JSON line each): time until every event is durably acked, lost and
duplicated counts (both must be zero), time until each ``fall`` is on the console (``/api/v1/stream``
of the *last* node; after a ``resync`` the console reloads ``/api/v1/queue``, as the real console
does), each node's peak memory, the load average before and after, the CPU the bridge nodes used per
event and, on PostgreSQL, the statements sent in write transactions per event (each a round trip:
``telecare_store_round_trips_total``) and the CPU PostgreSQL's backends for the store used per event.
Then a Markdown table of the set-ups over all runs (the one in docs/scaling.md) and the targets:
every fall on the console within 0.5 s in every run, 2 PostgreSQL nodes within 1.25x of one SQLite
node in the same run, nothing lost or stored twice.

    .venv/bin/python bench/storm.py [--units 10000] [--falls 5] [--only sqlite|postgres] [--v1.0]
        [--pg-nodes 1,2,3] [--runs 5]

``STORM_KEEP_LOGS=DIR`` keeps each node's log there, ``STORM_LOG_LEVEL=INFO`` makes them say more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import asyncpg

from devices.cancellation import cancel_requests, honour_cancellation

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CONNECTIONS = 50
RETRY_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


async def pg_backends_cpu(url: str | None) -> dict[int, float]:
    """CPU time used so far by each PostgreSQL backend connected to the store's database (the server
    runs here; its shared WAL writer and checkpointer are not counted)."""
    if url is None:
        return {}
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {int(r["pid"]): cpu_seconds(int(r["pid"])) for r in rows}


def peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def wait_ready(port: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)


async def round_trips(ports: list[int]) -> int:
    """Statements the nodes have sent in write transactions (``telecare_store_round_trips_total``)."""
    total = 0.0
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith('telecare_store_round_trips_total{kind="write"}'):
                        total += float(line.split()[-1])
    return int(total)


class Console:
    """An operator's console on one node's /api/v1/stream, noting when each fall shows up."""

    def __init__(self, port: int, token: str, falls: dict[str, float]) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.falls = falls  # device_id -> time sent
        self.seen: dict[str, float] = {}
        self.resyncs = 0
        self.connected = asyncio.Event()

    def _note(self, line: dict[str, Any], now: float) -> None:
        if line.get("type") == "fall" and line.get("device_id") in self.falls:
            self.seen.setdefault(line["device_id"], now)

    async def run(self) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base + "/api/v1/stream", headers=self.headers) as resp,
        ):
            self.connected.set()
            event = ""
            async for raw in resp.content:
                text = raw.decode().strip()
                if text.startswith("event:"):
                    event = text[6:].strip()
                elif text.startswith("data:"):
                    now = time.perf_counter()
                    if event == "resync":
                        self.resyncs += 1
                        async with session.get(
                            self.base + "/api/v1/queue?limit=50", headers=self.headers
                        ) as q:
                            for line in (await q.json())["lines"]:
                                self._note(line, time.perf_counter())
                    else:
                        self._note(json.loads(text[5:]), now)


async def storm(
    label: str,
    env: dict[str, str],
    nodes: list[str],
    broker_port: int,
    *,
    units: int,
    falls: int,
    count_stored: Any,
    alarm_lane: bool = True,
    pg_url: str | None = None,
) -> dict[str, Any]:
    topic_root = f"storm{uuid.uuid4().hex[:6]}"
    ports = {node: free_port() for node in nodes}
    tmp = Path(tempfile.mkdtemp(prefix="storm-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def node_env(node: str) -> dict[str, str]:
        return {
            **os.environ,
            **env,
            "TELECARE_TOPIC_ROOT": topic_root,
            "TELECARE_HTTP__PORT": str(ports[node]),
            "TELECARE_NODE_ID": node,
            "TELECARE_MQTT__URL": f"mqtt://127.0.0.1:{broker_port}",
            "TELECARE_MQTT__CLIENT_ID": f"{node}-{topic_root}",
            "TELECARE_LOG__LEVEL": os.environ.get("STORM_LOG_LEVEL", "WARNING"),
            "PYTHONPATH": str(ROOT),
        }

    try:
        for node in nodes:
            log = (tmp / f"{node}.log").open("wb")
            procs[node] = subprocess.Popen(  # noqa: ASYNC220 -- a bench, started once
                [sys.executable, "-m", "bridge.cli", "run"],
                env=node_env(node),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        for node in nodes:
            await wait_ready(ports[node])
        print(f"  {label}: " + ", ".join(f"{n} pid {p.pid}" for n, p in procs.items()), flush=True)
        token = (
            subprocess.run(  # noqa: ASYNC221 -- a bench, once before the storm
                [
                    sys.executable,
                    "-m",
                    "bridge.cli",
                    "users",
                    "add",
                    "bench-op",
                    "--role",
                    "operator",
                ],
                env=node_env(nodes[0]),
                cwd=tmp,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        device_ids = [f"s{n:05d}" for n in range(units)]
        fall_ids = set(random.sample(device_ids, falls))
        plan = {d: ("fall" if d in fall_ids else "mains_fail") for d in device_ids}
        event_ids = {d: uuid.uuid4().hex[:16] for d in device_ids}
        fall_sent: dict[str, float] = {}
        fall_wall: dict[str, float] = {}  # the same, on the clock the bridge writes in the store
        console = Console(ports[nodes[-1]], token, fall_sent)
        console_task = asyncio.create_task(console.run())
        async with asyncio.timeout(10):
            await console.connected.wait()
        acked: dict[str, float] = {}
        results: dict[str, str] = {}
        all_acked = asyncio.Event()

        fall_acked: dict[str, float] = {}
        async with (
            aiomqtt.Client(
                "127.0.0.1", broker_port, identifier=f"acks-{topic_root}", max_queued_incoming_messages=0
            ) as ack_client,
            aiomqtt.Client("127.0.0.1", broker_port, identifier=f"fall-acks-{topic_root}") as fall_client,
        ):
            await ack_client.subscribe(f"{topic_root}/v1/+/ack", qos=1)
            for d in fall_ids:  # the falling units hear their own acks (not behind the flood's)
                await fall_client.subscribe(f"{topic_root}/v1/{d}/ack", qos=1)

            async def read_acks() -> None:
                async for message in ack_client.messages:
                    device_id = message.topic.value.split("/")[-2]
                    body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if body.get("event_id") == event_ids.get(device_id) and device_id not in acked:
                        acked[device_id] = time.perf_counter()
                        results[device_id] = body["result"]
                        if len(acked) == units:
                            all_acked.set()

            async def read_fall_acks() -> None:
                async for message in fall_client.messages:
                    fall_acked.setdefault(message.topic.value.split("/")[-2], time.perf_counter())

            reader = asyncio.create_task(read_acks())
            fall_reader = asyncio.create_task(read_fall_acks())
            trips_before = await round_trips(list(ports.values()))
            load_before = load()
            cpu_before = {node: cpu_seconds(p.pid) for node, p in procs.items()}
            pg_before = await pg_backends_cpu(pg_url)
            groups = [device_ids[i::CONNECTIONS] for i in range(CONNECTIONS)]
            started = time.perf_counter()
            attempts = 0

            async def sender(k: int, mine: list[str]) -> None:
                nonlocal attempts
                cancels = cancel_requests()
                async with aiomqtt.Client(
                    "127.0.0.1", broker_port, identifier=f"units-{k}-{topic_root}", max_inflight_messages=1000
                ) as client:
                    pending = list(mine)
                    first = True
                    rounds = 0
                    while pending:
                        chunks = [pending[i::10] for i in range(10)]
                        for chunk in chunks:  # spread over one second
                            for d in chunk:
                                payload = json.dumps({"event_id": event_ids[d], "type": plan[d]}).encode()
                                attempts += 1
                                if plan[d] == "fall":
                                    fall_sent.setdefault(d, time.perf_counter())
                                    fall_wall.setdefault(d, time.time())
                                kind = "alarm" if plan[d] == "fall" and alarm_lane else "event"
                                with contextlib.suppress(aiomqtt.MqttError):
                                    await client.publish(f"{topic_root}/v1/{d}/{kind}", payload, qos=1)
                                honour_cancellation(cancels)
                            if first:
                                await asyncio.sleep(0.1)
                        first = False
                        deadline = time.perf_counter() + RETRY_S * 2 ** min(rounds, 4)  # units back off
                        rounds += 1
                        while time.perf_counter() < deadline and any(d not in acked for d in pending):
                            await asyncio.sleep(0.1)
                        pending = [d for d in pending if d not in acked]

            senders = [asyncio.create_task(sender(k, g)) for k, g in enumerate(groups)]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(120):
                    await all_acked.wait()
            acked_in = (max(acked.values()) - started) if len(acked) == units else float("nan")
            trips = await round_trips(list(ports.values())) - trips_before
            bridge_cpu = sum(cpu_seconds(p.pid) - cpu_before[node] for node, p in procs.items())
            pg_after = await pg_backends_cpu(pg_url)
            pg_cpu = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
            load_after = load()
            for task in senders:
                task.cancel()
            reader.cancel()
            fall_reader.cancel()
            await asyncio.gather(*senders, reader, fall_reader, return_exceptions=True)
        await asyncio.sleep(1.0)
        console_task.cancel()
        await asyncio.gather(console_task, return_exceptions=True)
        stored, alerts, fall_rows = await count_stored(topic_root, device_ids)
        # Where a fall's time went: sent -> read by the bridge (raised_at), -> its raise written in the
        # transaction (the 'raised' entry), the rest until the console showed it.
        fall_read = [fall_rows[d][0] - fall_wall[d] for d in fall_wall if d in fall_rows]
        fall_written = [fall_rows[d][1] - fall_wall[d] for d in fall_wall if d in fall_rows]
        fall_latency = [console.seen[d] - fall_sent[d] for d in fall_sent if d in console.seen]
        fall_ack_s = [fall_acked[d] - fall_sent[d] for d in fall_sent if d in fall_acked]
        return {
            "setup": label,
            "load before": load_before,
            "load after": load_after,
            "units": units,
            "acked": len(acked),
            "all acked in s": round(acked_in, 2),
            "lost": units - stored,
            "duplicated": alerts - units,
            "unacked": units - len(acked),
            "publishes": attempts,
            # Includes the nodes' other writes meanwhile (outbox, escalation, probes): a little high.
            "round trips per event": round(trips / units, 2) if trips else None,
            # Until every event was acked (retries included), over the events of the storm.
            "bridge CPU ms per event": round(bridge_cpu * 1000 / units, 3),
            "PG CPU ms per event": round(pg_cpu * 1000 / units, 3) if pg_url else None,
            "falls on console": f"{len(fall_latency)}/{len(fall_sent)}",
            "fall to console max s": round(max(fall_latency), 3) if fall_latency else None,
            "fall acked max s": round(max(fall_ack_s), 3) if fall_ack_s else None,
            "fall read by bridge max s": round(max(fall_read), 3) if fall_read else None,
            "fall written max s": round(max(fall_written), 3) if fall_written else None,
            "console resyncs": console.resyncs,
            "peak MB": {node: round(peak_rss_mb(p.pid), 1) for node, p in procs.items()},
        }
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if os.environ.get("STORM_KEEP_LOGS"):  # the nodes' logs, to look into a slow run
            keep = Path(os.environ["STORM_KEEP_LOGS"])
            os.makedirs(keep, exist_ok=True)
            for node in procs:
                shutil.copy(
                    tmp / f"{node}.log", keep / f"{label.replace(' ', '').replace(',', '-')}-{node}.log"
                )
        shutil.rmtree(tmp, ignore_errors=True)


def start_mosquitto() -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    conf = Path(tempfile.mkdtemp(prefix="storm-mq-")) / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 1000\nmax_connections -1\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc, port, conf
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


async def run_sqlite(port: int, args: argparse.Namespace) -> dict[str, Any]:
    db = Path(tempfile.mkdtemp(prefix="storm-db-")) / "storm.db"

    async def count_sqlite(root: str, ids: list[str]) -> Counted:
        conn = sqlite3.connect(db)
        try:
            stored = conn.execute("SELECT COUNT(*) FROM events WHERE device_id LIKE 's%'").fetchone()
            alerts = conn.execute("SELECT COUNT(*) FROM alerts WHERE device_id LIKE 's%'").fetchone()
            falls = conn.execute(FALLS_SQL).fetchall()
            return int(stored[0]), int(alerts[0]), {d: (a, b) for d, a, b in falls}
        finally:
            conn.close()

    try:
        return await storm(
            SQLITE,
            {"TELECARE_STORE__URL": str(db)},
            ["node-1"],
            port,
            units=args.units,
            falls=args.falls,
            count_stored=count_sqlite,
            alarm_lane=not args.v1_0,
        )
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)


async def run_postgres(count: int, port: int, args: argparse.Namespace) -> dict[str, Any]:
    name = f"storm_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"CREATE DATABASE {name}")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"

    async def count_pg(root: str, ids: list[str]) -> Counted:
        conn = await asyncpg.connect(url)
        try:
            stored = await conn.fetchval("SELECT COUNT(*) FROM events WHERE device_id LIKE 's%'")
            alerts = await conn.fetchval("SELECT COUNT(*) FROM alerts WHERE device_id LIKE 's%'")
            falls = await conn.fetch(FALLS_SQL)
        finally:
            await conn.close()
        return int(stored), int(alerts), {r[0]: (r[1], r[2]) for r in falls}

    try:
        return await storm(
            pg_label(count),
            {"TELECARE_STORE__URL": url, "TELECARE_MQTT__SHARED_GROUP": "bridge"},
            [f"node-{k + 1}" for k in range(count)],
            port,
            units=args.units,
            falls=args.falls,
            count_stored=count_pg,
            alarm_lane=not args.v1_0,
            pg_url=url,
        )
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


SQLITE = "1 node, SQLite"
#: Events stored, alerts raised, and per fall: when the bridge read it and when its raise was written.
Counted = tuple[int, int, dict[str, tuple[float, float]]]
FALLS_SQL = (
    "SELECT a.device_id, a.raised_at, MIN(l.at) FROM alerts a JOIN alert_log l ON l.alert_id = a.id "
    "AND l.action = 'raised' WHERE a.type = 'fall' GROUP BY a.device_id, a.raised_at"
)
#: The issue's targets (issue 14).
FALL_TARGET_S = 0.5
PG_OVER_SQLITE = 1.25


def pg_label(count: int) -> str:
    return f"{count} node{'s' if count > 1 else ''}, PostgreSQL"


def spread(values: list[float], digits: int = 2) -> str:
    """``min-max (median)`` of a set-up's runs; one value alone."""
    values = sorted(v for v in values if v == v)
    if not values:
        return "-"
    low, high, mid = values[0], values[-1], values[len(values) // 2]
    if len(values) == 1:
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}-{high:.{digits}f} ({mid:.{digits}f})"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The set-ups over all runs, as a Markdown table (docs/scaling.md)."""
    lines = [
        "| set-up | runs | all acked, s | fall on console (max), s | round trips per event "
        "| bridge CPU ms per event | PostgreSQL CPU ms per event | lost / duplicated | load average |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setup in dict.fromkeys(r["setup"] for r in rows):
        mine = [r for r in rows if r["setup"] == setup]
        trips = [r["round trips per event"] for r in mine if r["round trips per event"] is not None]
        pg_cpu = [r["PG CPU ms per event"] for r in mine if r["PG CPU ms per event"] is not None]
        falls = [r["fall to console max s"] for r in mine if r["fall to console max s"] is not None]
        lost = sum(r["lost"] for r in mine)
        duplicated = sum(r["duplicated"] for r in mine)
        lines.append(
            f"| {setup} | {len(mine)} | {spread([r['all acked in s'] for r in mine])} "
            f"| {spread(falls)} | {spread(trips)} "
            f"| {spread([r['bridge CPU ms per event'] for r in mine], 3)} | {spread(pg_cpu, 3)} "
            f"| {lost} / {duplicated} | {spread([r['load before'] for r in mine], 1)} |"
        )
    return lines


def targets(rows: list[dict[str, Any]], runs: int) -> list[str]:
    """Each target of issue 14, met or not, run by run."""
    out = []
    slow_falls = [
        f"run {r['run']} {r['setup']}: {r['fall to console max s']} s"
        for r in rows
        if r["fall to console max s"] is None
        or r["fall to console max s"] > FALL_TARGET_S
        or r["falls on console"].split("/")[0] != r["falls on console"].split("/")[1]
    ]
    out.append(
        f"{'MET' if not slow_falls else 'MISSED'}: every fall on the console within {FALL_TARGET_S} s"
        + ("" if not slow_falls else f" ({'; '.join(slow_falls)})")
    )
    ratios = []
    for run in range(1, runs + 1):
        sqlite = [r for r in rows if r["run"] == run and r["setup"] == SQLITE]
        two = [r for r in rows if r["run"] == run and r["setup"] == pg_label(2)]
        if sqlite and two:
            ratios.append(two[0]["all acked in s"] / sqlite[0]["all acked in s"])
    if ratios:
        met = all(x <= PG_OVER_SQLITE for x in ratios)
        out.append(
            f"{'MET' if met else 'MISSED'}: 2 PostgreSQL nodes ack the storm within {PG_OVER_SQLITE}x one "
            f"SQLite node's time in the same run (ratios {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    bad = [r for r in rows if r["lost"] or r["duplicated"] or r["unacked"]]
    out.append(f"{'MET' if not bad else 'MISSED'}: nothing lost, nothing stored twice, everything acked")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--falls", type=int, default=5)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--pg-nodes", default="1,2,3", help="PostgreSQL set-ups to run, as node counts (e.g. 1,2,3)"
    )
    parser.add_argument("--runs", type=int, default=1, help="rounds of every set-up (e.g. 5)")
    parser.add_argument(
        "--v1.0", dest="v1_0", action="store_true", help="units send falls on 'event' (no v1.1 alarm lane)"
    )
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    pg_counts = [int(n) for n in args.pg_nodes.split(",")] if args.only in (None, "postgres") else []
    broker, port, _ = start_mosquitto()
    rows: list[dict[str, Any]] = []
    try:
        for run in range(1, args.runs + 1):
            if args.only in (None, "sqlite"):
                rows.append({"run": run, **await run_sqlite(port, args)})
                print(json.dumps(rows[-1]), flush=True)
            for count in pg_counts:
                rows.append({"run": run, **await run_postgres(count, port, args)})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        broker.terminate()
        broker.wait(10)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join(targets(rows, args.runs)))


if __name__ == "__main__":
    asyncio.run(main())
