"""The console over real HTTP: sign-in, cookies, CSRF, roles on every action, escaping, limits, expiry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from clock import SteppedClock
from console_support import PASSWORD, add_user, console_client, raise_alert
from harness import RunningBridge, make_config, running_bridge

from alarm_centre.console import ConsolePage, Safe, add_console_page, escape, page_response
from alarm_centre.console.signin import SESSIONS
from alarm_centre.http.api import require

CLI = [sys.executable, "-m", "bridge.cli"]


@pytest.fixture
async def console_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A bridge on its embedded broker with a tight sign-in limit (the HTTP tests need no Mosquitto)."""
    config = make_config(
        tmp_path,
        TELECARE_CONSOLE__LOGIN_MAX_FAILURES="3",
        TELECARE_CONSOLE__LOGIN_MAX_FAILURES_PER_ADDRESS="6",
    )
    async with running_bridge(config) as running:
        yield running


async def test_sign_in_sets_a_strict_httponly_cookie_and_wrong_password_does_not(
    console_bridge: RunningBridge,
) -> None:
    await add_user(console_bridge, "olive", "operator")
    async with console_client(console_bridge) as client:
        resp = await client.login("olive", "not the password")
        assert resp.status == 401
        assert "tc_session" not in {c.key for c in client.http.cookie_jar}
        status, _ = await client.call("GET", "/console")
        assert status == 303  # back to /login
        resp = await client.login("olive")
        assert resp.status == 303 and resp.headers["Location"] == "/console"
        cookie = resp.cookies["tc_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # http.public_url is not https and secure_cookies is auto
        status, page = await client.call("GET", "/console")
        assert status == 200 and "Open alerts" in page and "olive" in page
    async with console_client(console_bridge) as client:
        resp = await client.login("nobody-here", PASSWORD)
        assert resp.status == 401


async def test_secure_cookies_when_configured(tmp_path: Path) -> None:
    config = make_config(tmp_path, TELECARE_CONSOLE__SECURE_COOKIES="true")
    async with running_bridge(config) as running:
        await add_user(running, "olive", "operator")
        async with aiohttp.ClientSession() as http, http.get(running.url + "/login") as page:
            assert "Secure" in page.headers["Set-Cookie"]


async def test_state_changes_need_the_csrf_header(console_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(console_bridge, "unit-csrf")
    async with console_client(console_bridge, "olive") as client:
        path = f"/api/v1/alerts/{alert_id}/acknowledge"
        status, body = await client.call("POST", path, csrf=None)
        assert status == 403 and "CSRF" in body["detail"]
        status, body = await client.call("POST", path, csrf="x" * 43)
        assert status == 403
        status, body = await client.call(
            "POST", f"/api/v1/alerts/{alert_id}/notes", json={"note": "hi"}, csrf=None
        )
        assert status == 403
        status, body = await client.call("POST", "/logout", csrf=None)
        assert status == 403
        alert, _ = await console_bridge.store.get_alert(alert_id)
        assert alert.state == "raised"
        status, body = await client.call("POST", path)
        assert status == 200 and body["acknowledged_by"] == "olive"
        _, detail = await client.call("GET", f"/api/v1/alerts/{alert_id}")
        assert [t["source"] for t in detail["timeline"] if t["action"] == "acknowledged"] == ["console"]
    # A bearer-token client needs no CSRF token, even if it also carries a cookie.
    other = await raise_alert(console_bridge, "unit-bearer")
    status, body = await console_bridge.call("POST", f"/api/v1/alerts/{other}/acknowledge", user="api1")
    assert status == 200
    _, detail = await console_bridge.call("GET", f"/api/v1/alerts/{other}", user="api1")
    assert [t["source"] for t in detail["timeline"] if t["action"] == "acknowledged"] == ["api"]


async def test_sign_in_form_needs_its_csrf_cookie(console_bridge: RunningBridge) -> None:
    await add_user(console_bridge, "olive", "operator")
    form = {"name": "olive", "password": PASSWORD, "csrf": "forged"}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        http.post(console_bridge.url + "/login", allow_redirects=False, data=form) as resp,
    ):
        assert resp.status == 403
        assert "tc_session" not in resp.cookies


ACTIONS = ["acknowledge", "note", "resolve", "create_device", "create_resident"]
ALLOWED = {
    "operator": {"acknowledge", "note", "resolve"},
    "supervisor": {"acknowledge", "note", "resolve"},
    "installer": {"create_device", "create_resident"},
    "admin": set(ACTIONS),
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
async def test_every_action_by_every_role(console_bridge: RunningBridge, role: str) -> None:
    alert_id = await raise_alert(console_bridge, f"unit-{role}")
    async with console_client(console_bridge, f"{role}-1", role) as client:
        _, me = await client.call("GET", "/console/api/me")
        assert me["role"] == role and ("alerts:handle" in me["rights"]) == ("acknowledge" in ALLOWED[role])
        results = {
            "acknowledge": await client.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge"),
            "note": await client.call(
                "POST", f"/api/v1/alerts/{alert_id}/notes", json={"note": "called her"}
            ),
            "resolve": await client.call(
                "POST", f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "resident_ok"}
            ),
            "create_device": await client.call(
                "POST", "/api/v1/devices", json={"id": f"dev-{role}", "kind": "gsm_unit"}
            ),
            "create_resident": await client.call(
                "POST", "/api/v1/residents", json={"id": f"res-{role}", "name": "Ada"}
            ),
        }
        for action, (status, body) in results.items():
            if action in ALLOWED[role]:
                assert status in (200, 201), (action, status, body)
            else:
                assert status == 403 and body["error"] == "forbidden", (action, status, body)
        # Everyone signed in may read the queue and the live stream.
        status, _ = await client.call("GET", "/api/v1/alerts?state=open")
        assert status == 200
    alert, _ = await console_bridge.store.get_alert(alert_id)
    assert alert.state == ("resolved" if "resolve" in ALLOWED[role] else "raised")


async def test_second_operator_cannot_take_a_held_alert(console_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(console_bridge, "unit-held")
    async with (
        console_client(console_bridge, "olive") as first,
        console_client(console_bridge, "oscar") as second,
    ):
        assert (await first.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge"))[0] == 200
        status, body = await second.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
        assert status == 409 and body["detail"]["holder"] == "olive"
        status, body = await second.call(
            "POST", f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "resident_ok"}
        )
        assert status == 409


async def test_script_in_names_and_notes_is_never_markup(console_bridge: RunningBridge) -> None:
    evil = "<script>alert('x')</script>"
    await console_bridge.store.devices.upsert_resident(
        "r-evil", evil, {"medical_notes": "<img src=x onerror=alert(1)>"}
    )
    await console_bridge.store.devices.upsert_device("unit-evil", "gsm_unit", resident_id="r-evil")
    alert_id = await raise_alert(console_bridge, "unit-evil")
    await add_user(console_bridge, "o<b>'\"", "operator")
    async with console_client(console_bridge) as client:
        assert (await client.login("o<b>'\"")).status == 303
        status, note = await client.call("POST", f"/api/v1/alerts/{alert_id}/notes", json={"note": evil})
        assert status == 201
        async with client.http.get(console_bridge.url + "/console") as resp:
            html = await resp.text()
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "o&lt;b&gt;&#x27;&quot;" in html and "o<b>" not in html
        async with client.http.get(f"{console_bridge.url}/console/api/alerts/{alert_id}/context") as resp:
            assert resp.content_type == "application/json"
            context = await resp.json()
        assert context["resident"]["name"] == evil  # data as data; the page puts it on screen as text
    async with console_client(console_bridge) as client:
        async with client.http.get(console_bridge.url + "/login") as page:
            csrf = page.cookies["tc_login"].value
        async with client.http.post(
            console_bridge.url + "/login", data={"name": evil, "password": "x", "csrf": csrf}
        ) as resp:
            html = await resp.text()
        assert resp.status == 401 and "&lt;script&gt;" in html and "<script>alert" not in html
    assert escape(evil) == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert escape(Safe("<b>ok</b>")) == "<b>ok</b>"


async def test_oversized_bodies_are_413(console_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(console_bridge, "unit-big")
    async with console_client(console_bridge, "olive") as client:
        notes = f"/api/v1/alerts/{alert_id}/notes"
        status, body = await client.call("POST", notes, json={"note": "x" * 200_000})
        assert status == 413 and body["error"] == "request body too large"
        status, body = await client.call("POST", notes, json={"note": "x" * 2001})
        assert status == 422
        status, _ = await client.call("POST", "/login", data={"name": "olive", "password": "p" * 200_000})
        assert status == 413


async def test_sessions_expire_and_end(tmp_path: Path) -> None:
    clock = SteppedClock()
    config = make_config(tmp_path, TELECARE_CONSOLE__SESSION_TTL_S="3600")  # idle limit: the default 1800 s
    async with running_bridge(config) as running:
        running.bridge.app[SESSIONS].clock = clock
        async with console_client(running, "olive") as client:
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 200
            clock.advance(1700)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 200, "activity moves the idle deadline"
            clock.advance(1700)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 200
            clock.advance(199)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 200, "1 s before the absolute deadline"
            clock.advance(1)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 401, "the absolute deadline holds"
            status, _ = await client.call("GET", "/console")
            assert status == 303
        async with console_client(running, "olive") as client:
            clock.advance(1799)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 200
            clock.advance(1800)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 401, "idle for the whole limit"
    async with running_bridge(make_config(tmp_path / "out")) as running:
        async with console_client(running, "olive") as client:
            assert (await client.call("POST", "/logout"))[0] == 200
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 401
        async with console_client(running, "oscar") as client:
            from alarm_centre.sessions import set_disabled

            await set_disabled(running.store, "oscar", True)
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 401


async def test_stream_works_with_the_session(console_bridge: RunningBridge) -> None:
    async with (
        console_client(console_bridge, "olive") as client,
        client.http.get(console_bridge.url + "/api/v1/stream") as stream,
    ):
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        await stream.content.readline()
        alert_id = await raise_alert(console_bridge, "unit-live")
        async with asyncio.timeout(5):
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data:") and f'"id":"{alert_id}"' in line:
                    break


async def test_features_add_pages_to_the_nav(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.service

    async def service_levels(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        require(request, "service_levels:read")
        return page_response(request, title="Service levels", body=Safe("<p id='sl'>97.5 %</p>"))

    async def add_page(b: bridge.service.Bridge, stack: object) -> None:
        page = ConsolePage("/console/service-levels", "Service levels", "service_levels:read")
        add_console_page(b.app, page, service_levels)

    monkeypatch.setattr(bridge.service, "FEATURES", [add_page, *bridge.service.FEATURES])
    async with (
        running_bridge(make_config(tmp_path)) as running,
        console_client(running, "sue", "supervisor") as sue,
        console_client(running, "olive") as olive,
    ):
        _, html = await sue.call("GET", "/console")
        assert 'href="/console/service-levels"' in html
        status, html = await sue.call("GET", "/console/service-levels")
        assert status == 200 and "<p id='sl'>97.5 %</p>" in html and 'aria-current="page"' in html
        _, html = await olive.call("GET", "/console")
        assert "service-levels" not in html
        assert (await olive.call("GET", "/console/service-levels"))[0] == 403


def test_cli_sets_passwords_and_prints_the_token_last(tmp_path: Path) -> None:
    env = {**os.environ, "TELECARE_STORE__URL": str(tmp_path / "cli.db")}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "users", *args],
            input=stdin,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = cli("add", "olive", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    short = cli("passwd", "olive", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "10 to 1024 characters" in short.stderr
    listing = cli("list").stdout
    assert "olive" in listing and "operator" in listing and "yes" in listing

    async def check() -> None:
        from alarm_centre.sessions import check_login
        from alarm_centre.store import open_store

        async with open_store(str(tmp_path / "cli.db")) as store:
            assert await check_login(store, "olive", PASSWORD) is not None
            assert await check_login(store, "olive", PASSWORD + "x") is None

    asyncio.run(check())
