"""Sign-in throttling: a stranger's failures slow guessing down but never refuse the right password;
the counts live in the store (restarts, every node); X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from console_support import CSRF_FIELD, PASSWORD, add_user
from harness import RunningBridge, make_config, postgres_database, running_bridge

from alarm_centre.console.signin import LIMITER, forwarded_client, trusted_networks
from alarm_centre.sessions import SignInThrottle
from alarm_centre.store import open_store
from bridge.config import ConfigError, load_config

#: Small limits so the tests are short; a proxy on loopback (the test client) is trusted.
LIMITS = {
    "TELECARE_CONSOLE__LOGIN_MAX_FAILURES": "3",
    "TELECARE_CONSOLE__LOGIN_MAX_FAILURES_PER_ADDRESS": "6",
    "TELECARE_CONSOLE__LOGIN_MAX_DELAY_S": "0.3",
    "TELECARE_HTTP__TRUSTED_PROXIES": '["127.0.0.1"]',
}
STRANGER = "203.0.113.9"
OFFICE = "198.51.100.7"


async def sign_in(
    bridge: RunningBridge, name: str, password: str, *, via: str | None = None
) -> aiohttp.ClientResponse:
    """POST /login as a browser would (form, then its CSRF cookie), from ``via`` behind the proxy."""
    headers = {"X-Forwarded-For": via} if via else {}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(bridge.url + "/login", headers=headers) as page:
            csrf = CSRF_FIELD.search(await page.text())
        assert csrf is not None
        form = {"name": name, "password": password, "csrf": csrf.group(1)}
        async with http.post(
            bridge.url + "/login", data=form, headers=headers, allow_redirects=False
        ) as resp:
            await resp.read()
            return resp


async def fail_until_refused(bridge: RunningBridge, name: str, via: str | None, most: int = 12) -> int:
    """Wrong passwords from ``via`` until it is told to back off; the failures that took."""
    for n in range(most):
        resp = await sign_in(bridge, name, "wrong password", via=via)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
            return n
        assert resp.status == 401
    raise AssertionError(f"{via} was never told to back off after {most} failures")


def freeze_clock(bridge: RunningBridge, at: float = 1_000_000.0) -> None:
    """Stop the bridge's sign-in clock, so a back-off cannot run out while a slow machine catches up."""
    bridge.bridge.app[LIMITER].clock = lambda: at


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    async with running_bridge(make_config(tmp_path, **LIMITS)) as running:
        freeze_clock(running)
        yield running


async def test_a_strangers_failures_never_refuse_the_right_password(bridge: RunningBridge) -> None:
    await add_user(bridge, "olive", "operator")
    failures = await fail_until_refused(bridge, "olive", STRANGER)
    assert failures >= 3
    # The stranger's address is backing off; olive, elsewhere, signs in (her answer only slowed).
    assert (await sign_in(bridge, "olive", PASSWORD, via=OFFICE)).status == 303
    # A wrong password from the office is still just wrong, not refused for the stranger's sake.
    assert (await sign_in(bridge, "olive", "also wrong", via=OFFICE)).status == 401
    assert (await sign_in(bridge, "olive", PASSWORD, via=STRANGER)).status == 429


async def test_one_address_guessing_many_names_backs_off_alone(bridge: RunningBridge) -> None:
    await add_user(bridge, "oscar", "operator")
    for n in range(6):  # spread over names, so only the address count reaches its limit
        assert (await sign_in(bridge, f"guess{n}", "wrong password", via=STRANGER)).status == 401
    assert (await sign_in(bridge, "oscar", PASSWORD, via=STRANGER)).status == 429
    assert (await sign_in(bridge, "oscar", PASSWORD, via=OFFICE)).status == 303


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path: Path) -> None:
    limits = {**LIMITS, "TELECARE_HTTP__TRUSTED_PROXIES": "[]"}
    async with running_bridge(make_config(tmp_path, **limits)) as bridge:
        freeze_clock(bridge)
        await add_user(bridge, "olive", "operator")
        # A client that writes a new X-Forwarded-For each time is still one address: the peer's.
        for n in range(6):
            assert (await sign_in(bridge, f"guess{n}", "wrong", via=f"192.0.2.{n}")).status == 401
        assert (await sign_in(bridge, "olive", PASSWORD, via=OFFICE)).status == 429


async def test_the_counts_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, **LIMITS)
    async with running_bridge(config) as bridge:
        freeze_clock(bridge)
        await add_user(bridge, "olive", "operator")
        await fail_until_refused(bridge, "olive", STRANGER)
    async with running_bridge(config) as bridge:
        freeze_clock(bridge)
        assert (await sign_in(bridge, "olive", PASSWORD, via=STRANGER)).status == 429
        assert (await sign_in(bridge, "olive", PASSWORD, via=OFFICE)).status == 303


async def test_the_counts_are_shared_by_nodes_on_postgresql(tmp_path: Path) -> None:
    async with postgres_database() as url:
        limits = {**LIMITS, "TELECARE_STORE__URL": url}
        async with (
            running_bridge(make_config(tmp_path / "a", **limits)) as a,
            running_bridge(make_config(tmp_path / "b", **limits)) as b,
        ):
            freeze_clock(a)
            freeze_clock(b)
            await add_user(a, "olive", "operator")
            await fail_until_refused(a, "olive", STRANGER)
            assert (await sign_in(b, "olive", PASSWORD, via=STRANGER)).status == 429
            assert (await sign_in(b, "olive", PASSWORD, via=OFFICE)).status == 303


async def test_backoff_delay_and_window_on_an_injected_clock(tmp_path: Path) -> None:
    now = [1000.0]
    async with open_store(str(tmp_path / "t.db")) as store:
        throttle = SignInThrottle(
            store, per_name=3, per_address=100, window_s=300, max_delay_s=2.0, clock=lambda: now[0]
        )
        for _ in range(2):
            await throttle.failed("olive", STRANGER)
        pace = await throttle.pace("olive", STRANGER)
        assert pace.retry_after == 0 and pace.delay == 0
        await throttle.failed("olive", STRANGER)  # third: the pair backs off 1 s, the name slows
        pace = await throttle.pace("olive", STRANGER)
        assert pace.retry_after == pytest.approx(1.0) and pace.delay == pytest.approx(0.25)
        elsewhere = await throttle.pace("OLIVE", OFFICE)  # names fold case; another address
        assert elsewhere.retry_after == 0 and elsewhere.delay == pytest.approx(0.25)
        for expected_backoff in (2.0, 4.0, 8.0):
            await throttle.failed("olive", STRANGER)
            assert (await throttle.pace("olive", STRANGER)).retry_after == pytest.approx(expected_backoff)
        assert (await throttle.pace("olive", OFFICE)).delay == pytest.approx(2.0)  # capped
        now[0] += 8.5  # the stranger has waited out the back-off: one more try
        assert (await throttle.pace("olive", STRANGER)).retry_after == 0
        await throttle.succeeded("olive", OFFICE)  # does not clear the name-wide count
        assert (await throttle.pace("olive", OFFICE)).delay == pytest.approx(2.0)
        now[0] += 300.0  # the window after the last failure: all forgotten
        assert await throttle.pace("olive", STRANGER) == await throttle.pace("nobody", OFFICE)
        assert (await throttle.pace("olive", STRANGER)).delay == 0


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9"], "203.0.113.9"),  # the client's own claim is left of it
        ("127.0.0.1", ["203.0.113.9, 10.0.0.2"], "203.0.113.9"),  # a second trusted hop is skipped
        ("127.0.0.1", ["203.0.113.9", "10.0.0.2"], "203.0.113.9"),  # repeated headers read as one list
        ("127.0.0.1", ["junk, 10.0.0.2"], "10.0.0.2"),  # a non-address stops the walk
        ("192.0.2.50", ["203.0.113.9"], "192.0.2.50"),  # an untrusted peer is the client
        (None, ["203.0.113.9"], "unknown"),
    ],
)
def test_forwarded_client(peer: str | None, header: list[str], client: str) -> None:
    trusted = trusted_networks(["127.0.0.1", "10.0.0.0/24"])
    assert forwarded_client(peer, header, trusted) == client


def test_a_bad_trusted_proxy_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(None, environ={"TELECARE_HTTP__TRUSTED_PROXIES": '["10.0.0.0/33"]'})
