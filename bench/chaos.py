"""Chaos bench (issue 17): the fault experiments of ``tests/chaos/`` with a bigger fleet and longer
faults, and a table of what each cost.

Each experiment runs real ``telecare-bridge run`` processes against private Mosquitto and PostgreSQL
processes it starts itself (never the machine's own services) under a fleet of simulated units that
retry every ``--retry-s`` until acked (``simulators/chaos.py``): a broker SIGKILL with and without
persistence, a half-open broker, a PostgreSQL immediate stop with one and two nodes, SQLite on a tmpfs
that fills and then grows (needs root), and a SIGSTOP of the bridge longer than 1.5 x keepalive.

Columns: events sent, acked, stored, lost, duplicated; the backlog at the heal; seconds from the heal to
the first ack and to the last of the backlog; from the fault to /healthz 503 and from the heal to 200;
/healthz answers during the fault; log records a second during the fault, and the most of any one
fault after its first line; tracebacks; the bridge's CPU while the units were quiet; the machine's
ack p95 before the fault (a loaded machine is slow at everything). The load average is printed before
and after: compare runs only at similar loads.

    .venv/bin/python bench/chaos.py [--only broker,half-open,postgres,disk,pause] [--units 2000]
        [--rate 400] [--retry-s 3] [--retry-max-s 30] [--fault-s 5] [--idle-s 5] [--pause-s 50]
        [--keepalive 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

from simulators import chaos
from simulators.chaos_rig import Lab, Outcome, Sizes, table
from simulators.outages import FaultUnavailable, PrivatePostgres

GROUPS = ("broker", "half-open", "postgres", "disk", "pause")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(lab: Lab, groups: set[str]) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def keep(name: str, running: object) -> None:
        try:
            outcome = await running  # type: ignore[misc]
        except FaultUnavailable as exc:
            print(f"{name}: not run here: {exc}", flush=True)
            return
        outcomes.append(outcome)
        print(json.dumps(outcome.as_dict()), flush=True)

    if "broker" in groups:
        await keep("broker", chaos.broker_kill(lab, persistence=False))
        await keep("broker", chaos.broker_kill(lab, persistence=True))
    if "half-open" in groups:
        await keep("half-open", chaos.half_open_broker(lab))
    if "postgres" in groups:

        async def both(pg: PrivatePostgres) -> list[Outcome]:
            return [
                await chaos.postgres_crash(lab, pg, nodes=1),
                await chaos.postgres_crash(lab, pg, nodes=2),
            ]

        try:
            for outcome in await chaos.with_postgres(lab, both):
                outcomes.append(outcome)
                print(json.dumps(outcome.as_dict()), flush=True)
        except FaultUnavailable as exc:
            print(f"postgres: not run here: {exc}", flush=True)
    if "disk" in groups:
        await keep("disk", chaos.full_disk(lab, size_mb=32))
    if "pause" in groups:
        await keep("pause", chaos.bridge_pause(lab))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated, of {', '.join(GROUPS)}")
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=400.0, help="events a second from the whole fleet")
    parser.add_argument("--retry-s", type=float, default=3.0, help="a unit's retry of an unacked event")
    parser.add_argument(
        "--retry-max-s",
        type=float,
        default=None,
        help="units double their retry wait up to this (default: no)",
    )
    parser.add_argument("--fault-s", type=float, default=5.0, help="seconds of fault under load")
    parser.add_argument(
        "--idle-s", type=float, default=5.0, help="then seconds of fault with the units quiet"
    )
    parser.add_argument("--pause-s", type=float, default=50.0, help="SIGSTOP length")
    parser.add_argument("--keepalive", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args()
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        parser.error(f"unknown experiment group(s): {', '.join(sorted(unknown))}")
    sizes = Sizes(
        units=args.units,
        rate=args.rate,
        retry_s=args.retry_s,
        retry_max_s=args.retry_max_s,
        warm_s=3.0,
        fault_s=args.fault_s,
        idle_s=args.idle_s,
        pause_s=args.pause_s,
        keepalive=args.keepalive,
        drain_s=180.0,
    )
    workdir = Path(tempfile.mkdtemp(prefix="chaos-bench-"))
    print(f"load average before: {load()}", flush=True)
    print(f"sizes: {sizes}", flush=True)
    try:
        outcomes = asyncio.run(run(Lab(workdir, sizes), groups))
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average after: {load()}")
    print(table(outcomes))
    for outcome in outcomes:
        if outcome.notes:
            print(f"{outcome.experiment}: {'; '.join(outcome.notes)}")
    whole = all(o.lost == 0 and o.duplicated == 0 and o.rejected == 0 and o.unacked == 0 for o in outcomes)
    print("PASS: nothing lost, nothing duplicated" if whole else "FAIL: events lost, duplicated or unacked")


if __name__ == "__main__":
    main()
