"""``telecare-bridge demo --with-dc09``: the flags parse (a wrong address is a usage error), and the demo
serves DC-09 with its two panels registered: a frame in the encrypted panel's key is ACKed and raises an
alert, and the demo's own panels' alarms reach the alert queue."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from harness import eventually
from test_demo import CLI, Demo, cli_env

from bridge.cli.dc09_demo import DEFAULT_LISTEN, PANELS
from bridge.cli.main import build_parser
from devices.dc09 import Frame, Token, parse_key
from simulators.dc09_panel import Dc09Panel


def test_the_flags_parse() -> None:
    args = build_parser().parse_args(["demo", "--with-dc09"])
    assert args.with_dc09 is True and args.dc09_listen is None  # then dc09.listen, else DEFAULT_LISTEN
    assert DEFAULT_LISTEN == "127.0.0.1:10009"
    args = build_parser().parse_args(["demo", "--with-dc09", "--dc09-listen", "0.0.0.0:11009"])
    assert args.dc09_listen == "0.0.0.0:11009"
    assert build_parser().parse_args(["demo"]).with_dc09 is False


@pytest.mark.parametrize("bad", ["10009", "127.0.0.1", "127.0.0.1:port", "127.0.0.1:70000", "host :1"])
def test_a_wrong_listen_address_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", "--with-dc09", "--dc09-listen", bad])
    assert exit_.value.code == 2
    assert "--dc09-listen" in capsys.readouterr().err


@pytest.fixture
async def dc09_demo(tmp_path: Path) -> AsyncIterator[tuple[Demo, int]]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--units",
        "1",
        "--every",
        "1",
        "--with-dc09",
        "--dc09-listen",
        "127.0.0.1:0",
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Demo(proc)
    try:
        await running.read_banner()
        [line] = [line for line in running.lines if line.startswith("  DC-09")]
        yield running, int(line.split()[1].rsplit(":", 1)[1])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(30):
                    await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.slow
async def test_demo_serves_dc09_and_its_panels_alarms_reach_the_queue(dc09_demo: tuple[Demo, int]) -> None:
    demo, port = dc09_demo
    encrypted = next(p for p in PANELS if p.key is not None)
    assert encrypted.key is not None
    async with Dc09Panel("127.0.0.1", port, account=encrypted.account, key=parse_key(encrypted.key)) as panel:
        answer = await panel.send_contact_id(101)
    assert isinstance(answer.frame, Frame) and answer.frame.token is Token.ACK and answer.frame.encrypted

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {demo.token}"}) as http:

        async def alerts_from(device_ids: set[str]) -> bool:
            async with http.get(f"{demo.http_url}/api/v1/alerts?state=open") as resp:
                body = await resp.json()
            return device_ids <= {a["device_id"] for a in body["alerts"]}

        assert await alerts_from({encrypted.device_id}), "stored before the ACK"
        # The demo's own panels raise alarms now and then (--every 1): both show in the queue.
        await eventually(lambda: alerts_from({p.device_id for p in PANELS}), timeout=90)


async def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "demo",
            "--with-dc09",
            "--dc09-listen",
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
