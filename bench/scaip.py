"""Benchmark: the bridge's SCAIP receiver beside SIPp answering on its own, in one run.

SIPp (Debian's ``sip-tester``) sends SCAIP alarm MESSAGEs over UDP (``bench/sipp/scaip_alarm_load.xml``)
from ``--units`` distinct caller ids, each a registered unit (pendant presses, falls, smoke, low
batteries in turn; every alarm a fresh ``ref``), at each offered rate and then flat out, to:

(a) bridge: ``telecare-bridge run`` with ``scaip.listen``, storing every alarm durably before its snu 0
    (SQLite WAL by default; ``--store postgres`` for a fresh PostgreSQL database on
    ``$TEST_POSTGRES_DSN``);
(b) baseline: SIPp's own answering scenario (``bench/sipp/scaip_answer_baseline.xml``), a 200 OK with a
    fixed ``mrs`` body for every MESSAGE, decoding and storing nothing.

Each runs in a process of its own. Latency is from SIPp writing a MESSAGE (its first transmission) to
SIPp reading the 200 OK, taken from the microsecond timestamps of SIPp's ``-trace_msg`` log (SIPp's
``-trace_rtt`` writes whole milliseconds only). Messages per second is answered MESSAGEs over the time
from the first sent to the last answered. The max run lets ``--max-open`` MESSAGEs be outstanding at once,
sending the next as soon as one is answered. At each rate the baseline and the bridge take turns
(``--rounds``), so load from other work on shared cores falls on both alike; the load average is printed.

Prints, per receiver and rate, messages/s, p50/p99/max in ms, and how many were not answered snu 0; then
the target: the bridge's p99 at 100 alarms/s at most 3x the baseline's. After the run it counts the
alarms the bridge stored against those it answered snu 0.

    .venv/bin/python bench/scaip.py [--units 3000] [--duration 8] [--rates 25,50,100,200]
                                    [--max-calls 3000] [--store postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIOS = ROOT / "bench" / "sipp"
PG_ADMIN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CALL_RECEIVER = "sip:arc@centre.example.org"
#: What the units send in turn (dty, stc): a pendant press, a fall, smoke, a low battery.
ALARMS = [("0003", "0010"), ("0005", "0009"), ("0023", "0009"), ("0003", "0014")]
RECEIVERS = ("baseline", "bridge")
FIRST_CID = 4690000
#: One block of SIPp's -trace_msg log: its timestamp line, then the message.
BLOCK = re.compile(rb"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})\n", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the bridge on {port} did not become healthy")


@dataclass
class Result:
    receiver: str
    rate: float | None
    latencies: list[float] = field(default_factory=list)
    span: float = 0.0
    sent: int = 0
    failed: int = 0

    def merge(self, other: Result) -> None:
        self.latencies += other.latencies
        self.span += other.span
        self.sent += other.sent
        self.failed += other.failed

    @property
    def label(self) -> str:
        return f"{self.rate:.0f}/s" if self.rate else "max"

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.span if self.span else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def read_trace(path: Path, receiver: str, rate: float | None) -> Result:
    """Latencies from SIPp's -trace_msg log: per Call-ID, the first MESSAGE sent to the 200 OK read."""
    text = path.read_bytes()
    sent_at: dict[bytes, float] = {}
    answered: dict[bytes, float] = {}
    good: set[bytes] = set()
    stamps = list(BLOCK.finditer(text))
    for n, match in enumerate(stamps):
        body = text[match.end() : stamps[n + 1].start() if n + 1 < len(stamps) else len(text)]
        at = datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        call_id = re.search(rb"^Call-ID: *(\S+)", body, re.MULTILINE | re.IGNORECASE)
        if call_id is None:
            continue
        key = call_id.group(1)
        if b"message sent" in body[:60] and b"\nMESSAGE " in body:
            sent_at.setdefault(key, at)
        elif b"message received" in body[:60] and b"\nSIP/2.0 200" in body and key not in answered:
            answered[key] = at
            if b"<snu>0</snu>" in body:
                good.add(key)
    result = Result(receiver, rate, sent=len(sent_at))
    result.latencies = [answered[k] - sent_at[k] for k in good if k in sent_at]
    result.failed = len(sent_at) - len(result.latencies)
    if result.latencies:
        result.span = max(answered[k] for k in good) - min(sent_at.values())
    return result


class Units:
    """The injection files: each run takes the next units in turn, so alarms spread over all of them."""

    def __init__(self, count: int, tmp: Path) -> None:
        self.count = count
        self.tmp = tmp
        self.next = 0
        self.runs = 0

    def cid(self, n: int) -> str:
        return str(FIRST_CID + n)

    def injection(self, calls: int) -> Path:
        self.runs += 1
        path = self.tmp / f"units-{self.runs}.csv"
        lines = ["SEQUENTIAL"]
        for _ in range(min(calls, self.count)):
            n = self.next
            dty, stc = ALARMS[(n + self.runs) % len(ALARMS)]
            lines.append(f"{self.cid(n)};{dty};{stc}")
            self.next = (n + 1) % self.count
        path.write_text("\n".join(lines) + "\n")
        return path


async def run_sipp(
    port: int, units: Units, rate: float | None, calls: int, max_open: int, tmp: Path
) -> tuple[Path, str]:
    """One SIPp load run against ``port``; the path of its message trace and what it printed."""
    run = units.runs + 1
    trace = tmp / f"run-{run}.log"
    argv = [
        "sipp",
        f"127.0.0.1:{port}",
        "-sf",
        str(SCENARIOS / "scaip_alarm_load.xml"),
        "-inf",
        str(units.injection(calls)),
        "-key",
        "run",
        str(run),
        "-t",
        "u1",
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        str(calls),
        "-r",
        str(int(rate) if rate else 100_000),
        "-l",
        str(max_open if rate is None else 10_000),
        "-timeout",
        "120s",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(trace),
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp
    )
    async with asyncio.timeout(300):
        out, err = await process.communicate()
    return trace, (err + out).decode(errors="replace")[-1500:]


# -- the receivers as processes ------------------------------------------------------------------------
async def create_postgres() -> str:
    import asyncpg

    name = f"bench_scaip_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def drop_postgres(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await admin.close()


async def register(url: str, units: Units) -> None:
    """Register every unit (``channel: scaip``, its cid) before the bridge starts."""
    from alarm_centre.registry.service import Registry
    from alarm_centre.store import open_store
    from devices.registry import Device

    async with open_store(url) as store:
        registry = Registry(store)
        for n in range(units.count):
            fields = {"id": f"bench-{n:05d}", "kind": "ip_unit", "channel": "scaip"}
            fields["scaip_cid"] = units.cid(n)
            await registry.create_device(Device.model_validate(fields), actor="bench", source="system")


async def count_stored(url: str) -> int:
    from alarm_centre.store import open_store

    async with open_store(url) as store, store.read() as tx:
        row = await tx.fetchone("SELECT COUNT(*) AS n FROM events WHERE device_id LIKE 'bench-%'")
    return int(row["n"]) if row is not None else 0


def start_baseline(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    argv = ["sipp", "-sf", str(SCENARIOS / "scaip_answer_baseline.xml"), "-t", "u1", "-i", "127.0.0.1"]
    argv += ["-p", str(port), "-nostdin"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # listening once the UDP port is taken
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return proc
        time.sleep(0.05)
    raise RuntimeError("SIPp's answering scenario did not start")


def start_bridge(url: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    http_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")},
        "PYTHONPATH": str(ROOT),
        "TELECARE_STORE__URL": url,
        "TELECARE_HTTP__PORT": str(http_port),
        "TELECARE_MQTT__EMBEDDED_PORT": str(free_port()),
        "TELECARE_SCAIP__LISTEN": f"127.0.0.1:{port}",
        "TELECARE_SCAIP__CALL_RECEIVER": CALL_RECEIVER,
        "TELECARE_LOG__LEVEL": "WARNING",
        "TELECARE_NODE_ID": "bench-scaip",
    }
    log = (tmp / "bridge.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp
    )
    wait_healthy(http_port)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def report(results: list[Result], args: argparse.Namespace, stored: int) -> None:
    store = args.store
    if args.sqlite_dir and store == "sqlite":
        store += f" in {args.sqlite_dir}"
    print(
        f"\nSCAIP receivers: SIPp over UDP, alarm MESSAGEs from {args.units} registered units, "
        f"{args.duration:g} s per rate in {args.rounds} turns, max run {args.max_calls} MESSAGEs with "
        f"{args.max_open} open; bridge store {store}; latency from SIPp's -trace_msg timestamps (1 us); "
        f"load average {args.load[0]:.1f} before, {args.load[1]:.1f} after on {os.cpu_count()} cores"
    )
    print(
        f"{'receiver':<10}{'offered':>9}{'answered':>10}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'not snu0':>10}"
    )
    for r in results:
        print(
            f"{r.receiver:<10}{r.label:>9}{len(r.latencies):>10}{r.throughput:>9.1f}{r.pct(0.5):>9.2f}"
            f"{r.pct(0.99):>9.2f}{r.pct(1.0):>9.2f}{r.failed:>10}"
        )
    answered = sum(len(r.latencies) for r in results if r.receiver == "bridge")
    print(f"\nbridge: {answered} alarms answered snu 0, {stored} events stored")
    by = {(r.receiver, r.rate): r for r in results}
    if ("bridge", 100.0) in by:
        bridge_p99, base_p99 = by["bridge", 100.0].pct(0.99), by["baseline", 100.0].pct(0.99)
        ratio = bridge_p99 / base_p99
        print(
            f"target: bridge p99 at 100 alarms/s <= 3x SIPp's own answering: {bridge_p99:.2f} ms vs "
            f"{base_p99:.2f} ms (x{ratio:.2f}): {'MET' if ratio <= 3 else 'NOT MET'}"
        )
    else:
        print("the target needs 100 in --rates")


async def measure(
    name: str, port: int, units: Units, rate: float | None, args: argparse.Namespace, tmp: Path
) -> Result:
    calls = args.max_calls if rate is None else max(1, int(rate * args.duration / args.rounds))
    trace, printed = await run_sipp(port, units, rate, calls, args.max_open, tmp)
    result = read_trace(trace, name, rate)
    trace.unlink()
    if result.failed:
        print(f"  {name} {result.label}: {result.failed} not answered snu 0; SIPp said:\n{printed}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=3000, help="registered units (default 3000)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per receiver and rate (8)")
    parser.add_argument("--rounds", type=int, default=2, help="turns each rate is split into (default 2)")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[25.0, 50.0, 100.0, 200.0],
        help="offered rates in alarms/s, before the max run (default 25,50,100,200)",
    )
    parser.add_argument("--max-calls", type=int, default=3000, help="MESSAGEs in the max run (3000)")
    parser.add_argument("--max-open", type=int, default=20, help="outstanding MESSAGEs in the max run (20)")
    parser.add_argument(
        "--store", choices=["sqlite", "postgres"], default="sqlite", help="the bridge's store"
    )
    parser.add_argument(
        "--sqlite-dir",
        type=Path,
        default=None,
        help="where the SQLite file goes (default: a temporary directory; /dev/shm takes the disk's "
        "fsync out, as a diagnostic of the receiver's own share)",
    )
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (apt-get install sip-tester)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-scaip-"))
    sqlite_dir = (
        Path(tempfile.mkdtemp(prefix="bench-scaip-", dir=args.sqlite_dir)) if args.sqlite_dir else tmp
    )
    url = asyncio.run(create_postgres()) if args.store == "postgres" else str(sqlite_dir / "bench.db")
    ports = {name: free_port() for name in RECEIVERS}
    procs: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    units = Units(args.units, tmp)
    try:
        started = time.monotonic()
        asyncio.run(register(url, units))
        print(f"registered {args.units} units in {time.monotonic() - started:.1f} s", flush=True)
        procs.append(start_bridge(url, ports["bridge"], tmp))
        procs.append(start_baseline(ports["baseline"], tmp))
        load_before = os.getloadavg()[0]
        for rate in [*args.rates, None]:
            merged = {name: Result(name, rate) for name in RECEIVERS}
            for round_ in range(1 if rate is None else args.rounds):
                order = RECEIVERS if round_ % 2 == 0 else RECEIVERS[::-1]
                for name in order:
                    part = asyncio.run(measure(name, ports[name], units, rate, args, tmp))
                    merged[name].merge(part)
            for name in RECEIVERS:
                result = merged[name]
                results.append(result)
                print(
                    f"  {name:<9} {result.label:>6}: {result.throughput:7.1f} msg/s, "
                    f"p50 {result.pct(0.5):.2f} ms, p99 {result.pct(0.99):.2f} ms",
                    flush=True,
                )
        args.load = (load_before, os.getloadavg()[0])
        for proc in reversed(procs):
            stop(proc)
        stored = asyncio.run(count_stored(url))
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop(proc)
        if args.store == "postgres":
            asyncio.run(drop_postgres(url))
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(sqlite_dir, ignore_errors=True)
    report(results, args, stored)


if __name__ == "__main__":
    main()
