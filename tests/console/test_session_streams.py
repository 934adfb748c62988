"""Open event streams end as soon as their credentials stop working; a client hanging up is normal.

Real bridge on loopback, real SQLite and PostgreSQL stores. Each stream is read until its ``expired``
event; the keep-alive re-check is 15 s away, so an end within a few seconds is the access-change signal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from console_support import add_user, console_client, raise_alert
from harness import RunningBridge, eventually, make_config, postgres_database, running_bridge

from alarm_centre.alerts.model import Role
from alarm_centre.http.api import STREAM_KEEPALIVE_S
from alarm_centre.sessions import set_disabled
from alarm_centre.store.postgres import PostgresStore

#: The issue asks for "within a second"; the bound in the assertion leaves room for a loaded machine
#: and is still far below the keep-alive re-check, so only the access-change signal can meet it.
SIGNAL_BOUND_S = 5.0
assert SIGNAL_BOUND_S < STREAM_KEEPALIVE_S


async def read_until_expired(stream: aiohttp.ClientResponse) -> float:
    """Read the stream until its ``expired`` event; the seconds that took."""
    started = time.monotonic()
    async with asyncio.timeout(SIGNAL_BOUND_S):
        while True:
            line = await stream.content.readline()
            assert line, "the stream closed without an expired event"
            if line.startswith(b"event: expired"):
                return time.monotonic() - started


async def open_stream(
    http: aiohttp.ClientSession, bridge: RunningBridge, token: str | None = None
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    stream = await http.get(bridge.url + "/api/v1/stream", headers=headers)
    assert stream.status == 200
    assert (await stream.content.readline()).startswith(b": connected")
    return stream


@pytest.fixture
async def bridge(tmp_path: Path) -> RunningBridge:  # type: ignore[misc]
    async with running_bridge(make_config(tmp_path)) as running:
        yield running


async def test_signing_out_ends_the_sessions_stream_at_once(bridge: RunningBridge) -> None:
    async with console_client(bridge, "olive") as client:
        stream = await open_stream(client.http, bridge)
        async with console_client(bridge) as other:  # olive's second session, on another browser
            assert (await other.login("olive")).status == 303
            other_stream = await open_stream(other.http, bridge)
            assert (await client.call("POST", "/logout"))[0] == 200
            took = await read_until_expired(stream)
            # The other session is still signed in: its stream re-checked and carries on.
            alert_id = await raise_alert(bridge, "unit-after-logout")
            async with asyncio.timeout(10):
                while f'"id":"{alert_id}"'.encode() not in await other_stream.content.readline():
                    pass
        stream.close()
        other_stream.close()
    assert took < SIGNAL_BOUND_S


async def test_disabling_a_user_ends_their_bearer_and_cookie_streams(bridge: RunningBridge) -> None:
    token = await add_user(bridge, "oscar", "operator")
    async with console_client(bridge) as client:
        assert (await client.login("oscar")).status == 303
        cookie_stream = await open_stream(client.http, bridge)
        bearer_stream = await open_stream(client.http, bridge, token)
        await set_disabled(bridge.store, "oscar", True)
        await read_until_expired(bearer_stream)
        await read_until_expired(cookie_stream)
        bearer_stream.close()
        cookie_stream.close()


async def test_a_new_role_ends_the_stream(bridge: RunningBridge) -> None:
    token = await bridge.store.users.add("sue", Role.SUPERVISOR)
    async with aiohttp.ClientSession() as http:
        stream = await open_stream(http, bridge, token)
        await bridge.store.users.add("sue", Role.OPERATOR)  # a new role (and a new token)
        await read_until_expired(stream)
        stream.close()


async def test_disabling_from_the_cli_ends_the_stream_of_a_running_bridge(
    bridge: RunningBridge, tmp_path: Path
) -> None:
    """``telecare-bridge users disable`` is another process on the same SQLite file."""
    token = await bridge.store.users.add("olga", Role.OPERATOR)
    env = {**os.environ, "TELECARE_STORE__URL": str(tmp_path / "bridge.db")}
    async with aiohttp.ClientSession() as http:
        stream = await open_stream(http, bridge, token)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge.cli", "users", "disable", "olga"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        await read_until_expired(stream)
        stream.close()


async def test_on_postgresql_a_change_made_elsewhere_ends_the_stream(tmp_path: Path) -> None:
    """Another node (or the CLI) disables the user; the NOTIFY reaches this node's stream."""
    async with (
        postgres_database() as url,
        running_bridge(make_config(tmp_path, TELECARE_STORE__URL=url)) as running,
    ):
        token = await running.store.users.add("olive", Role.OPERATOR)
        async with aiohttp.ClientSession() as http:
            stream = await open_stream(http, running, token)
            async with PostgresStore(url, listen=False) as elsewhere:
                await set_disabled(elsewhere, "olive", True)
            await read_until_expired(stream)
            stream.close()


async def test_clients_that_hang_up_are_not_errors(
    bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    """Many readers close their streams; the next alert finds them gone: no ERROR, no 500."""
    token = await bridge.token("watcher")
    caplog.set_level(logging.DEBUG)
    feed = bridge.bridge.feed
    for _ in range(3):
        sessions = [aiohttp.ClientSession() for _ in range(20)]
        streams = []
        try:
            for http in sessions:
                streams.append(await open_stream(http, bridge, token))
            await eventually(lambda: _async(feed.subscriber_count == 20))
        finally:
            for stream in streams:
                stream.close()  # hang up mid-stream
            for http in sessions:
                await http.close()
        await raise_alert(bridge, "unit-nobody-reads")
        await eventually(lambda: _async(feed.subscriber_count == 0))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    status, metrics = await bridge.call("GET", "/metrics")
    assert status == 200
    assert 'telecare_http_errors_total{status="500"}' not in metrics


async def _async(value: bool) -> bool:
    return value
