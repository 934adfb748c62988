"""``telecare-bridge demo --with-dc09`` and ``--with-scaip``: the flags parse (a wrong address is a usage
error), a port in use is one line, and the demo serves the protocol with its two units registered: an
alarm in one unit's name is answered once stored (DC-09: ACK in the encrypted panel's key; SCAIP: snu 0)
and raises an alert, and the demo's own units' alarms reach the alert queue."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from harness import eventually
from test_demo import CLI, Demo, cli_env

from bridge.cli import dc09_demo, scaip_demo
from bridge.cli.main import build_parser
from devices.dc09 import Frame, Token, parse_key
from devices.scaip import MessageResponse, Snu
from simulators.dc09_panel import Dc09Panel
from simulators.scaip_unit import ScaipUnit


async def dc09_alarm(port: int) -> str:
    """Send a pendant alarm in the encrypted demo panel's key; its device id once ACKed."""
    encrypted = next(p for p in dc09_demo.PANELS if p.key is not None)
    assert encrypted.key is not None
    async with Dc09Panel("127.0.0.1", port, account=encrypted.account, key=parse_key(encrypted.key)) as panel:
        answer = await panel.send_contact_id(101)
    assert isinstance(answer.frame, Frame) and answer.frame.token is Token.ACK and answer.frame.encrypted
    return encrypted.device_id


async def scaip_alarm(port: int) -> str:
    """Send a pendant alarm in the first demo unit's name over TCP; its device id once answered snu 0."""
    first = scaip_demo.UNITS[0]
    async with ScaipUnit("127.0.0.1", port, cid=first.cid, transport="tcp") as unit:
        answer = await unit.alarm(dty="0003", stc="0010")
    assert isinstance(answer.mrs, MessageResponse) and answer.mrs.snu is Snu.OK, answer
    return first.device_id


@dataclass(frozen=True)
class Receiver:
    """One of the demo's extra receivers, as its flags, banner line and units show it."""

    name: str  # dc09, scaip: the flags are --with-<name>, --<name>-listen
    default_listen: str
    other_listen: str
    bad_port: str
    banner: str
    device_ids: frozenset[str]
    alarm: Callable[[int], Awaitable[str]]
    #: The kind of socket that makes the port "in use" (SCAIP binds UDP first, DC-09 TCP).
    taken: socket.SocketKind

    @property
    def flags(self) -> tuple[str, str]:
        return f"--with-{self.name}", f"--{self.name}-listen"


RECEIVERS = [
    Receiver(
        "dc09",
        "127.0.0.1:10009",
        "0.0.0.0:11009",
        "127.0.0.1:port",
        "  DC-09",
        frozenset(p.device_id for p in dc09_demo.PANELS),
        dc09_alarm,
        socket.SOCK_STREAM,
    ),
    Receiver(
        "scaip",
        "127.0.0.1:15060",
        "0.0.0.0:5060",
        "127.0.0.1:sip",
        "  SCAIP",
        frozenset(u.device_id for u in scaip_demo.UNITS),
        scaip_alarm,
        socket.SOCK_DGRAM,
    ),
]
DEFAULTS = {"dc09": dc09_demo.DEFAULT_LISTEN, "scaip": scaip_demo.DEFAULT_LISTEN}


@pytest.fixture(params=RECEIVERS, ids=lambda r: r.name)
def receiver(request: pytest.FixtureRequest) -> Receiver:
    spec: Receiver = request.param
    return spec


def test_the_flags_parse(receiver: Receiver) -> None:
    with_, listen = receiver.flags
    args = vars(build_parser().parse_args(["demo", with_]))
    # Unset: then <name>.listen from the config, else the demo's default.
    assert args[f"with_{receiver.name}"] is True and args[f"{receiver.name}_listen"] is None
    assert DEFAULTS[receiver.name] == receiver.default_listen
    args = vars(build_parser().parse_args(["demo", with_, listen, receiver.other_listen]))
    assert args[f"{receiver.name}_listen"] == receiver.other_listen
    assert vars(build_parser().parse_args(["demo"]))[f"with_{receiver.name}"] is False


@pytest.mark.parametrize("bad", ["5060", "127.0.0.1", "{port}", "127.0.0.1:70000", "host :1"])
def test_a_wrong_listen_address_is_a_usage_error(
    receiver: Receiver, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with_, listen = receiver.flags
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", with_, listen, bad.format(port=receiver.bad_port)])
    assert exit_.value.code == 2
    assert listen in capsys.readouterr().err


@pytest.fixture
async def demo(receiver: Receiver, tmp_path: Path) -> AsyncIterator[tuple[Demo, int]]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--units",
        "1",
        "--every",
        "1",
        *receiver.flags,
        "127.0.0.1:0",
        cwd=tmp_path,
        # INFO: what each simulated unit sent and what it was answered, for a failing test's message.
        env={**cli_env(tmp_path), "TELECARE_LOG__LEVEL": "INFO"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Demo(proc)
    try:
        await running.read_banner()
        [line] = [line for line in running.lines if line.startswith(receiver.banner)]
        yield running, int(line.split()[1].rsplit(":", 1)[1])
    finally:
        await running.stop()


@pytest.mark.slow
async def test_the_demo_serves_the_protocol_and_its_units_alarms_reach_the_queue(
    receiver: Receiver, demo: tuple[Demo, int]
) -> None:
    running, port = demo
    device_id = await receiver.alarm(port)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {running.token}"}) as http:
        seen: set[str] = set()

        async def alerts_from(device_ids: set[str] | frozenset[str]) -> bool:
            async with http.get(f"{running.http_url}/api/v1/alerts?state=open") as resp:
                body = await resp.json()
            seen.clear()
            seen.update(f"{a['device_id']}:{a['type']}:{a['state']}" for a in body["alerts"])
            return device_ids <= {a["device_id"] for a in body["alerts"]}

        assert await alerts_from({device_id}), "stored before the answer"
        # The demo's own units raise alarms now and then (--every 1): both show in the queue.
        try:
            await eventually(lambda: alerts_from(receiver.device_ids), timeout=90)
        except TimeoutError:
            pytest.fail(
                f"the demo's units' alarms did not reach the queue: {sorted(seen)}\n"
                + "".join(running.output)
            )


async def test_a_port_in_use_is_one_line_not_a_traceback(receiver: Receiver, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, receiver.taken) as taken:
        taken.bind(("127.0.0.1", 0))
        if receiver.taken == socket.SOCK_STREAM:
            taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "demo",
            *receiver.flags,
            address,
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    assert proc.returncode == 1
    assert f"cannot listen on {address}" in err.decode() and "Traceback" not in err.decode(), err.decode()
