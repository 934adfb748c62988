"""The server's half of the warning before a console session ends (WCAG 2.2.1), over real HTTP.

``/console/api/me`` tells the page how long is left (counted on the server), ``POST
/console/api/session/extend`` is the "Stay signed in" button, and ``/login?ended=timeout`` says why the
operator is back at the sign-in form. Sessions follow a :class:`SteppedClock`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clock import SteppedClock
from console_support import console_client
from harness import make_config, running_bridge

from alarm_centre.console.signin import SESSIONS

EXTEND = "/console/api/session/extend"


async def test_me_says_how_long_is_left_and_stay_signed_in_extends_both_deadlines(tmp_path: Path) -> None:
    clock = SteppedClock()
    config = make_config(
        tmp_path, TELECARE_CONSOLE__SESSION_TTL_S="3600", TELECARE_CONSOLE__IDLE_TIMEOUT_S="600"
    )
    async with running_bridge(config) as b:
        b.bridge.app[SESSIONS].clock = clock
        async with console_client(b, "olive") as client:
            status, me = await client.call("GET", "/console/api/me")
            assert status == 200
            assert me["session"] == {
                "expires_in_s": 3600.0,
                "idle_left_s": 600.0,
                "idle_timeout_s": 600.0,
                "extension_s": 600.0,
            }
            for _ in range(7):  # busy for 3500 s: never idle for long
                clock.advance(500)
                assert (await client.call("GET", "/api/v1/alerts"))[0] == 200
            status, body = await client.call("POST", EXTEND)
            assert status == 200, body
            assert body["session"]["expires_in_s"] == 600.0 and body["session"]["idle_left_s"] == 600.0
            for _ in range(10):  # as often as the operator answers the warning (WCAG: at least ten times)
                clock.advance(500)
                status, body = await client.call("POST", EXTEND)
                assert status == 200 and body["session"]["expires_in_s"] == 600.0
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 200, "long past the first deadline"
            clock.advance(601)
            assert (await client.call("POST", EXTEND))[0] == 401, "an ended session cannot be revived"
            assert (await client.call("GET", "/api/v1/alerts"))[0] == 401


async def test_extending_never_shortens_a_session(tmp_path: Path) -> None:
    clock = SteppedClock()
    async with running_bridge(make_config(tmp_path)) as b:  # 12 h sessions, 30 min idle
        b.bridge.app[SESSIONS].clock = clock
        async with console_client(b, "olive") as client:
            clock.advance(60)
            status, body = await client.call("POST", EXTEND)
            assert status == 200
            assert body["session"]["expires_in_s"] == 43200.0 - 60
            assert body["session"]["idle_left_s"] == 1800.0


@pytest.mark.parametrize(
    ("csrf", "expected"),
    [(False, 403), ("not-the-token", 403), (True, 200)],
)
async def test_extending_needs_the_sessions_csrf_token(
    tmp_path: Path, csrf: str | bool, expected: int
) -> None:
    async with running_bridge(make_config(tmp_path)) as b, console_client(b, "olive") as client:
        status, _ = await client.call("POST", EXTEND, csrf=csrf if csrf is not False else None)
        assert status == expected


async def test_extending_without_a_session(tmp_path: Path) -> None:
    async with running_bridge(make_config(tmp_path)) as b:
        async with console_client(b) as stranger:
            assert (await stranger.call("POST", EXTEND, csrf=None))[0] == 401
        status, _ = await b.call("POST", EXTEND, user="api-user")  # a bearer token has no session
        assert status == 401
        async with console_client(b, "olive") as client:
            status, _ = await client.call("GET", EXTEND)
            assert status == 405
            status, _ = await client.call("POST", EXTEND, data=b"x" * 100_000)
            assert status in (200, 413)  # the body is never read: no harm either way


async def test_the_sign_in_page_says_why_the_operator_is_back(tmp_path: Path) -> None:
    async with running_bridge(make_config(tmp_path)) as b, console_client(b) as stranger:
        status, page = await stranger.call("GET", "/login?ended=timeout")
        assert status == 200 and "Your session ended" in page and "a note you had not sent is kept" in page
        for odd in ("<script>alert(1)</script>", "x" * 5000, "", "TIMEOUT"):
            status, page = await stranger.call("GET", "/login?ended=" + odd)
            assert status == 200 and "Your session ended" not in page
            assert "<script>alert(1)</script>" not in page  # nothing from the address is echoed
