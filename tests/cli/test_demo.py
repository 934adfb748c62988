"""``telecare-bridge demo`` end to end, as a user starts it: its fleet signs in to the embedded broker
with passwords of its own while strangers are refused, and ``simulate unit`` signs in the same way."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import aiomqtt
import pytest
from harness import eventually

CLI = [sys.executable, "-m", "bridge.cli"]
ROOT = Path(__file__).resolve().parents[2]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "TELECARE_HTTP__PORT": "0",
        "TELECARE_MQTT__EMBEDDED_PORT": "0",
        "TELECARE_LOG__LEVEL": "WARNING",
        "TELECARE_NODE_ID": "demo-test",
    }


class Demo:
    """A running ``telecare-bridge demo``: its banner read, then its output kept flowing (a demo whose
    stdout or stderr pipe nobody reads blocks on its next log line once the pipe is full)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        #: What the demo wrote after its banner (the last lines, for a failing test's message).
        self.output: deque[str] = deque(maxlen=200)
        self.http_url = ""
        self.mqtt_port = 0
        self.token = ""
        self._readers: list[asyncio.Task[None]] = []

    async def read_banner(self) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while not self.token:
                line = (await self.proc.stdout.readline()).decode()
                assert line, f"demo ended early: {self.lines}"
                self.lines.append(line)
                words = line.split()
                if line.startswith("  HTTP API"):
                    self.http_url = words[2].removesuffix("/api/v1/alerts")
                elif line.startswith("  MQTT"):
                    self.mqtt_port = urlsplit(words[1]).port or 0
                elif self.lines[-2:-1] == ["  operator token (demo-operator):\n"]:
                    self.token = line.strip()
        self._readers = [
            asyncio.create_task(self._keep_reading(stream))
            for stream in (self.proc.stdout, self.proc.stderr)
            if stream is not None
        ]

    async def _keep_reading(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.output.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        """Ctrl-C, as a user stops it (killed if it has not ended in 30 s); its output read to the end."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if not self._readers:
            await self.proc.communicate()
            return
        async with asyncio.timeout(30):  # the pipes close with the process
            await asyncio.gather(*self._readers)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--units",
        "3",
        "--every",
        "1",
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Demo(proc)
    try:
        await running.read_banner()
        yield running
    finally:
        await running.stop()


async def test_demo_fleet_signs_in_and_strangers_are_refused(demo: Demo, tmp_path: Path) -> None:
    assert any("signed in with their own broker passwords" in line for line in demo.lines), demo.lines
    passwd = (tmp_path / "data" / "mosquitto.passwd").read_text()
    assert {line.split(":")[0] for line in passwd.splitlines()} == {"unit-ada", "unit-bill", "unit-grace"}

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {demo.token}"}) as http:

        async def fleet_alerts() -> bool:
            async with http.get(f"{demo.http_url}/api/v1/alerts?state=open") as resp:
                body = await resp.json()
            return any(a["device_id"] in ("unit-ada", "unit-bill", "unit-grace") for a in body["alerts"])

        await eventually(fleet_alerts, timeout=60)

    with pytest.raises(aiomqtt.MqttError):  # the demo asked for no anonymous clients
        async with aiomqtt.Client("127.0.0.1", demo.mqtt_port, identifier="stranger", timeout=5):
            pass

    # simulate unit signs in too: a registered unit is issued a password, then its event is acked.
    env = cli_env(tmp_path)
    add = await asyncio.create_subprocess_exec(
        *CLI,
        "devices",
        "add",
        "unit-sim",
        "--kind",
        "gsm_unit",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await add.communicate()
    assert add.returncode == 0, err.decode()
    unit = await asyncio.create_subprocess_exec(
        *CLI,
        "simulate",
        "unit",
        "--device-id",
        "unit-sim",
        "--issue-credential",
        "--timeout",
        "30",
        "--url",
        f"mqtt://127.0.0.1:{demo.mqtt_port}",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await unit.communicate()
    assert unit.returncode == 0, err.decode()
    assert '"result":"accepted"' in out.decode(), out.decode()
    anonymous = await asyncio.create_subprocess_exec(
        *CLI,
        "simulate",
        "unit",
        "--device-id",
        "unit-sim",
        "--timeout",
        "3",
        "--url",
        f"mqtt://127.0.0.1:{demo.mqtt_port}",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await anonymous.communicate()
    assert anonymous.returncode == 1  # without a password the broker lets it nowhere
    assert "could not connect" in err.decode() and "Not authorized" in err.decode(), err.decode()
