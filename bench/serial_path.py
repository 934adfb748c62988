"""Frames per second and p99 through the serial path, beside a raw pty round trip in the same run.

    .venv/bin/python bench/serial_path.py [--frames 2000] [--window 16]

1. raw: a line written to a pty and echoed back by the other side (the floor for any serial path);
2. serial, stop-and-wait: a simulated unit on a pty sends an event and waits for its ACK, one at a time
   (how real units behave): unit -> pty -> SerialTransport -> decode -> intake -> ACK -> unit;
3. serial, windowed: ``--window`` events outstanding at once on the same line.

The intake here is an in-memory dict (no disk), so the numbers are the serial path's own cost; the
real store adds its group-commit latency on top.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alarm_centre.alerts.intake import IngestResult
from bridge.transports.serial import SerialLink, SerialTransport
from devices.events import DeviceEvent
from devices.serial_frame import AckFrame, encode_event
from simulators.serial_unit import PtyPort, SimulatedSerialUnit


class DictIntake:
    def __init__(self) -> None:
        self.events: dict[tuple[str, str], str] = {}

    async def submit(self, event: DeviceEvent) -> IngestResult:
        key = (event.device_id, event.event_id)
        if key in self.events:
            return IngestResult("duplicate", self.events[key])
        self.events[key] = f"A{len(self.events)}"
        return IngestResult("accepted", self.events[key])


def report(name: str, latencies: list[float], elapsed: float) -> None:
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1e3
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
    print(f"{name:<34} {len(lat) / elapsed:>9.0f} /s   p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   n={len(lat)}")


async def raw_round_trip(n: int) -> None:
    echo = PtyPort()
    path = echo.open()

    async def echo_back() -> None:
        while data := await echo.read():
            await echo.write(data)

    echo_task = asyncio.create_task(echo_back())
    link = SerialLink.open(path, baudrate=115200)
    line = encode_event("bench-unit", "e-000000", "pendant")
    latencies = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await link.write(line)
        got = b""
        while len(got) < len(line):
            got += await link.read()
        latencies.append(time.perf_counter() - t0)
    report("raw pty line round trip", latencies, time.perf_counter() - start)
    link.close()
    echo.close()
    echo_task.cancel()


async def serial_path(n: int, window: int) -> None:
    intake = DictIntake()
    async with (
        SimulatedSerialUnit("bench-unit", retry_interval=5.0) as unit,
        SerialTransport(unit.path, intake=intake, baudrate=115200) as transport,
    ):
        async with asyncio.timeout(10):
            await transport.wait_connected()
        await unit.raise_event("heartbeat")  # warm up

        latencies: list[float] = []

        async def one() -> None:
            t0 = time.perf_counter()
            answer = await unit.raise_event("pendant")
            assert isinstance(answer, AckFrame)
            latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        for _ in range(n):
            await one()
        report("serial path, stop-and-wait", latencies, time.perf_counter() - start)

        latencies = []
        sem = asyncio.Semaphore(window)

        async def limited() -> None:
            async with sem:
                await one()

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(limited())
        report(f"serial path, window {window}", latencies, time.perf_counter() - start)
        assert unit.frames_sent >= 2 * n + 1
        print(f"stored events: {len(intake.events)}; retransmissions: {unit.frames_sent - (2 * n + 1)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description="serial path benchmark")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.frames} frames each")
    await raw_round_trip(args.frames)
    await serial_path(args.frames, args.window)


if __name__ == "__main__":
    asyncio.run(main())
