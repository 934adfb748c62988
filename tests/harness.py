"""Test harness: real brokers, a real bridge on loopback, and API clients.

Tests that need Mosquitto or PostgreSQL skip on a developer machine without them, and FAIL in CI
(``CI=true``), where .ci/run guarantees both are running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alarm_centre.alerts.model import Role
from bridge.config import Config, load_config
from bridge.service import Bridge
from devices.cancellation import stop
from simulators.unit import SimulatedUnit

MOSQUITTO_HOST = os.environ.get("TEST_MOSQUITTO_HOST", "127.0.0.1")
MOSQUITTO_PORT = int(os.environ.get("TEST_MOSQUITTO_PORT", "1883"))
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip locally, fail in CI, when a real service a test needs is not there."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it (see .ci/run)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(tmp_path: Path, *, mqtt_url: str = "", topic_root: str = "telecare", **extra: str) -> Config:
    env = {
        "TELECARE_STORE__URL": str(tmp_path / "bridge.db"),
        "TELECARE_HTTP__PORT": "0",
        "TELECARE_MQTT__EMBEDDED_PORT": "0",
        "TELECARE_MQTT__URL": mqtt_url,
        "TELECARE_TOPIC_ROOT": topic_root,
        "TELECARE_NODE_ID": "test-node",
        "TELECARE_OUTBOX__POLL_S": "0.2",
        "TELECARE_MQTT__CLIENT_ID": f"bridge-{uuid.uuid4().hex[:8]}",
        **extra,
    }
    return load_config(None, environ=env)


def credentials_env(tmp_path: Path) -> dict[str, str]:
    """Configuration that has the bridge issue units' broker passwords (files under ``tmp_path``)."""
    return {
        "TELECARE_CREDENTIALS__ENABLED": "true",
        "TELECARE_CREDENTIALS__PASSWORD_FILE": str(tmp_path / "mosquitto.passwd"),
        "TELECARE_CREDENTIALS__ACL_FILE": str(tmp_path / "mosquitto.acl"),
    }


class RunningBridge:
    """A bridge serving in the background of a test, with helpers to call its API."""

    def __init__(self, bridge: Bridge, session: aiohttp.ClientSession) -> None:
        self.bridge = bridge
        self.session = session
        self.tokens: dict[str, str] = {}

    @property
    def url(self) -> str:
        return self.bridge.http_url

    @property
    def store(self) -> Any:
        return self.bridge.store

    @property
    def broker(self) -> tuple[str, int]:
        address = self.bridge.mqtt._broker
        return address.host, address.port

    async def unit_login(self, device_id: str) -> dict[str, str]:
        """``username``/``password`` for :class:`SimulatedUnit`: a fresh broker password for the unit,
        registered first (as a ``gsm_unit``) if it is not yet. Needs ``credentials.enabled``."""
        credentials = self.bridge.credentials
        assert credentials is not None, "credentials.enabled is false on this bridge"
        async with self.store.read() as tx:
            known = await tx.fetchone("SELECT id FROM devices WHERE id = ?", device_id)
        if known is None:
            await self.store.devices.upsert_device(device_id, "gsm_unit")
        password = await credentials.issue(device_id, actor="test", source="system")
        return {"username": device_id, "password": password}

    async def token(self, name: str, role: str = "operator") -> str:
        if name not in self.tokens:
            self.tokens[name] = await self.bridge.store.users.add(name, Role(role))
        return self.tokens[name]

    async def call(
        self,
        method: str,
        path: str,
        *,
        user: str | None = "op1",
        role: str = "operator",
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if user is not None:
            hdrs["Authorization"] = f"Bearer {await self.token(user, role)}"
        async with self.session.request(method, self.url + path, json=json, data=data, headers=hdrs) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = text
            return resp.status, body


@contextlib.asynccontextmanager
async def running_bridge(
    config: Config, *, clock: Callable[[], float] | None = None
) -> AsyncIterator[RunningBridge]:
    bridge_under_test = Bridge(config) if clock is None else Bridge(config, clock=clock)
    async with bridge_under_test as bridge, aiohttp.ClientSession() as session:
        task = asyncio.create_task(bridge.serve(), name="bridge-under-test")
        try:
            await bridge.mqtt.wait_subscribed(20)
            yield RunningBridge(bridge, session)
        finally:
            await stop(task)


def postgres_parts() -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(POSTGRES_DSN)
    return parts.hostname or "127.0.0.1", parts.port or 5432


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database ``t_<uuid>`` for one test (skip locally / fail in CI without
    PostgreSQL); yields its URL and drops it afterwards."""
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    need_service("PostgreSQL", *postgres_parts())
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    parts = urlsplit(POSTGRES_DSN)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(POSTGRES_DSN)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


def unit_for(bridge: RunningBridge, device_id: str) -> SimulatedUnit:
    """A unit on the bridge's broker and topic root that retries every 0.3-1 s and leaves commands
    unanswered."""
    host, port = bridge.broker
    return SimulatedUnit(
        device_id,
        host=host,
        port=port,
        topic_root=bridge.bridge.config.topic_root,
        retry_initial_s=0.3,
        retry_max_s=1.0,
        answer_commands=False,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, step: float = 0.05) -> None:
    """Poll an async check until it holds; fail the test after a generous timeout."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(step)
