"""The rig of a fault experiment: bridge nodes as real processes, a fleet of units as load, and what an
operator would watch -- ``/healthz`` polled every 50 ms, the log, the process's CPU -- measured around
one fault and its healing (the experiments are in :mod:`simulators.chaos`).

A bridge node is ``python -m bridge.cli run --config FILE`` in a directory of its own (the product is
started as a process, never imported: a simulator imports only ``devices``). Its store is read back at
the end with the database's own driver, by event id, to count what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from simulators.fleet_load import FleetLoad
from simulators.outages import free_port

#: Escalation steps due two and five seconds after a call for help is raised, so steps fall due while a
#: fault lasts (the issue-17 runs found the escalation loop spinning on exactly that).
CHAOS_POLICY = [{"after_s": s, "action": "highlight"} for s in (2, 5, 60)]
#: Seconds into the units' quiet spell before the bridge's CPU is measured (its last batches finish).
SETTLE_S = 0.5
#: A log record's first line: ``2025-01-01 12:00:00,123 WARNING [node] logger: message``.
RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+)\s+\[[^\]]*\] ([\w.]+): (.*)$")
#: How a fault's summary line names its fault: ``<what> for 3.0 s: ...``.
SUMMARY = re.compile(r"^(.*?) for \d+\.\d s: ")


@dataclass
class Sizes:
    """How big and how long one experiment is (CI keeps them small; the bench makes them longer)."""

    units: int = 200
    rate: float = 100.0
    retry_s: float = 1.0
    #: A unit's retry wait doubles up to this (None: every retry_s, as the issue-17 fleet did).
    retry_max_s: float | None = None
    warm_s: float = 1.5
    #: Seconds the fault lasts with the units sending, then with them quiet (CPU measured).
    fault_s: float = 3.0
    idle_s: float = 4.0
    #: Seconds a bridge is stopped (SIGSTOP): longer than 1.5 x keepalive, so the broker drops it.
    pause_s: float = 8.0
    keepalive: int = 5
    drain_s: float = 40.0


@dataclass
class Outcome:
    """What one experiment measured (``None``: did not happen)."""

    experiment: str
    sent: int = 0
    acked: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    rejected: int = 0
    unacked: int = 0
    #: Events not acked when the fault healed, and from the heal to the first ack and to all of them.
    backlog: int = 0
    first_ack_s: float | None = None
    all_acked_s: float | None = None
    #: From the fault to the first /healthz 503, and from the heal to the first 200 (slowest node).
    health_503_s: float | None = None
    health_200_s: float | None = None
    #: /healthz answers while the fault lasted (after its first second): status -> count.
    health_during: dict[str, int] = field(default_factory=dict)
    #: Log records per second while the fault lasted: all of them, and the most of any one fault (after
    #: its first line); tracebacks logged meanwhile.
    log_per_s: float = 0.0
    log_per_fault_s: float = 0.0
    noisiest_fault: str = ""
    tracebacks: int = 0
    #: The bridge's CPU (% of one core) while the fault lasted with no load.
    idle_cpu_pct: float | None = None
    #: Events first acked in each second after the heal (how the backlog drained).
    drain: list[int] = field(default_factory=list)
    #: How slow this machine was before the fault: the 95th percentile of an event's time to its ack,
    #: and of a /healthz answer. The 1 s promises are checked with these added (a loaded machine is
    #: slow at everything; what the promise is about is the time on top).
    ack_p95_s: float = 0.0
    health_p95_s: float = 0.0
    fault_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BridgeNode:
    """``telecare-bridge run`` as a process of its own, with a config file, a log file and a port."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        broker_url: str,
        store_url: str,
        topic_root: str,
        keepalive: int,
        shared_group: str = "",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.workdir = workdir
        self.http_port = free_port()
        self.config = workdir / "config.yaml"
        self.log = workdir / "bridge.log"
        self.proc: asyncio.subprocess.Process | None = None
        settings: dict[str, Any] = {
            "node_id": name,
            "topic_root": topic_root,
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "mqtt": {
                "url": broker_url,
                "client_id": f"{name}-{topic_root}",
                "keepalive": keepalive,
                "shared_group": shared_group,
            },
            "store": {"url": store_url},
            "log": {"level": "INFO"},
            "escalation": {"policies": {1: CHAOS_POLICY}},
        }
        self.config.write_text(json.dumps(settings, indent=2))  # JSON is YAML

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until ``/healthz`` answers 200."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")}
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge.cli",
                "run",
                "--config",
                str(self.config),
                env=env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"bridge {self.name} exited: {self.log.read_text()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)

    def signal(self, signum: int) -> float:
        assert self.proc is not None
        self.proc.send_signal(signum)
        return time.monotonic()

    def cpu_seconds(self) -> float:
        """CPU the process's threads have used so far, to the nanosecond (each thread's ``schedstat``).

        ``/proc/PID/stat`` counts in clock ticks of 10 ms: over the 2 s quiet spell that is 0.5 % of a
        core a tick, and a bridge using 1 % read anywhere from 0.5 % to 2.5 % (issue 17's bound is 2 %).
        A thread that ends between two readings takes its time with it, so this can only read low
        by what such a thread used; the bridge's threads (lanes, checkpoints, executors) live on."""
        assert self.proc is not None
        total_ns = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that just ended
                total_ns += int((task / "schedstat").read_text().split()[0])
        return total_ns / 1e9

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Poll:
    sent: float
    answered: float
    status: str  # "200", "503", or "no answer"


class HealthWatch:
    """Polls a node's ``/healthz`` every ``every_s`` (each poll waits at most ``timeout_s``)."""

    def __init__(self, url: str, *, every_s: float = 0.05, timeout_s: float = 1.0) -> None:
        self._url = url + "/healthz"
        self._every = every_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.polls: list[Poll] = []
        self._task: asyncio.Task[None] | None = None
        self._polling = asyncio.Event()
        self._polling.set()

    def pause(self) -> None:
        """No polls until :meth:`resume` (while the bridge's own CPU is measured)."""
        self._polling.clear()

    def resume(self) -> None:
        self._polling.set()

    async def __aenter__(self) -> HealthWatch:
        self._task = asyncio.create_task(self._run(), name="health-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while True:
                await self._polling.wait()
                sent = time.monotonic()
                try:
                    async with session.get(self._url) as resp:
                        status = str(resp.status)
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError):
                    status = "no answer"
                self.polls.append(Poll(sent, time.monotonic(), status))
                await asyncio.sleep(max(0.0, self._every - (time.monotonic() - sent)))

    def first(self, status: str, after: float) -> float | None:
        """When the first poll sent after ``after`` answered ``status`` (its answer's time)."""
        return next((p.answered for p in self.polls if p.sent >= after and p.status == status), None)

    def during(self, start: float, end: float) -> Counter[str]:
        return Counter(p.status for p in self.polls if start <= p.sent and p.answered <= end)


@dataclass
class LogTally:
    records: int = 0
    tracebacks: int = 0
    by_fault: Counter[str] = field(default_factory=Counter)


def fault_key(logger: str, message: str) -> str:
    """Which fault a log record speaks of: its summary's or start's ``what``, else its logger."""
    found = SUMMARY.match(message)
    if found:
        return found.group(1)
    head, sep, _ = message.partition(": ")
    return head if sep else logger


def tally_log(path: Path, start_wall: float, end_wall: float) -> LogTally:
    """Count the log records written between two wall-clock times (tracebacks too)."""
    tally = LogTally()
    inside = False
    for line in path.read_text(errors="replace").splitlines():
        found = RECORD.match(line)
        if found is None:
            if inside and line.startswith("Traceback"):
                tally.tracebacks += 1
            continue
        at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        inside = start_wall <= at <= end_wall
        if inside:
            tally.records += 1
            tally.by_fault[fault_key(found.group(3), found.group(4))] += 1
    return tally


StoredReader = Callable[[str], Awaitable[list[tuple[str, str]]]]


def sqlite_reader(path: Path) -> StoredReader:
    """The (device_id, event_id) rows a SQLite store holds for devices whose id starts with ``prefix``."""

    async def read(prefix: str) -> list[tuple[str, str]]:
        def rows() -> list[tuple[str, str]]:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                found = conn.execute(
                    "SELECT device_id, event_id FROM events WHERE device_id LIKE ?", (prefix + "%",)
                ).fetchall()
                return [(str(d), str(e)) for d, e in found]
            finally:
                conn.close()

        return await asyncio.to_thread(rows)

    return read


def postgres_reader(url: str) -> StoredReader:
    async def read(prefix: str) -> list[tuple[str, str]]:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            found = await conn.fetch(
                "SELECT device_id, event_id FROM events WHERE device_id LIKE $1", prefix + "%"
            )
        finally:
            await conn.close()
        return [(str(r["device_id"]), str(r["event_id"])) for r in found]

    return read


def count_outcome(outcome: Outcome, fleet: FleetLoad, rows: list[tuple[str, str]]) -> None:
    """Sent, acked, stored, lost, duplicated and rejected, from what the units saw and the store holds."""
    stored = set(rows)
    outcome.sent = len(fleet.events)
    outcome.stored = len(stored & fleet.events.keys())
    outcome.unacked = len(fleet.pending)
    lost = duplicated = rejected = acked = 0
    for key, event in fleet.events.items():
        results = [a.result for a in event.acks]
        if any(r in ("accepted", "duplicate") for r in results):
            acked += 1
            if key not in stored:
                lost += 1  # acked, so the unit stopped sending it, and not stored
        if "rejected" in results:
            rejected += 1
            if key not in stored:
                lost += 1
        alerts = {a.alert_id for a in event.acks if a.result != "rejected"}
        if results.count("accepted") > 1 or len(alerts) > 1:
            duplicated += 1  # stored twice, or joined to two alerts
    outcome.acked = acked
    outcome.lost = lost
    outcome.rejected = rejected
    outcome.duplicated = duplicated + (len(rows) - len(stored))


def wall(moment: float) -> float:
    """A ``time.monotonic()`` moment as wall-clock seconds (to compare with log timestamps)."""
    return time.time() - (time.monotonic() - moment)


@dataclass
class Timeline:
    fault: float = 0.0
    heal: float = 0.0
    idle: tuple[float, float] | None = None
    per_node_503: dict[str, float | None] = field(default_factory=dict)


def measure(
    outcome: Outcome,
    fleet: FleetLoad,
    nodes: list[BridgeNode],
    watches: list[HealthWatch],
    times: Timeline,
    fault_start_wall: float,
    heal_wall: float,
) -> None:
    """Timings around the heal, /healthz during the fault, and the log, into ``outcome``."""
    outcome.fault_s = round(times.heal - times.fault, 2)
    first = fleet.first_ack_after(times.heal)
    outcome.first_ack_s = None if first is None else round(first - times.heal, 3)
    drained: Counter[int] = Counter(
        int(acked - times.heal)
        for e in fleet.events.values()
        if (acked := e.acked_at) is not None and acked >= times.heal
    )
    outcome.drain = [drained[n] for n in range(max(drained, default=-1) + 1)]
    backlog_done = fleet.backlog_acked_at(times.heal)
    outcome.all_acked_s = None if backlog_done is None else round(backlog_done - times.heal, 3)
    downs = [w.first("503", times.fault) for w in watches]
    ups = [w.first("200", times.heal) for w in watches]
    outcome.health_503_s = None if None in downs else round(max(d for d in downs if d) - times.fault, 3)
    outcome.health_200_s = None if None in ups else round(max(u for u in ups if u) - times.heal, 3)
    during: Counter[str] = Counter()
    for watch in watches:
        during += watch.during(times.fault + 1.0, times.heal)
    outcome.health_during = dict(during)
    span = max(times.heal - times.fault, 1.0)
    per_fault: Counter[str] = Counter()
    for node in nodes:
        tally = tally_log(node.log, fault_start_wall, heal_wall)
        outcome.tracebacks += tally.tracebacks
        outcome.log_per_s += tally.records / span
        for key, n in tally.by_fault.items():
            per_fault[f"{node.name}: {key}"] = n
    outcome.log_per_s = round(outcome.log_per_s, 2)
    if per_fault:
        key, n = per_fault.most_common(1)[0]
        outcome.log_per_fault_s = round((n - 1) / span, 2)
        outcome.noisiest_fault = key


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)


def machine_pace(
    outcome: Outcome, fleet: FleetLoad, watches: list[HealthWatch], start: float, end: float
) -> None:
    """The ack and /healthz latencies between ``start`` and ``end`` (before the fault)."""
    outcome.ack_p95_s = p95(
        [
            acked - e.first_at
            for e in fleet.events.values()
            if start <= e.first_at < end and (acked := e.acked_at) is not None and acked < end
        ]
    )
    outcome.health_p95_s = p95(
        [p.answered - p.sent for w in watches for p in w.polls if start <= p.sent and p.answered < end]
    )


def backlog_at(fleet: FleetLoad, moment: float) -> int:
    return sum(1 for e in fleet.events.values() if e.first_at < moment and (e.acked_at or 1e18) >= moment)


class Lab:
    """Where experiments run: a work directory for their files and the sizes they use."""

    def __init__(self, workdir: Path, sizes: Sizes | None = None) -> None:
        self.workdir = workdir
        self.sizes = sizes or Sizes()
        self._runs = 0

    def room(self, name: str) -> Path:
        self._runs += 1
        path = self.workdir / f"{self._runs:02d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path


def topic_root_for(name: str) -> str:
    return "chaos" + re.sub(r"[^A-Za-z0-9]", "", name)[:20] + str(int(time.time() * 1000) % 100000)


def by_status(polls: list[Poll]) -> dict[str, list[float]]:
    """Poll answer times by status (for reports)."""
    found: dict[str, list[float]] = defaultdict(list)
    for poll in polls:
        found[poll.status].append(poll.answered)
    return found


#: The table's columns: heading and how to read it off an outcome.
COLUMNS: list[tuple[str, Callable[[Outcome], object]]] = [
    ("experiment", lambda o: o.experiment),
    ("fault s", lambda o: o.fault_s),
    ("sent", lambda o: o.sent),
    ("acked", lambda o: o.acked),
    ("stored", lambda o: o.stored),
    ("lost", lambda o: o.lost),
    ("dup", lambda o: o.duplicated),
    ("backlog", lambda o: o.backlog),
    ("1st ack s", lambda o: o.first_ack_s),
    ("all acked s", lambda o: o.all_acked_s),
    ("503 after s", lambda o: o.health_503_s),
    ("200 after s", lambda o: o.health_200_s),
    ("/healthz in fault", lambda o: " ".join(f"{k}x{v}" for k, v in sorted(o.health_during.items()))),
    ("log/s", lambda o: o.log_per_s),
    ("log/s/fault", lambda o: o.log_per_fault_s),
    ("tracebacks", lambda o: o.tracebacks),
    ("idle CPU %", lambda o: o.idle_cpu_pct),
    ("ack p95 s", lambda o: o.ack_p95_s),
]


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a plain-text table, one row each ("-": did not happen)."""
    rows = [[name for name, _ in COLUMNS]]
    for outcome in outcomes:
        rows.append(["-" if (v := read(outcome)) is None else str(v) for _, read in COLUMNS])
    widths = [max(len(row[n]) for row in rows) for n in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
