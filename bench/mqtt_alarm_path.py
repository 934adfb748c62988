"""Benchmark: the full MQTT alarm path beside the raw broker round trip, in one run.

(a) raw: units publish events; an echo process subscribed to the same topics answers each with an ack
    straight away (no decoding beyond the event id, no store) -- the broker round trip.
(b) bridge: the same units and payloads against ``telecare-bridge run`` (SQLite, synchronous=FULL,
    group commit): decode, durable store, ack.

Both at a steady 500 events/s and at full speed, with many units at once. Prints p50/p99 latency and
throughput of each and their ratios. Run: ``.venv/bin/python bench/mqtt_alarm_path.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from bridge.transports.mqtt import NO_DELAY
from devices.mqtt_codec import Topics, encode_event

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    lost: int = 0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def echo(host: str, port: int, root: str) -> None:
    """The raw baseline: answer every event at once, storing nothing."""
    topics = Topics(root)
    async with aiomqtt.Client(
        host,
        port,
        identifier=f"echo-{uuid.uuid4().hex[:6]}",
        max_inflight_messages=1000,
        socket_options=NO_DELAY,
    ) as client:
        await client.subscribe(topics.event_filter, qos=1)
        print("ready", flush=True)
        tasks: set[asyncio.Task[None]] = set()
        async for message in client.messages:
            device_id = message.topic.value.split("/")[-2]
            body = json.loads(message.payload)  # type: ignore[arg-type]
            ack = json.dumps({"event_id": body["event_id"], "result": "accepted"}).encode()
            # Publish concurrently, as the bridge does, so the baseline is not serialised on PUBACKs.
            task = asyncio.create_task(client.publish(topics.ack(device_id), ack, qos=1))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def drive(
    name: str,
    host: str,
    port: int,
    root: str,
    *,
    units: int,
    rate: float | None,
    duration: float,
    window: int,
) -> Result:
    """Units send events (at ``rate`` per second in all, or as fast as acks allow) and time each ack."""
    topics = Topics(root)
    result = Result(name)
    pending: dict[str, float] = {}
    done = asyncio.Event()
    clients: list[aiomqtt.Client] = []
    stack = contextlib.AsyncExitStack()
    async with stack:
        for n in range(units):
            client = aiomqtt.Client(
                host, port, identifier=f"bench-{root}-{n}", max_inflight_messages=100, socket_options=NO_DELAY
            )
            await stack.enter_async_context(client)
            await client.subscribe(topics.ack(f"u{n}"), qos=1)
            clients.append(client)
        slots = [asyncio.Semaphore(window) for _ in range(units)]

        async def reader(n: int, client: aiomqtt.Client) -> None:
            async for message in client.messages:
                event_id = json.loads(message.payload)["event_id"]  # type: ignore[arg-type]
                started = pending.pop(event_id, None)
                if started is not None:
                    result.latencies.append(time.perf_counter() - started)
                    slots[n].release()
                if done.is_set() and not pending:
                    return

        readers = [asyncio.create_task(reader(n, c)) for n, c in enumerate(clients)]
        seq = 0
        begin = time.perf_counter()

        async def send(n: int) -> None:
            nonlocal seq
            seq += 1
            event_id = f"{n}-{seq}"
            payload = encode_event(event_id, "heartbeat" if seq % 10 else "low_battery")
            pending[event_id] = time.perf_counter()
            await clients[n].publish(topics.event(f"u{n}"), payload, qos=1)

        inflight: set[asyncio.Task[None]] = set()
        if rate:
            interval = 1.0 / rate
            next_at = begin
            n = 0
            while time.perf_counter() - begin < duration:
                # Fire and go on: a real fleet does not wait for one unit's PUBACK before the next sends.
                task = asyncio.create_task(send(n % units))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                n += 1
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        else:

            async def unit_loop(n: int) -> None:
                while time.perf_counter() - begin < duration:
                    await slots[n].acquire()
                    await send(n)

            await asyncio.gather(*(unit_loop(n) for n in range(units)))
        done.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while pending:
                    await asyncio.sleep(0.05)
        result.elapsed = time.perf_counter() - begin
        result.lost = len(pending)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return result


def start_private_broker(tmp: Path) -> tuple[subprocess.Popen[bytes] | None, str, int]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        return None, "127.0.0.1", 1883
    port = free_port()
    conf = tmp / "mosquitto.conf"
    # Raised queue limits: the default (1000) silently drops QoS 1 messages to a lagging subscriber.
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 1000\nset_tcp_nodelay true\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, "127.0.0.1", port


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=50, help="simulated units connected at once")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=500.0, help="the steady rate, events/s")
    parser.add_argument("--window", type=int, default=8, help="events in flight per unit at full speed")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=1883, help=argparse.SUPPRESS)
    parser.add_argument("--root", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        asyncio.run(echo(args.host, args.port, args.root))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    broker, host, port = start_private_broker(tmp)
    procs: list[subprocess.Popen[bytes]] = [p for p in [broker] if p is not None]
    results: list[Result] = []
    try:
        echo_root, bridge_root = f"raw{uuid.uuid4().hex[:6]}", f"br{uuid.uuid4().hex[:6]}"
        echo_proc = subprocess.Popen(
            [sys.executable, __file__, "--echo", "--host", host, "--port", str(port), "--root", echo_root],
            stdout=subprocess.PIPE,
        )
        procs.append(echo_proc)
        assert echo_proc.stdout is not None
        echo_proc.stdout.readline()
        http_port = free_port()
        env = {
            **os.environ,
            "TELECARE_STORE__URL": str(tmp / "bench.db"),
            "TELECARE_MQTT__URL": f"mqtt://{host}:{port}",
            "TELECARE_TOPIC_ROOT": bridge_root,
            "TELECARE_HTTP__PORT": str(http_port),
            "TELECARE_LOG__LEVEL": "WARNING",
        }
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run"], env=env, stdout=subprocess.DEVNULL
        )
        procs.append(bridge)
        wait_port(http_port)
        time.sleep(1.0)
        for label, rate in ((f"{args.rate:.0f}/s", args.rate), ("full speed", None)):
            for name, root in (("raw broker", echo_root), ("bridge", bridge_root)):
                r = asyncio.run(
                    drive(
                        f"{name} @ {label}",
                        host,
                        port,
                        root,
                        units=args.units,
                        rate=rate,
                        duration=args.duration,
                        window=args.window,
                    )
                )
                results.append(r)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\nMQTT alarm path, {args.units} units, {args.duration:.0f} s per phase, broker "
        f"{'private mosquitto' if broker else 'system mosquitto'}"
    )
    print(f"{'phase':<28}{'events':>8}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}")
    for r in results:
        print(
            f"{r.name:<28}{len(r.latencies):>8}{r.throughput:>10.0f}{r.pct(0.5):>9.2f}{r.pct(0.99):>9.2f}"
            f"{r.lost:>6}"
        )
    steady_raw, steady_bridge, full_raw, full_bridge = results
    print(
        f"\nfull speed: bridge throughput / raw = {full_bridge.throughput / full_raw.throughput:.2f} "
        "(target >= 0.5)"
    )
    print(
        f"at {args.rate:.0f}/s: bridge p99 / raw p99 = {steady_bridge.pct(0.99) / steady_raw.pct(0.99):.2f} "
        "(target <= 3)"
    )
    print(
        f"median of ack latency at {args.rate:.0f}/s: "
        f"raw {statistics.median(steady_raw.latencies) * 1000:.2f} ms, "
        f"bridge {statistics.median(steady_bridge.latencies) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
