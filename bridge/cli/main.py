"""``telecare-bridge``: the parser and ``main``; run the bridge, a demo, and drive the simulators."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.cli.common import (
    DEFAULT_CONFIG,
    EXIT_FAILED,
    EXIT_REJECTED,
    EXIT_USAGE,
    describe_store,
    fail,
    load,
    run_until_signal,
)
from bridge.config import Config


# -- run / demo ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> None:
    config = load(args)

    async def main() -> None:
        from bridge.service import Bridge

        async with Bridge(config) as bridge:
            _print_banner(bridge, config)
            await bridge.serve()

    run_until_signal(main)


def _print_banner(bridge: Any, config: Config) -> None:
    from bridge.redaction import redact

    broker = redact(bridge.broker.url if bridge.broker else config.mqtt.url)
    print(f"telecare-bridge {config.node_name} is up", flush=True)
    print(
        f"  HTTP API    {bridge.http_url}/api/v1/alerts   (health {bridge.http_url}/healthz, "
        f"metrics {bridge.http_url}/metrics)",
        flush=True,
    )
    print(f"  MQTT        {broker}  topics {config.topic_root}/v1/{{device_id}}/event", flush=True)
    print(f"  store       {describe_store(config.store.url)}", flush=True)
    if config.console.enabled:
        print(
            f"  console     {bridge.http_url}/console   (sign-in: {_self_command()} users passwd NAME)",
            flush=True,
        )


def _fleet_config(config: Config) -> Config:
    """The configuration a demo or a simulated fleet runs with: on the embedded broker, unless anonymous
    clients are allowed (``mqtt.embedded_allow_anonymous``), the bridge issues the units' credentials
    (``credentials.enabled``), so its broker keeps refusing strangers and the fleet signs in."""
    if config.mqtt.url or config.mqtt.embedded_allow_anonymous or config.credentials.enabled:
        return config
    return config.model_copy(update={"credentials": config.credentials.model_copy(update={"enabled": True})})


def _listen_arg(text: str) -> str:
    """``--dc09-listen`` and ``--scaip-listen``: ``host:port``, else a usage error."""
    from bridge.cli.demo_listen import listen_address

    try:
        return listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_demo(args: argparse.Namespace) -> None:
    config = _fleet_config(load(args))
    if args.dc09_listen is None:
        from bridge.cli.dc09_demo import DEFAULT_LISTEN

        args.dc09_listen = config.dc09.listen or DEFAULT_LISTEN
    if args.with_dc09:
        from bridge.cli.demo_listen import check_free

        try:
            check_free(args.dc09_listen)
        except OSError as exc:
            fail(
                f"the DC-09 demo cannot listen on {args.dc09_listen} ({exc}); try --dc09-listen", EXIT_FAILED
            )
    if args.scaip_listen is None:
        from bridge.cli.scaip_demo import DEFAULT_LISTEN as SCAIP_DEFAULT_LISTEN

        args.scaip_listen = config.scaip.listen or SCAIP_DEFAULT_LISTEN
    if args.with_scaip:
        from bridge.cli.demo_listen import check_free

        try:
            check_free(args.scaip_listen)
        except OSError as exc:
            fail(
                f"the SCAIP demo cannot listen on {args.scaip_listen} ({exc}); try --scaip-listen",
                EXIT_FAILED,
            )

    async def main() -> None:
        from bridge.service import Bridge
        from simulators.fleet import run_fleet, seed_demo

        async with contextlib.AsyncExitStack() as extras:
            serial = None
            if args.with_serial:
                from bridge.cli.serial_demo import serial_demo

                serial = await extras.enter_async_context(serial_demo(config))
            run_config = serial.config if serial else config
            if args.with_dc09:
                from bridge.cli import dc09_demo

                run_config = dc09_demo.listening(run_config, args.dc09_listen)
            if args.with_scaip:
                from bridge.cli import scaip_demo

                run_config = scaip_demo.listening(run_config, args.scaip_listen)
            bridge = await extras.enter_async_context(Bridge(run_config))
            if serial is not None:
                await serial.register(bridge.store)
            if args.with_dc09:
                from bridge.feature_registry import make_registry

                await dc09_demo.register(make_registry(config, bridge.store))
            if args.with_scaip:
                from bridge.feature_registry import make_registry

                await scaip_demo.register(make_registry(config, bridge.store))
            unit_ids = await seed_demo(bridge.store.devices, args.units)
            passwords: dict[str, str] = {}
            if bridge.credentials is not None:  # each demo unit signs in with a password of its own
                for unit_id in unit_ids:
                    passwords[unit_id] = await bridge.credentials.issue(unit_id, actor="demo", source="cli")
            from alarm_centre.alerts.model import Role

            token = await bridge.store.users.add("demo-operator", Role.OPERATOR)
            import secrets

            from alarm_centre.sessions import set_password

            password = secrets.token_urlsafe(12)
            await set_password(bridge.store, "demo-operator", password)
            saved = _data_dir(config) / DEMO_CREDENTIALS
            await asyncio.to_thread(_write_demo_credentials, saved, token, password, bridge.http_url)
            _print_banner(bridge, config)
            print(f"  console     sign in as demo-operator, password {password}", flush=True)
            print(f"  saved in    {saved}  (mode 0600; new on every start)", flush=True)
            print(
                f"  demo fleet  {args.units} simulated units, an event every ~{args.every:.0f}s each, "
                + ("signed in with their own broker passwords" if passwords else "anonymous"),
                flush=True,
            )
            print(
                f"  try:        . {shlex.quote(str(saved))} && "
                f'curl -H "Authorization: Bearer $TOKEN" {bridge.http_url}/api/v1/alerts',
                flush=True,
            )
            if serial is not None:
                print(serial.describe(), flush=True)
            if args.with_dc09:
                from bridge.transports.dc09 import DC09_RECEIVER

                dc09_port = bridge.app[DC09_RECEIVER].port
                dc09_host = run_config.dc09.host_port[0]
                print(dc09_demo.describe(f"{dc09_host}:{dc09_port}"), flush=True)
            if args.with_scaip:
                from bridge.transports.scaip import SCAIP_RECEIVER

                scaip_port = bridge.app[SCAIP_RECEIVER].port
                scaip_host = run_config.scaip.host_port[0]
                print(scaip_demo.describe(f"{scaip_host}:{scaip_port}"), flush=True)
            print("  operator token (demo-operator):", flush=True)
            print(token, flush=True)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(bridge.serve(), name="bridge")
                await bridge.mqtt.wait_subscribed(30)
                host, port = bridge.mqtt._broker.host, bridge.mqtt._broker.port
                tg.create_task(
                    run_fleet(
                        unit_ids,
                        host=host,
                        port=port,
                        topic_root=config.topic_root,
                        every_s=args.every,
                        passwords=passwords,
                    ),
                    name="fleet",
                )
                if serial is not None:
                    tg.create_task(serial.run(args.every), name="serial-demo")
                if args.with_dc09:
                    tg.create_task(dc09_demo.run_panels(dc09_host, dc09_port, args.every), name="dc09-demo")
                if args.with_scaip:
                    tg.create_task(
                        scaip_demo.run_units(scaip_host, scaip_port, args.every), name="scaip-demo"
                    )

    run_until_signal(main)


#: The demo's sign-in, written to the data directory as shell variables a terminal can source.
DEMO_CREDENTIALS = "demo-credentials"


def _data_dir(config: Config) -> Path:
    """The directory of the SQLite store (``./data`` by default); ``./data`` with PostgreSQL."""
    from alarm_centre.store import sqlite_path

    path = sqlite_path(config.store.url)
    return Path(path).absolute().parent if path is not None else Path("data").absolute()


def _write_demo_credentials(path: Path, token: str, password: str, http_url: str) -> None:
    """Save the demo operator's token and password, readable by this user only (0600)."""
    from bridge.credentials import write_atomically

    text = (
        "# telecare-bridge demo sign-in, new on every start of the demo. Use it from a shell:\n"
        f'#   . {shlex.quote(str(path))} && curl -H "Authorization: Bearer $TOKEN" $URL/api/v1/alerts\n'
        "DEMO_USER=demo-operator\n"
        f"DEMO_PASSWORD={shlex.quote(password)}\n"
        f"TOKEN={shlex.quote(token)}\n"
        f"URL={shlex.quote(http_url)}\n"
    )
    write_atomically(path, text, 0o600)


def _self_command() -> str:
    """How to run this CLI again from any shell: ``telecare-bridge`` if PATH finds this one, else its path."""
    import shutil

    argv0 = Path(sys.argv[0])
    if argv0.name != "telecare-bridge":
        return "telecare-bridge"
    found = shutil.which("telecare-bridge")
    if found and Path(found).resolve() == argv0.resolve():
        return "telecare-bridge"
    return shlex.quote(str(argv0.absolute()))


# -- simulate ------------------------------------------------------------------------------------
def _broker_of(args: argparse.Namespace, config: Config) -> tuple[str, int]:
    from bridge.transports.mqtt import BrokerAddress

    url = args.url or config.mqtt.url or f"mqtt://127.0.0.1:{config.mqtt.embedded_port}"
    address = BrokerAddress.from_url(url)
    return address.host, address.port


def _issue_passwords(config: Config, device_ids: list[str], *, register: bool) -> dict[str, str]:
    """Fresh broker passwords for simulated units, issued through the bridge's registry and files (as
    ``devices credential`` does); with ``register``, unknown ids are first registered as ``gsm_unit``."""
    from alarm_centre.store import Conflict, open_store
    from bridge.feature_registry import make_credentials, make_registry

    async def main() -> dict[str, str]:
        async with open_store(config.store.url) as store:
            credentials = make_credentials(config, make_registry(config, store))
            if credentials is None:
                fail("credentials.enabled is false: no passwords to issue", EXIT_USAGE)
            passwords = {}
            for device_id in device_ids:
                if register:
                    async with store.read() as tx:
                        known = await tx.fetchone("SELECT id FROM devices WHERE id = ?", device_id)
                    if known is None:
                        await store.devices.upsert_device(device_id, "gsm_unit")
                passwords[device_id] = await credentials.issue(device_id, actor="simulate", source="cli")
            return passwords

    try:
        return asyncio.run(main())
    except (Conflict, ValueError) as exc:
        fail(f"cannot issue a broker password: {exc}", EXIT_FAILED)


def _unit_password(args: argparse.Namespace, config: Config) -> str | None:
    """The simulated unit's broker password: --password, $SIMULATOR_PASSWORD, or a fresh one issued."""
    if args.issue_credential:
        return _issue_passwords(_fleet_config(config), [args.device_id], register=False)[args.device_id]
    return args.password or os.environ.get("SIMULATOR_PASSWORD") or None


def cmd_simulate_unit(args: argparse.Namespace) -> None:
    from simulators.unit import SimulatedUnit, summarise

    config = load(args)
    host, port = _broker_of(args, config)
    password = _unit_password(args, config)

    rejected: list[dict[str, Any]] = []

    async def main() -> None:
        async with SimulatedUnit(
            args.device_id,
            host=host,
            port=port,
            topic_root=config.topic_root,
            heartbeat_s=args.heartbeat,
            username=args.device_id if password else None,
            password=password,
            connect_timeout=args.timeout,
            alarm_lane=not args.v1_0,
        ) as unit:
            for _ in range(args.count):
                ack = await unit.send(args.event, test=args.test, timeout=args.timeout)
                print(f"{args.device_id} {args.event}: {summarise(ack)}", flush=True)
                if ack.get("result") == "rejected":
                    rejected.append(ack)
            if args.stay:
                print("staying connected: answering commands (Ctrl-C to stop)", flush=True)
                seen = 0
                while True:
                    async with unit.command_received:
                        await unit.command_received.wait()
                    for command in unit.log.commands[seen:]:
                        print(f"command: {summarise(command)}", flush=True)
                    seen = len(unit.log.commands)

    try:
        run_until_signal(main)
    except TimeoutError:
        print(f"telecare-bridge: no ack within {args.timeout:g}s: is the bridge running?", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    except ConnectionError as exc:  # e.g. the broker refused the unit's credentials
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    if rejected:
        reason = rejected[0].get("error") or "no reason given"
        print(
            f"telecare-bridge: the bridge rejected {len(rejected)} of {args.count} event(s): {reason}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_REJECTED)


def cmd_simulate_fleet(args: argparse.Namespace) -> None:
    from simulators.fleet import run_fleet

    config = load(args)
    host, port = _broker_of(args, config)
    ids = [f"{args.prefix}{n:04d}" for n in range(args.units)]
    passwords = _issue_passwords(_fleet_config(config), ids, register=True) if args.issue_credentials else {}
    run_until_signal(
        lambda: run_fleet(
            ids,
            host=host,
            port=port,
            topic_root=config.topic_root,
            every_s=args.every,
            passwords=passwords,
            alarm_lane=not args.v1_0,
        )
    )


#: ``simulate unit|fleet --v1.0``: an older unit, without the v1.1 alarm topic.
V1_0_HELP = "behave as a wire contract v1.0 unit: send calls for help on 'event', not on 'alarm'"


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telecare-bridge",
        description="Bridge telecare units and voice assistants to a control-centre alert queue.",
        epilog="Every config key can be set by environment: TELECARE_HTTP__PORT=8081 sets http.port.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help=f"configuration file (default: ./{DEFAULT_CONFIG} if present, else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run", parents=[common], help="run the bridge", description="Run the bridge until SIGINT or SIGTERM."
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the bridge with a simulated fleet",
        description="Run the bridge on its embedded defaults with simulated residents' units.",
    )
    p.add_argument(
        "--units",
        type=int,
        default=6,
        choices=range(1, 7),
        metavar="N",
        help="how many simulated units (1-6, default 6)",
    )
    p.add_argument(
        "--every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="mean seconds between one unit's events (default 30)",
    )
    p.add_argument(
        "--with-serial",
        action="store_true",
        help="also simulate a unit on a serial line and a GSM modem receiving SMS alarms (on ptys)",
    )
    p.add_argument(
        "--with-dc09",
        action="store_true",
        help="also listen for SIA DC-09 and run two simulated alarm panels (one encrypted) against it",
    )
    p.add_argument(
        "--dc09-listen",
        type=_listen_arg,
        default=None,
        metavar="HOST:PORT",
        help="where the DC-09 demo listens, TCP and UDP (default: dc09.listen if set, else 127.0.0.1:10009)",
    )
    p.add_argument(
        "--with-scaip",
        action="store_true",
        help="also listen for SCAIP (SIP MESSAGE) and run two simulated social alarms (UDP, TCP) against it",
    )
    p.add_argument(
        "--scaip-listen",
        type=_listen_arg,
        default=None,
        metavar="HOST:PORT",
        help="where the SCAIP demo listens, UDP and TCP (default: scaip.listen if set, else 127.0.0.1:15060)",
    )
    p.set_defaults(func=cmd_demo)

    from bridge.cli import backup, check, privacy, registry, users

    check.register(sub, common)  # check-config
    users.register(sub, common)  # users add|passwd|disable|enable|list
    registry.register(sub, common)  # residents, devices, link, commission, import, export
    privacy.register(sub, common)  # privacy reads|export|erase|erasures|retention
    backup.register(sub, common)  # backup, restore

    simulate = sub.add_parser("simulate", help="stand-ins for real devices").add_subparsers(
        dest="simulate_command", metavar="DEVICE", required=True
    )
    p = simulate.add_parser(
        "unit",
        parents=[common],
        help="a telecare unit on MQTT",
        description="Connect as a unit, send events until acked, answer commands.",
    )
    p.add_argument("--device-id", required=True)
    p.add_argument("--event", default="pendant", help="event type to send (default pendant)")
    p.add_argument("--count", type=int, default=1, help="how many events to send (default 1)")
    p.add_argument("--test", action="store_true", help="flag the events as test alarms")
    p.add_argument("--url", help="broker URL (default: mqtt.url, or the embedded broker)")
    p.add_argument("--heartbeat", type=float, metavar="SECONDS", help="send heartbeats this often")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the broker, and for each ack (default 60); exit status 1 when either "
        "does not come, 3 when the bridge rejects an event",
    )
    p.add_argument("--stay", action="store_true", help="stay connected and print commands received")
    p.add_argument("--v1.0", dest="v1_0", action="store_true", help=V1_0_HELP)
    login = p.add_mutually_exclusive_group()
    login.add_argument(
        "--password",
        help="the unit's broker password; username = device id (default: $SIMULATOR_PASSWORD, else none)",
    )
    login.add_argument(
        "--issue-credential",
        action="store_true",
        help="issue the (registered) unit a fresh broker password first, as 'devices credential' does",
    )
    p.set_defaults(func=cmd_simulate_unit)

    p = simulate.add_parser("fleet", parents=[common], help="many units sending now and then")
    p.add_argument("--units", type=int, default=10)
    p.add_argument("--prefix", default="sim-")
    p.add_argument("--every", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--url", help="broker URL (default: mqtt.url, or the embedded broker)")
    p.add_argument(
        "--issue-credentials",
        action="store_true",
        help="register the simulated units (gsm_unit) if need be and issue each a broker password",
    )
    p.add_argument("--v1.0", dest="v1_0", action="store_true", help=V1_0_HELP)
    p.set_defaults(func=cmd_simulate_fleet)

    from bridge.cli import voice

    voice.register(sub, common, simulate)  # alexa link|unlink|links|check-in; simulate alexa|alexa-ca
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
