"""The console's incoming-call banner and live call state in real headless Chromium (Debian's package,
driven by Playwright), on a bridge taking calls through the Twilio stand-in.

- An operator on a phone: taking calls is a toggle button; a unit's call rings their phone, the banner
  says so in an assertive live region without taking the focus, the alert card opens; when the phone is
  answered the card shows the live call, recorded; ``x`` hangs up and the call is shown ended.
- An operator in the browser: the console fetches an access token and loads the Voice SDK from the bridge
  (a stand-in SDK here); the offered call rings in the browser, ``p`` answers it.
Chromium missing: skipped locally, a failure in CI.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import axe_report, axe_source, axe_violations
from clock import SteppedClock
from console_support import PASSWORD, add_user
from escalation_support import raise_alert
from harness import IN_CI, RunningBridge, running_bridge
from telephony_support import ALICE_PHONE, CENTRE, UNIT_SIM, ringing, settle, telephony_config

from alarm_centre.telephony.settings import client_identity
from simulators.twilio_server import TwilioServer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
#: A stand-in for Twilio's Voice SDK: the Device the console builds, and a way for the test to ring it.
FAKE_SDK = """
window.Twilio = { Device: class {
  constructor(token, options) { window.__sdk = { token, options, registered: false }; this.handlers = {};
    window.__device = this; }
  on(name, fn) { (this.handlers[name] = this.handlers[name] || []).push(fn); }
  emit(name, ...args) { for (const fn of this.handlers[name] || []) fn(...args); }
  async register() { window.__sdk.registered = true; }
  updateToken(token) { window.__sdk.token = token; }
} };
window.__ring = () => {
  const call = { handlers: {}, on(n, f) { (this.handlers[n] = this.handlers[n] || []).push(f); },
    emit(n) { for (const f of this.handlers[n] || []) f(); },
    accept() { window.__accepted = (window.__accepted || 0) + 1; this.emit("accept"); },
    reject() { window.__rejected = true; this.emit("reject"); }, disconnect() { this.emit("disconnect"); } };
  window.__device.emit("incoming", call);
};
"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 - one stat before the browser starts
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + "; CI must provide it (scripts/test installs it)")
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def sign_in(browser: Any, bridge: RunningBridge, name: str) -> Any:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await context.add_init_script(path=str(axe_source()))  # WCAG checks of the call banner and panel
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    await page.goto(bridge.url + "/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await page.wait_for_selector("body[data-ready=true]")
    await page.wait_for_selector("body[data-calls=ready]")
    await page.wait_for_selector("body.calls-live")
    return page


async def unit_of_mary(bridge: RunningBridge) -> None:
    status, body = await bridge.call(
        "POST", "/api/v1/residents", user="ian", role="admin", json={"id": "res-m", "name": "Mary Jones"}
    )
    assert status == 201, body
    unit = {"id": "unit-m", "kind": "gsm_unit", "resident_id": "res-m", "phone": UNIT_SIM}
    status, body = await bridge.call("POST", "/api/v1/devices", user="ian", role="admin", json=unit)
    assert status == 201, body


async def test_the_incoming_call_banner_and_live_call_state(
    browser: Any, bridge: RunningBridge, twilio: TwilioServer
) -> None:
    from playwright.async_api import expect

    await add_user(bridge, "alice", "operator")
    await unit_of_mary(bridge)
    page = await sign_in(browser, bridge, "alice")
    toggle = page.locator("#call-available")
    await expect(toggle).to_have_text("Not taking calls")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await toggle.focus()
    await page.keyboard.press("Enter")  # a real button: the keyboard works it
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await expect(toggle).to_have_text("Taking calls (phone)")

    alert_id = await raise_alert(bridge, "unit-m", "fall")
    await expect(page.locator(f"#alert-{alert_id}")).to_be_visible()
    await page.locator(f"#alert-{alert_id} button").focus()
    caller = await twilio.dial_in(UNIT_SIM, CENTRE)
    leg = await ringing(twilio, ALICE_PHONE)

    offer = page.locator("#call-offers li")
    await expect(offer).to_contain_text("Incoming call: Fall, Mary Jones")
    await expect(offer).to_contain_text("Answer it on your phone")
    announcer = page.locator("#call-announcer")
    await expect(announcer).to_have_attribute("aria-live", "assertive")
    await expect(announcer).to_contain_text("Incoming call for you: Fall, Mary Jones")
    await expect(page.locator("#detail-heading")).to_contain_text(f"Alert {alert_id}")
    focused = await page.evaluate("document.activeElement.dataset.id")
    assert focused == alert_id, "the banner never takes the focus from the operator"
    decline = page.get_by_role("button", name=f"Decline the call on alert {alert_id}")
    await expect(decline).to_be_visible()
    violations = await axe_violations(page)
    assert not violations, axe_report("incoming-call banner", violations)

    await twilio.answer(leg.sid)  # alice picks up her phone
    await settle(bridge)
    await expect(offer).to_have_count(0)
    panel = page.locator("#call-panel")
    await expect(panel).to_be_visible()
    await expect(panel.locator(".call-state")).to_contain_text("Connected")
    await expect(panel).to_contain_text("recorded")
    await expect(panel).to_contain_text("alice: on the line")
    await expect(panel.get_by_role("button", name="Hang up")).to_be_visible()
    await expect(announcer).to_contain_text(f"Call on alert {alert_id} connected")
    violations = await axe_violations(page)
    assert not violations, axe_report("live call panel", violations)

    await page.locator(f"#alert-{alert_id} button").focus()
    await page.keyboard.press("x")  # hang up, from the keyboard
    await settle(bridge)
    await twilio.settled()
    await settle(bridge)
    assert twilio.voice.calls[caller.sid].status == "completed"
    await expect(panel.locator(".call-state")).to_contain_text("Ended (answered)")
    await expect(page.locator("#timeline")).to_contain_text("call answered")
    assert page.js_errors == []
    await expect(panel.locator("audio")).to_have_count(0)  # an operator plays no recordings

    # A supervisor opens the alert: its recording plays from the card, through the bridge.
    await add_user(bridge, "sue", "supervisor")
    sue = await sign_in(browser, bridge, "sue")
    await sue.locator(f"#alert-{alert_id} button").click()
    audio = sue.locator("#call-panel audio")
    await expect(audio).to_have_count(1)
    src = await audio.get_attribute("src")
    assert src is not None and src.startswith("/api/v1/recordings/") and src.endswith("/audio")
    await expect(audio).to_have_attribute("aria-label", re.compile(r"Recording of call \d+"))
    played = await sue.evaluate(
        "async (src) => { const r = await fetch(src); return [r.status, r.headers.get('content-type')]; }",
        src,
    )
    assert played == [200, "audio/mpeg"]
    assert sue.js_errors == []


async def test_an_operator_in_the_browser_answers_with_p(
    browser: Any, tmp_path: Path, twilio: TwilioServer, clock: SteppedClock
) -> None:
    from playwright.async_api import expect

    sdk = tmp_path / "twilio.min.js"
    sdk.write_text(FAKE_SDK)
    config = telephony_config(
        tmp_path,
        twilio,
        operators={"bea": {"browser": True}},
        TELECARE_TELEPHONY__VOICE_SDK__API_KEY_SID="SK" + "2" * 32,
        TELECARE_TELEPHONY__VOICE_SDK__API_KEY_SECRET="the-api-key-secret-0123456789abcdef",
        TELECARE_TELEPHONY__VOICE_SDK__SDK_FILE=str(sdk),
    )
    async with running_bridge(config, clock=clock) as bridge:
        twilio.configure_number(CENTRE, bridge.url + "/twilio/voice")
        await add_user(bridge, "bea", "operator")
        page = await sign_in(browser, bridge, "bea")
        await page.wait_for_function("() => window.__sdk && window.__sdk.registered")
        token = await page.evaluate("window.__sdk.token")
        assert json.dumps(token).count(".") == 2, "a JWT from /api/v1/telephony/token"
        await page.locator("#call-available").click()
        await expect(page.locator("#call-available")).to_have_text("Taking calls (browser)")

        caller = await twilio.dial_in("+447700900888", CENTRE)
        leg = await ringing(twilio, "client:" + client_identity("bea"))
        await page.evaluate("window.__ring()")  # Twilio rings the browser
        answer = page.get_by_role("button", name="Answer the call on alert")
        await expect(answer).to_be_visible()
        await expect(page.locator("#call-announcer")).to_contain_text("Press P to answer")
        # Letter keys act with focus on the queue or nowhere in particular, never on a button (WCAG 2.1.4).
        await page.keyboard.press("p")
        assert await page.evaluate("window.__accepted || 0") == 0, "p on the toggle button answered"
        await page.evaluate("document.activeElement.blur()")
        await page.keyboard.press("p")
        await page.wait_for_function("() => window.__accepted === 1")
        await twilio.answer(leg.sid)  # the SDK's accept connects the leg at Twilio
        await settle(bridge)
        await expect(page.locator("#call-offers li")).to_have_count(0)
        await expect(page.locator("#call-panel .call-state")).to_contain_text("Connected")
        await twilio.hang_up(caller.sid)
        assert page.js_errors == []
