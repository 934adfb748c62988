"""p50/p99 of the call webhooks at 50 concurrent calls, beside a bare aiohttp handler, same run.

    .venv/bin/python bench/voice_webhooks.py [--calls 50] [--rounds 8] [--pause 0.2] [--spread 1.0]

A real bridge (SQLite store with group commit, embedded broker, telephony on, Twilio pointed at the local
stand-in) runs in this process with 50 units registered, each with an open fall alert. A load generator in
a *separate process* (so its CPU does not count against the servers) plays ``--calls`` calls at once, each
``--rounds`` times in a row. The calls of a round come in within ``--spread`` seconds of each other (fifty
units calling after a flood of alarms; ``--spread 0``: all in the same instant) and each then posts its
next webhook ``--pause`` seconds after the answer to the last (Twilio's webhooks of one call come seconds
apart; 0.2 s is a squeeze; ``--pause 0`` keeps fifty webhooks in flight all the time, a saturation test).
Every call is what Twilio posts for a unit's speech call to the centre:

1. ``POST /twilio/voice`` (``Direction=inbound``): verify, refuse replays, match the unit's SIM to its open
   alert, store the call and its timeline entry, answer with the conference TwiML;
2. ``POST /twilio/calls/conference`` ``participant-join`` and ``participant-leave`` of the caller;
3. ``POST /twilio/calls/conference`` ``conference-end``;
4. ``POST /twilio/calls/recording`` (a recording is ready; it goes on the timeline).

Every webhook is signed as Twilio signs it and carries its own ids (no replays). Nobody is available, so
the calls wait and then end: the bridge places no legs and the numbers measure the webhooks alone. The
bare handler reads the same form and answers ``<Response/>`` with the same arrivals: the floor for any
aiohttp handler on this machine. Target: p99 under 50 ms for every call webhook. The server's CPU per
request and the event loop's own lag are printed too: on a machine other work keeps busy, the tail is the
machine's (the bare handler's p99 and the loop lag show how much of it).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from bridge.config import load_config
from bridge.service import Bridge
from devices.cancellation import stop
from devices.events import DeviceEvent
from devices.vocabulary import EventType
from simulators.twilio_server import TwilioServer

CENTRE = "+441632960001"
TARGET_P99_MS = 50.0
HEADER = f"{'webhook':<22} {'requests':>8} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}"


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def unit_sim(n: int) -> str:
    return f"+4477009{n:05d}"


# -- the load generator (child process) -------------------------------------------------------------
async def _play(
    base: str, token: str, calls: int, rounds: int, pause: float, spread: float, bare: bool
) -> dict[str, list[float]]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(token)
    latencies: dict[str, list[float]] = defaultdict(list)
    conference_id = re.compile(r"telecare-call-(\d+)")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=calls)) as session:

        async def post(kind: str, path: str, params: dict[str, str]) -> str:
            url = base + (path if not bare else "/bare")
            headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
            started = time.perf_counter()
            async with session.post(url, data=params, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RuntimeError(f"{kind}: HTTP {resp.status}: {text[:200]}")
            latencies["bare" if bare else kind].append(time.perf_counter() - started)
            return text

        async def one_call(n: int) -> None:
            call_sid, conference = sid("CA"), sid("CF")
            inbound = {"AccountSid": "AC" + "0" * 32, "CallSid": call_sid, "From": unit_sim(n), "To": CENTRE,
                       "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
            twiml = await post("voice (inbound)", "/twilio/voice", inbound)
            found = conference_id.search(twiml)
            call_id = found.group(1) if found else "1"
            events = f"/twilio/calls/conference?call={call_id}"
            for seq, event in enumerate(("participant-join", "participant-leave"), 1):
                await asyncio.sleep(pause)
                params = {"ConferenceSid": conference, "StatusCallbackEvent": event, "CallSid": call_sid,
                          "ParticipantLabel": "caller", "SequenceNumber": str(seq)}  # fmt: skip
                await post(f"conference {event[12:]}", events, params)
            await asyncio.sleep(pause)
            end = {
                "ConferenceSid": conference,
                "StatusCallbackEvent": "conference-end",
                "SequenceNumber": "3",
            }
            await post("conference end", events, end)
            await asyncio.sleep(pause)
            recording = {"RecordingSid": sid("RE"), "RecordingStatus": "completed", "RecordingDuration": "42",
                         "RecordingChannels": "1", "ConferenceSid": conference}  # fmt: skip
            await post("recording", f"/twilio/calls/recording?call={call_id}", recording)

        together = asyncio.Barrier(calls)

        async def caller(n: int) -> None:
            for _ in range(rounds):
                await together.wait()  # a round's calls come in within `spread` seconds of each other
                await asyncio.sleep(random.uniform(0, spread))
                await one_call(n)

        await asyncio.gather(*(caller(n) for n in range(calls)))
    return dict(latencies)


def _child(
    base: str, token: str, calls: int, rounds: int, pause: float, spread: float, bare: bool, out: Any
) -> None:
    random.seed(15)  # the same arrivals for the bare handler and the bridge
    out.send(asyncio.run(_play(base, token, calls, rounds, pause, spread, bare)))


async def _measure(
    base: str, token: str, args: argparse.Namespace, *, bare: bool
) -> tuple[dict[str, list[float]], float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(base, token, args.calls, args.rounds, args.pause, args.spread, bare, child)
    )
    started = time.perf_counter()
    proc.start()
    try:
        while not parent.poll():
            await asyncio.sleep(0.05)  # keep serving while the child plays the calls
            if not proc.is_alive() and not parent.poll():
                raise RuntimeError("the load generator died")
        latencies: dict[str, list[float]] = parent.recv()
    finally:
        proc.join(10)
    return latencies, time.perf_counter() - started


async def _bare_app() -> tuple[web.AppRunner, str]:
    async def bare(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(text="<Response/>", content_type="application/xml")

    app = web.Application()
    app.router.add_post("/bare", bare)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _report(name: str, latencies: list[float], seconds: float) -> float:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    p50 = statistics.median(ordered) * 1000
    print(
        f"{name:<22} {len(ordered):>8} {len(ordered) / seconds:>9.0f} {p50:>9.2f} {p99:>9.2f} "
        f"{ordered[-1] * 1000:>9.2f}",
        flush=True,
    )
    return p99


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        async with TwilioServer() as twilio:
            env = {
                "TELECARE_STORE__URL": str(Path(tmp) / "bench.db"),
                "TELECARE_HTTP__PORT": "0",
                "TELECARE_MQTT__EMBEDDED_PORT": "0",
                "TELECARE_NODE_ID": "bench",
                "TELECARE_LOG__LEVEL": "ERROR",
                "TELECARE_TWILIO__ENABLED": "true",
                "TELECARE_TWILIO__ACCOUNT_SID": twilio.account_sid,
                "TELECARE_TWILIO__AUTH_TOKEN": twilio.auth_token,
                "TELECARE_TWILIO__FROM_NUMBER": "+441632960000",
                "TELECARE_TWILIO__BASE_URL": twilio.base_url,
                "TELECARE_ESCALATION__POLICIES": '{"1": [], "2": [], "3": []}',
                "TELECARE_TELEPHONY__ENABLED": "true",
                "TELECARE_TELEPHONY__NUMBERS": f'["{CENTRE}"]',
                "TELECARE_TELEPHONY__OVERFLOW_AFTER_S": "3600",
            }
            config = load_config(None, environ=env)
            bare_runner, bare_base = await _bare_app()
            async with Bridge(config) as bridge:
                serving = asyncio.create_task(bridge.serve(), name="bench-bridge")
                try:
                    for n in range(args.calls):
                        await bridge.store.devices.upsert_device(f"unit-{n}", "gsm_unit")
                        await _set_sim(bridge, f"unit-{n}", unit_sim(n))
                        await bridge.intake.submit(
                            DeviceEvent(f"unit-{n}", f"fall-{n}", EventType.FALL, _now(), source="mqtt")
                        )
                    print(
                        f"{args.calls} calls at once, {args.rounds} in a row each: "
                        f"{args.calls * args.rounds} calls, each round's within {args.spread:g} s; "
                        f"5 webhooks per call {args.pause:g} s apart\n"
                    )
                    print(HEADER)
                    cpu = time.process_time()
                    bare, bare_s = await _measure(bare_base, twilio.auth_token, args, bare=True)
                    bare_cpu = (time.process_time() - cpu) / len(bare["bare"])
                    _report("bare aiohttp", bare["bare"], bare_s)
                    cpu = time.process_time()
                    lags: list[float] = []
                    watch = asyncio.create_task(_loop_lag(lags), name="loop-lag")
                    real, real_s = await _measure(bridge.http_url, twilio.auth_token, args, bare=False)
                    await stop(watch)
                    real_cpu = (time.process_time() - cpu) / sum(len(v) for v in real.values())
                    worst = 0.0
                    every: list[float] = []
                    for name, latencies in real.items():
                        worst = max(worst, _report(name, latencies, real_s))
                        every += latencies
                    _report("all call webhooks", every, real_s)
                    print(
                        f"\nserver CPU per request: bare {bare_cpu * 1000:.2f} ms, call webhook "
                        f"{real_cpu * 1000:.2f} ms (this process: the bridge, its store threads)"
                    )
                    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
                    lags.sort()
                    lag99 = lags[int(len(lags) * 0.99)] * 1000
                    print(
                        f"event-loop lag while the bridge served: p99 {lag99:.1f} ms, "
                        f"max {lags[-1] * 1000:.1f} ms (a 10 ms timer's overshoot)"
                    )
                finally:
                    await stop(serving)
            await bare_runner.cleanup()
    verdict = "met" if worst < TARGET_P99_MS else "MISSED"
    print(f"\nworst p99 of a call webhook {worst:.1f} ms: target < {TARGET_P99_MS:.0f} ms {verdict}")
    return 0 if worst < TARGET_P99_MS else 1


async def _loop_lag(lags: list[float]) -> None:
    """How late a 10 ms timer fires, again and again: the event loop's own delay (or the machine's)."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(max(0.0, time.perf_counter() - started - 0.01))


async def _set_sim(bridge: Bridge, device_id: str, number: str) -> None:
    async def work(tx: Any, post: Any) -> None:
        await tx.execute("UPDATE devices SET phone = ? WHERE id = ?", number, device_id)

    await bridge.store.transaction(work)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="calls in flight at once (default 50)")
    parser.add_argument("--rounds", type=int, default=8, help="calls each caller makes in a row (default 8)")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds between one call's webhooks (default 0.2; 0 saturates)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="seconds a round's calls arrive within (default 1; 0: at once)",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
