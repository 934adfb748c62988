"""Console fan-out: time from an event's ack to its appearance on N connected console streams.

    .venv/bin/python bench/console_fanout.py [--streams 1,50,200] [--events 20] [--mqtt-url mqtt://127.0.0.1:1883]

For each N, N console sessions each hold ``GET /api/v1/stream`` open with their session cookie (the
console's real path: session middleware, AlertFeed, SSE). Simulated units then send ``--events``
pendant events over MQTT one at a time; for each, the clock starts at the commit that releases the
event's ack (the store's after-commit listener: the event is durable and its ack is on its way) and
stops when each stream has delivered the alert. "unit sends -> last stream" is the whole path from
the unit's publish to the last console, through the broker, group commit and fan-out.

Baseline: a bare aiohttp SSE broadcast (one queue per subscriber, no store, no auth) with the same N
readers, timed from the broadcast call. Everything runs in one process on loopback, so readers and
server share the CPU, as they would not in production; read the numbers relative to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alarm_centre.alerts.model import AlertChange, Role, User
from alarm_centre.console.signin import SESSION_COOKIE, SESSIONS
from bridge.config import load_config
from bridge.service import Bridge
from devices.cancellation import stop
from simulators.unit import SimulatedUnit


class Readers:
    """N SSE readers that note when each alert id arrives on each stream."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.connected = 0

    async def _read(self, http: aiohttp.ClientSession, url: str, cookies: dict[str, str]) -> None:
        async with http.get(url, cookies=cookies, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            resp.raise_for_status()
            self.connected += 1
            async for raw in resp.content:
                if not raw.startswith(b"data:"):
                    continue
                now = time.perf_counter()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.arrivals.setdefault(str(json.loads(raw[5:])["id"]), []).append(now)
                    self.changed.set()

    async def wait_for(self, key: str, n: int) -> list[float]:
        """Arrival times of ``key`` on all ``n`` streams (some may precede the caller's clock start)."""
        async with asyncio.timeout(30):
            while len(self.arrivals.get(key, [])) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.arrivals[key]

    def start(self, http: aiohttp.ClientSession, url: str, cookies: list[dict[str, str]]) -> None:
        for jar in cookies:
            self.tasks.append(asyncio.create_task(self._read(http, url, jar)))

    async def wait_connected(self, n: int) -> None:
        async with asyncio.timeout(60):
            while self.connected < n:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


def summary(latencies_ms: list[float]) -> str:
    ordered = sorted(latencies_ms)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"p50 {statistics.median(ordered):7.1f}  p99 {p(0.99):7.1f}  max {ordered[-1]:7.1f} ms"
        f"  (n={len(ordered)})"
    )


async def console_run(n: int, events: int, mqtt_url: str) -> tuple[list[float], list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "TELECARE_STORE__URL": f"{tmp}/bench.db",
            "TELECARE_HTTP__PORT": "0",
            "TELECARE_MQTT__EMBEDDED_PORT": "0",
            "TELECARE_MQTT__URL": mqtt_url,
            "TELECARE_TOPIC_ROOT": f"bench{int(time.time() * 1000) % 10**9}",
            "TELECARE_LOG__LEVEL": "WARNING",
            # The bench's simulated units sign in anonymously (the embedded broker's demo mode).
            "TELECARE_MQTT__EMBEDDED_ALLOW_ANONYMOUS": "true",
        }
        config = load_config(None, environ=env)
        async with Bridge(config) as bridge:
            serve = asyncio.create_task(bridge.serve())
            try:
                await bridge.mqtt.wait_subscribed(20)
                committed: dict[str, float] = {}

                def on_commit(changes: Sequence[AlertChange]) -> None:
                    now = time.perf_counter()
                    for change in changes:
                        if change.action == "raised":
                            committed.setdefault(change.alert_id, now)

                bridge.store.add_listener(on_commit)  # called right after the commit that releases the ack
                sessions = bridge.app[SESSIONS]
                cookies = []
                for i in range(n):
                    await bridge.store.users.add(f"op{i}", Role.OPERATOR)
                    token, _ = await sessions.create(User(f"op{i}", Role.OPERATOR), address="127.0.0.1")
                    cookies.append({SESSION_COOKIE: token})
                readers = Readers()
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=connector) as http:
                    readers.start(http, bridge.http_url + "/api/v1/stream", cookies)
                    await readers.wait_connected(n)
                    host, port = bridge.mqtt._broker.host, bridge.mqtt._broker.port
                    every: list[float] = []
                    last: list[float] = []
                    end_to_end: list[float] = []
                    async with contextlib.AsyncExitStack() as units:
                        fleet = [
                            await units.enter_async_context(
                                SimulatedUnit(
                                    f"bench-{e}", host=host, port=port, topic_root=config.topic_root
                                )
                            )
                            for e in range(events)
                        ]
                        for unit in fleet:
                            pressed = time.perf_counter()
                            ack = await unit.send("pendant", timeout=20)
                            seen = await readers.wait_for(str(ack["alert_id"]), n)
                            acked = committed[str(ack["alert_id"])]
                            every.extend((t - acked) * 1000 for t in seen)
                            last.append((max(seen) - acked) * 1000)
                            end_to_end.append((max(seen) - pressed) * 1000)
                            await asyncio.sleep(0.05)
                    await readers.stop()
                return every, last, end_to_end
            finally:
                await stop(serve)


@contextlib.asynccontextmanager
async def bare_sse_server() -> AsyncIterator[tuple[str, set[asyncio.Queue[bytes]]]]:
    queues: set[asyncio.Queue[bytes]] = set()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queues.add(queue)
        try:
            while chunk := await queue.get():
                await response.write(chunk)
            return response
        finally:
            queues.discard(queue)

    app = web.Application()
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/stream", queues
    finally:
        for queue in list(queues):
            queue.put_nowait(b"")  # let each handler finish before the server goes
        await asyncio.sleep(0.1)
        await runner.cleanup()


async def baseline_run(n: int, events: int) -> tuple[list[float], list[float]]:
    async with bare_sse_server() as (url, queues):
        readers = Readers()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            readers.start(http, url, [{} for _ in range(n)])
            await readers.wait_connected(n)
            async with asyncio.timeout(30):
                while len(queues) < n:
                    await asyncio.sleep(0.01)
            every: list[float] = []
            last: list[float] = []
            for e in range(events):
                data = json.dumps({"id": f"b{e}", "state": "raised"})
                payload = f"event: alert\ndata: {data}\n\n".encode()
                sent = time.perf_counter()
                for queue in list(queues):
                    queue.put_nowait(payload)
                seen = await readers.wait_for(f"b{e}", n)
                every.extend((t - sent) * 1000 for t in seen)
                last.append((max(seen) - sent) * 1000)
                await asyncio.sleep(0.05)
            await readers.stop()
    return every, last


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", default="1,50,200", help="comma-separated stream counts (default 1,50,200)"
    )
    parser.add_argument("--events", type=int, default=20, help="events per stream count (default 20)")
    parser.add_argument("--mqtt-url", default="", help="broker URL (default: the embedded broker)")
    args = parser.parse_args()
    # Streams still open when a run's bridge shuts down end with write errors; they are not results.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("alarm_centre.http").setLevel(logging.CRITICAL)
    counts = [int(x) for x in args.streams.split(",") if x]
    broker = args.mqtt_url or "embedded amqtt"
    print(f"console fan-out: {args.events} alerts per run, SQLite store, broker {broker}")
    for n in counts:
        base_all, base_last = await baseline_run(n, args.events)
        every, last, end_to_end = await console_run(n, args.events, args.mqtt_url)
        print(f"N={n:>4}  bare SSE broadcast -> each stream  {summary(base_all)}")
        print(f"        bare SSE broadcast -> last stream  {summary(base_last)}")
        print(f"        console: ack -> each stream        {summary(every)}")
        print(f"        console: ack -> last stream        {summary(last)}")
        print(f"        console: unit sends -> last stream {summary(end_to_end)}")


if __name__ == "__main__":
    asyncio.run(main())
