"""Fault experiments (issue 17): a real bridge under a fleet's load while its broker, database, disk or
own process fails, and what that cost -- the suite ``tests/chaos/`` runs small ones in CI, and
``bench/chaos.py`` longer ones with a table.

Each experiment starts its own broker (and database, or disk), one or two ``telecare-bridge run``
processes and a :class:`simulators.fleet_load.FleetLoad`, then: load for ``warm_s``; the fault; load for
``fault_s``; the units quiet for ``idle_s`` (the bridge's CPU measured: an outage with no load); load
again; the heal; then every event is retried until acked and the store is read back.

Measured (:class:`simulators.chaos_rig.Outcome`): events sent, acked, stored, lost, duplicated; from the
heal to the first ack and to the last ack of the backlog; from the fault to ``/healthz`` 503 and from
the heal to 200; ``/healthz`` answers during the fault; log records a second during the fault (all,
and the noisiest single fault after its first line); tracebacks; idle CPU.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from simulators.chaos_rig import (
    RECORD,
    SETTLE_S,
    BridgeNode,
    HealthWatch,
    Lab,
    Outcome,
    StoredReader,
    Timeline,
    backlog_at,
    count_outcome,
    machine_pace,
    measure,
    postgres_reader,
    sqlite_reader,
    topic_root_for,
    wall,
)
from simulators.fleet_load import FleetLoad
from simulators.outages import HalfOpenBroker, PrivateMosquitto, PrivatePostgres, SmallDisk

#: The line the intake logs when a batch of events first fails to commit: where a store fault begins
#: for the bridge (a disk that fills may still take a few commits in space SQLite already holds).
STORE_FAULT_LINE = "store cannot commit events"
#: Longest wait for the backlog with new events still coming, after the heal (seconds).
BACKLOG_WAIT_S = 30.0


@dataclass
class Fault:
    """How to break and heal the world; each returns the moment (``time.monotonic()``) it happened."""

    inject: Callable[[], Awaitable[float]]
    heal: Callable[[], Awaitable[float]]
    #: Keep the units quiet for ``idle_s`` during the fault and measure the bridge's CPU.
    quiet_spell: bool = True
    #: How long the fault lasts with load (``None``: ``Sizes.fault_s``).
    length_s: float | None = None
    #: A log line that marks when the bridge itself met the fault (``None``: the injection).
    felt_line: str | None = None


async def run_fault(
    lab: Lab,
    name: str,
    *,
    broker_port: int,
    nodes: list[BridgeNode],
    read_stored: StoredReader,
    topic_root: str,
    fault: Fault,
) -> Outcome:
    """Load, fault, quiet spell, heal, drain; then count and measure (see the module docstring)."""
    sizes = lab.sizes
    outcome = Outcome(name)
    times = Timeline()
    watches = [HealthWatch(node.url) for node in nodes]
    async with AsyncExitStack() as stack:
        for watch in watches:
            await stack.enter_async_context(watch)
        fleet = await stack.enter_async_context(
            FleetLoad(
                "127.0.0.1",
                broker_port,
                topic_root=topic_root,
                units=sizes.units,
                rate=sizes.rate,
                retry_s=sizes.retry_s,
                retry_max_s=sizes.retry_max_s,
            )
        )
        warm = time.monotonic()
        await asyncio.sleep(sizes.warm_s)
        machine_pace(outcome, fleet, watches, warm + 0.5, time.monotonic())
        times.fault = await fault.inject()
        await asyncio.sleep(fault.length_s if fault.length_s is not None else sizes.fault_s)
        if fault.quiet_spell and sizes.idle_s > 0:
            fleet.pause()
            for watch in watches:  # /healthz requests are work too: the bridge alone is measured
                watch.pause()
            await asyncio.sleep(SETTLE_S)
            used = sum(node.cpu_seconds() for node in nodes)
            began = time.monotonic()
            await asyncio.sleep(sizes.idle_s)
            spent = sum(node.cpu_seconds() for node in nodes) - used
            outcome.idle_cpu_pct = round(100 * spent / (time.monotonic() - began) / len(nodes), 2)
            for watch in watches:
                watch.resume()
            fleet.resume()
            await asyncio.sleep(0.3)  # the units send again before the heal
        times.heal = await fault.heal()
        outcome.backlog = backlog_at(fleet, times.heal)
        heal = times.heal
        # New events go on while the backlog drains (as in life), for at most BACKLOG_WAIT_S; then they
        # stop and everything left is retried until acked (or drain_s runs out).
        await fleet.until(
            lambda: fleet.backlog_acked_at(heal) is not None, min(BACKLOG_WAIT_S, sizes.drain_s)
        )
        fleet.stop_new()
        if not await fleet.wait_all_acked(sizes.drain_s):
            outcome.notes.append(f"{len(fleet.pending)} events still unacked after {sizes.drain_s:g} s")
        await asyncio.sleep(1.0)  # /healthz polls after the heal
    if fault.felt_line is not None:
        felt = first_log_line(nodes, fault.felt_line, wall(times.fault))
        if felt is None:
            outcome.notes.append(f"no {fault.felt_line!r} line: the store never failed")
        else:
            outcome.notes.append(f"the bridge met the fault {felt - wall(times.fault):.2f} s after it began")
            times.fault = times.fault + (felt - wall(times.fault))
    outcome.notes.append(
        f"fault at {clock_time(wall(times.fault))}, healed at {clock_time(wall(times.heal))}"
    )
    count_outcome(outcome, fleet, await read_stored(fleet.prefix))
    measure(outcome, fleet, nodes, watches, times, wall(times.fault), wall(times.heal))
    return outcome


def clock_time(at: float) -> str:
    """A wall-clock moment as the log writes it (``HH:MM:SS,mmm``)."""
    return datetime.fromtimestamp(at).strftime("%H:%M:%S,%f")[:-3]


def first_log_line(nodes: list[BridgeNode], text: str, after_wall: float) -> float | None:
    """When the first log record containing ``text`` was written after ``after_wall`` (any node)."""
    found: list[float] = []
    for node in nodes:
        for line in node.log.read_text(errors="replace").splitlines():
            record = RECORD.match(line)
            if record is None or text not in record.group(4):
                continue
            at = datetime.strptime(record.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= after_wall - 0.001:
                found.append(at)
                break
    return min(found, default=None)


async def _nodes(stack: AsyncExitStack, nodes: list[BridgeNode]) -> list[BridgeNode]:
    for node in nodes:
        stack.push_async_callback(node.stop)
    await asyncio.gather(*(node.start() for node in nodes))
    return nodes


async def _sqlite_node(
    stack: AsyncExitStack, lab: Lab, room: Path, broker: PrivateMosquitto, root: str, db: Path | None = None
) -> list[BridgeNode]:
    """One bridge node on SQLite (``db``, else ``room/node-1/bridge.db``), stopped with ``stack``."""
    return await _nodes(
        stack,
        [
            BridgeNode(
                room / "node-1",
                "node-1",
                broker_url=broker.url,
                store_url=str(db or room / "node-1" / "bridge.db"),
                topic_root=root,
                keepalive=lab.sizes.keepalive,
            )
        ],
    )


# -- the experiments ---------------------------------------------------------------------------------


async def broker_kill(lab: Lab, *, persistence: bool) -> Outcome:
    """Mosquitto killed with SIGKILL under load, started again on the same port after the fault."""
    name = f"broker kill -9, {'with' if persistence else 'no'} persistence"
    room = lab.room("broker-kill" + ("-persistent" if persistence else ""))
    broker = PrivateMosquitto(room / "mosquitto", persistence=persistence)
    root = topic_root_for(name)
    async with AsyncExitStack() as stack:
        await broker.start()
        stack.push_async_callback(broker.stop)
        nodes = await _sqlite_node(stack, lab, room, broker, root)
        return await run_fault(
            lab,
            name,
            broker_port=broker.unit_port,
            nodes=nodes,
            read_stored=sqlite_reader(room / "node-1" / "bridge.db"),
            topic_root=root,
            fault=Fault(inject=broker.kill, heal=broker.start),
        )


async def postgres_crash(lab: Lab, pg: PrivatePostgres, *, nodes: int) -> Outcome:
    """PostgreSQL stopped ``-m immediate`` under load (one node, or two on a shared subscription) and
    started again (crash recovery) after the fault. ``pg`` is running; it is running again after."""
    name = f"PostgreSQL immediate stop, {nodes} node{'s' if nodes > 1 else ''}"
    room = lab.room(f"postgres-{nodes}")
    broker = PrivateMosquitto(room / "mosquitto")
    root = topic_root_for(name)
    url = await pg.create_database(root.lower())
    async with AsyncExitStack() as stack:
        await broker.start()
        stack.push_async_callback(broker.stop)
        group = "bridge" if nodes > 1 else ""
        running = await _nodes(
            stack,
            [
                BridgeNode(
                    room / f"node-{n}",
                    f"node-{n}",
                    broker_url=broker.url,
                    store_url=url,
                    topic_root=root,
                    keepalive=lab.sizes.keepalive,
                    shared_group=group,
                )
                for n in range(1, nodes + 1)
            ],
        )
        return await run_fault(
            lab,
            name,
            broker_port=broker.unit_port,
            nodes=running,
            read_stored=postgres_reader(url),
            topic_root=root,
            fault=Fault(inject=pg.crash, heal=pg.start),
        )


async def full_disk(lab: Lab, *, size_mb: int = 16) -> Outcome:
    """SQLite on a tmpfs of ``size_mb`` that fills up under load (a file takes its free space) and then
    grows to twice the size. Raises :class:`simulators.outages.FaultUnavailable` when it cannot mount."""
    name = "SQLite disk full, then grown"
    room = lab.room("full-disk")
    broker = PrivateMosquitto(room / "mosquitto")
    disk = SmallDisk(room / "disk", size_mb * 1024 * 1024)
    root = topic_root_for(name)
    disk.mount()
    try:
        async with AsyncExitStack() as stack:
            await broker.start()
            stack.push_async_callback(broker.stop)
            db = disk.path / "bridge.db"
            nodes = await _sqlite_node(stack, lab, room, broker, root, db)

            async def fill() -> float:
                disk.fill()
                return time.monotonic()

            async def grow() -> float:
                disk.grow(2 * disk.size)
                return time.monotonic()

            return await run_fault(
                lab,
                name,
                broker_port=broker.unit_port,
                nodes=nodes,
                read_stored=sqlite_reader(db),
                topic_root=root,
                fault=Fault(inject=fill, heal=grow, felt_line=STORE_FAULT_LINE),
            )
    finally:
        disk.unmount()


async def bridge_pause(lab: Lab) -> Outcome:
    """The bridge process stopped (SIGSTOP) for ``pause_s`` -- longer than 1.5 x keepalive, so the
    broker drops its connections -- under load, then continued (SIGCONT)."""
    name = f"bridge SIGSTOP {lab.sizes.pause_s:g} s (keepalive {lab.sizes.keepalive} s)"
    room = lab.room("pause")
    broker = PrivateMosquitto(room / "mosquitto")
    root = topic_root_for(name)
    async with AsyncExitStack() as stack:
        await broker.start()
        stack.push_async_callback(broker.stop)
        nodes = await _sqlite_node(stack, lab, room, broker, root)
        node = nodes[0]

        async def pause() -> float:
            return node.signal(signal.SIGSTOP)

        async def resume() -> float:
            return node.signal(signal.SIGCONT)

        return await run_fault(
            lab,
            name,
            broker_port=broker.unit_port,
            nodes=nodes,
            read_stored=sqlite_reader(room / "node-1" / "bridge.db"),
            topic_root=root,
            fault=Fault(inject=pause, heal=resume, quiet_spell=False, length_s=lab.sizes.pause_s),
        )


async def half_open_broker(lab: Lab) -> Outcome:
    """The broker killed and, on the bridge's port, a server that accepts connections and never answers
    (no CONNACK); after the fault that server dies (its connections close) and Mosquitto starts again.
    The units use the broker's other listener: to them it is down, so what is measured is the bridge's
    way back, not the units' own CONNECT timeouts."""
    name = "half-open broker (accepts, never answers)"
    room = lab.room("half-open")
    broker = PrivateMosquitto(room / "mosquitto")
    hung = HalfOpenBroker(broker.port)
    root = topic_root_for(name)
    async with AsyncExitStack() as stack:
        await broker.start()
        stack.push_async_callback(broker.stop)
        stack.push_async_callback(hung.close)
        nodes = await _sqlite_node(stack, lab, room, broker, root)

        async def hang() -> float:
            at = await broker.kill()
            await hung.start()
            return at

        async def heal() -> float:
            await hung.close()
            return await broker.start()

        outcome = await run_fault(
            lab,
            name,
            broker_port=broker.unit_port,
            nodes=nodes,
            read_stored=sqlite_reader(room / "node-1" / "bridge.db"),
            topic_root=root,
            fault=Fault(inject=hang, heal=heal),
        )
        outcome.notes.append(f"the hung broker accepted {hung.accepted} connections")
        return outcome


async def with_postgres(
    lab: Lab, run: Callable[[PrivatePostgres], Awaitable[list[Outcome]]]
) -> list[Outcome]:
    """Run experiments against one private PostgreSQL cluster, created and removed here."""
    pg = PrivatePostgres()
    try:
        await pg.init()
        await pg.start()
        return await run(pg)
    finally:
        await pg.remove()
