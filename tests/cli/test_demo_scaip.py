"""``telecare-bridge demo --with-scaip``: the flags parse (a wrong address is a usage error), and the demo
serves SCAIP with its two units registered: an alarm in one unit's name is answered snu 0 and raises an
alert, and the demo's own units' alarms reach the alert queue."""

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

from bridge.cli.main import build_parser
from bridge.cli.scaip_demo import DEFAULT_LISTEN, UNITS
from devices.scaip import MessageResponse, Snu
from simulators.scaip_unit import ScaipUnit


def test_the_flags_parse() -> None:
    args = build_parser().parse_args(["demo", "--with-scaip"])
    assert args.with_scaip is True and args.scaip_listen is None  # then scaip.listen, else DEFAULT_LISTEN
    assert DEFAULT_LISTEN == "127.0.0.1:15060"
    args = build_parser().parse_args(["demo", "--with-scaip", "--scaip-listen", "0.0.0.0:5060"])
    assert args.scaip_listen == "0.0.0.0:5060"
    assert build_parser().parse_args(["demo"]).with_scaip is False


@pytest.mark.parametrize("bad", ["5060", "127.0.0.1", "127.0.0.1:sip", "127.0.0.1:70000", "host :1"])
def test_a_wrong_listen_address_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["demo", "--with-scaip", "--scaip-listen", bad])
    assert exit_.value.code == 2
    assert "--scaip-listen" in capsys.readouterr().err


@pytest.fixture
async def scaip_demo(tmp_path: Path) -> AsyncIterator[tuple[Demo, int]]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--units",
        "1",
        "--every",
        "1",
        "--with-scaip",
        "--scaip-listen",
        "127.0.0.1:0",
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Demo(proc)
    try:
        await running.read_banner()
        [line] = [line for line in running.lines if line.startswith("  SCAIP")]
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
async def test_demo_serves_scaip_and_its_units_alarms_reach_the_queue(scaip_demo: tuple[Demo, int]) -> None:
    demo, port = scaip_demo
    first = UNITS[0]
    async with ScaipUnit("127.0.0.1", port, cid=first.cid, transport="tcp") as unit:
        answer = await unit.alarm(dty="0003", stc="0010")
    assert isinstance(answer.mrs, MessageResponse) and answer.mrs.snu is Snu.OK, answer

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {demo.token}"}) as http:

        async def alerts_from(device_ids: set[str]) -> bool:
            async with http.get(f"{demo.http_url}/api/v1/alerts?state=open") as resp:
                body = await resp.json()
            return device_ids <= {a["device_id"] for a in body["alerts"]}

        assert await alerts_from({first.device_id}), "stored before snu 0"
        # The demo's own units raise alarms now and then (--every 1): both show in the queue.
        await eventually(lambda: alerts_from({u.device_id for u in UNITS}), timeout=90)


async def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "demo",
            "--with-scaip",
            "--scaip-listen",
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
