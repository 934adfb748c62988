"""Helpers for the console tests: sign in over real HTTP with a cookie jar, and raise alerts."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from harness import RunningBridge

from alarm_centre.alerts.model import Role
from alarm_centre.sessions import set_password
from devices.events import DeviceEvent
from devices.vocabulary import EventType

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


async def add_user(bridge: RunningBridge, name: str, role: str, password: str = PASSWORD) -> str:
    token: str = await bridge.store.users.add(name, Role(role))
    await set_password(bridge.store, name, password)
    return token


class ConsoleClient:
    """A browser-like client: its own cookie jar, the session's CSRF token once signed in."""

    def __init__(self, bridge: RunningBridge, session: aiohttp.ClientSession) -> None:
        self.bridge = bridge
        self.http = session
        self.csrf = ""

    async def login(self, name: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        async with self.http.get(self.bridge.url + "/login") as page:
            form_csrf = CSRF_FIELD.search(await page.text())
        assert form_csrf is not None
        form = {"name": name, "password": password, "csrf": form_csrf.group(1)}
        async with self.http.post(self.bridge.url + "/login", allow_redirects=False, data=form) as resp:
            await resp.read()
        if resp.status == 303:
            status, me = await self.call("GET", "/console/api/me")
            assert status == 200, me
            self.csrf = me["csrf"]
        return resp

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        csrf: str | bool | None = True,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if csrf is True:
            hdrs["X-CSRF-Token"] = self.csrf
        elif isinstance(csrf, str):
            hdrs["X-CSRF-Token"] = csrf
        async with self.http.request(
            method, self.bridge.url + path, json=json, data=data, headers=hdrs, allow_redirects=False
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, text


@asynccontextmanager
async def console_client(
    bridge: RunningBridge, name: str | None = None, role: str = "operator"
) -> AsyncIterator[ConsoleClient]:
    """A client; signed in as ``name`` (created with ``role``) when a name is given."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        client = ConsoleClient(bridge, session)
        if name is not None:
            await add_user(bridge, name, role)
            resp = await client.login(name)
            assert resp.status == 303, resp.status
        yield client


async def raise_alert(bridge: RunningBridge, device_id: str, event_type: str = "pendant") -> str:
    result = await bridge.bridge.intake.submit(
        DeviceEvent(
            device_id, f"{device_id}-{uuid.uuid4().hex[:10]}", EventType(event_type), datetime.now(UTC)
        )
    )
    assert result.alert_id is not None
    return result.alert_id
