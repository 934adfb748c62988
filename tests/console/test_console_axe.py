"""axe-core (from the npm registry) on every console page and dialog, as operator, supervisor and installer:
no WCAG 2.0, 2.1 or 2.2 violation at level A or AA.

The centre is populated so that every kind of row and card is on screen: a registered resident's
emergency, an unregistered unit's fall, an urgent, a technical and a commissioning test alarm, an
acknowledged alert and an escalated one; the installer's unit is in test mode with its checklist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from browser_support import axe_report, axe_violations, sign_in, signed_in_page
from console_support import add_user, raise_alert
from harness import RunningBridge

from devices.events import DeviceEvent
from devices.vocabulary import EventType

pytestmark = pytest.mark.browser

UNREGISTERED = "gsm-unit-" + "0123456789" * 5 + "-abcd"  # the longest id a unit may have


async def populate(b: RunningBridge) -> dict[str, str]:
    """A centre with one alert of every kind on screen; the ids of the interesting ones."""
    for name, role in (("olive", "operator"), ("sue", "supervisor"), ("ian", "installer")):
        await add_user(b, name, role)
    status, _ = await b.call(
        "PUT",
        "/api/v1/escalation/policies/1",
        user="admin",
        role="admin",
        json={"steps": [{"after_s": 0, "action": "highlight"}]},
    )
    assert status == 200
    await b.store.devices.upsert_resident(
        "r-ada",
        "Ada Lovelace",
        {
            "address": "4 Mill Lane, Leeds LS1 4AB",
            "key_safe": "code 1942, left of door",
            "medical_notes": "MS; uses a wheelchair",
            "language": "en-GB",
            "responders": [{"name": "Carl (neighbour)", "phone": "+447700900001"}],
        },
    )
    await b.store.devices.upsert_device("unit-ada", "gsm_unit", resident_id="r-ada")
    unit = {
        "id": "unit-t",
        "kind": "gsm_unit",
        "peripherals": [{"id": "pendant-1", "type": "pendant"}, {"id": "smoke-1", "type": "smoke"}],
    }
    assert (await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=unit))[0] == 201
    ids = {
        "pendant": await raise_alert(b, "unit-ada", "pendant"),
        "unregistered": await raise_alert(b, UNREGISTERED, "fall"),
        "urgent": await raise_alert(b, "unit-door", "door_exit"),
        "technical": await raise_alert(b, "unit-batt", "low_battery"),
        "acknowledged": await raise_alert(b, "unit-ack", "smoke"),
    }
    status, _ = await b.call("POST", f"/api/v1/alerts/{ids['acknowledged']}/acknowledge", user="olive")
    assert status == 200
    for n in range(20):  # a timeline longer than its box: it scrolls
        note = {"note": f"rang the unit, attempt {n + 1}: no answer yet"}
        assert (await b.call("POST", f"/api/v1/alerts/{ids['pendant']}/notes", json=note))[0] == 201
    status, _ = await b.call(
        "POST", "/api/v1/commissioning/unit-t", user="ian", role="installer", json={"minutes": 30}
    )
    assert status == 201
    test = await b.bridge.intake.submit(
        DeviceEvent("unit-t", "t-1", EventType.PENDANT, datetime.now(UTC), test=True)
    )
    assert test.alert_id is not None
    ids["test"] = test.alert_id
    return ids


class Findings:
    """axe's violations, page by page; the test fails with all of them listed."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.pages: dict[str, list[dict[str, Any]]] = {}

    async def check(self, page: Any, where: str) -> None:
        self.pages[f"{self.role} {where}"] = await axe_violations(page)

    def report(self) -> str:
        rules = sum(len(v) for v in self.pages.values())
        nodes = sum(len(x["nodes"]) for v in self.pages.values() for x in v)
        lines = [f"{self.role}: {len(self.pages)} views, {rules} violations ({nodes} elements)"]
        lines.extend(axe_report(where, v) for where, v in self.pages.items() if v)
        return "\n".join(lines)


async def open_dialog(page: Any, opener: str, dialog: str) -> None:
    from playwright.async_api import expect

    await page.click(opener)
    await expect(page.locator(dialog)).to_be_visible()


async def close_dialog(page: Any, dialog: str) -> None:
    from playwright.async_api import expect

    await page.keyboard.press("Escape")
    await expect(page.locator(dialog)).to_be_hidden()


async def check_session_warning(page: Any, findings: Findings) -> None:
    """The warning before the session ends, brought forward: this page is told a minute is left."""
    from playwright.async_api import expect

    await page.evaluate(
        "window.TelecareSession.start({session: {expires_in_s: 60, idle_left_s: 60, idle_timeout_s: 60}})"
    )
    await expect(page.locator("#session-dialog")).to_be_visible()
    await findings.check(page, f"session warning on {await page.evaluate('location.pathname')}")
    await page.keyboard.press("Escape")  # stays signed in
    await expect(page.locator("#session-dialog")).to_be_hidden()


async def check_queue(page: Any, ids: dict[str, str], findings: Findings) -> None:
    """The queue with each kind of alert selected, and each dialog this role can open."""
    from playwright.async_api import expect

    for kind in ("pendant", "unregistered", "technical", "test", "acknowledged"):
        await page.locator(f"#alert-{ids[kind]} button").click()
        await expect(page.locator("#detail-heading")).to_contain_text(f"Alert {ids[kind]}")
        await expect(page.locator("#timeline li").first).to_be_visible()
        await findings.check(page, f"queue, {kind} alert selected")
    await page.keyboard.press("?")
    await expect(page.locator("#help-dialog")).to_be_visible()
    await findings.check(page, "help dialog")
    await close_dialog(page, "#help-dialog")
    await check_session_warning(page, findings)
    role = await page.evaluate("document.getElementById('who-role').textContent")
    if role == "installer":
        return
    await page.locator(f"#alert-{ids['pendant']} button").click()
    await open_dialog(page, "#btn-note", "#note-dialog")
    await findings.check(page, "note dialog")
    await close_dialog(page, "#note-dialog")
    await page.click("#btn-ack")
    await expect(page.locator("#btn-resolve")).to_be_enabled()
    await open_dialog(page, "#btn-resolve", "#resolve-dialog")
    await findings.check(page, "resolve dialog")
    await close_dialog(page, "#resolve-dialog")
    if role == "supervisor":
        await open_dialog(page, "#btn-reassign", "#reassign-dialog")
        await findings.check(page, "hand-over dialog")
        await close_dialog(page, "#reassign-dialog")


@pytest.mark.parametrize("role", ["operator", "supervisor", "installer"])
async def test_axe_finds_no_wcag_violation_on_any_console_page_or_dialog(
    browser: Any, embedded_bridge: RunningBridge, role: str
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    ids = await populate(b)
    name = {"operator": "olive", "supervisor": "sue", "installer": "ian"}[role]
    findings = Findings(role)
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    from browser_support import axe_source

    await context.add_init_script(path=str(axe_source()))
    page = await context.new_page()
    await page.goto(b.url + "/login")
    await findings.check(page, "sign-in page")
    await page.fill("#name", name)
    await page.fill("#password", "wrong password!")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-message")).to_be_visible()
    await findings.check(page, "sign-in page with an error")
    await sign_in(page, b, name)
    await expect(page.locator(".q-item.is-escalated").first).to_be_visible(timeout=10_000)
    await check_queue(page, ids, findings)
    links = await page.locator("header nav a").evaluate_all("links => links.map(a => a.pathname)")
    assert "/console" in links
    for path in [p for p in links if p != "/console"] + [
        "/console/installations/unit-t",
        "/console/installations/unit-ada",
        "/console/installations/no-such-unit",
    ]:
        await page.goto(b.url + path)
        await page.wait_for_load_state("load")
        await findings.check(page, path)
    await check_session_warning(page, findings)
    report = findings.report()
    print(report)
    assert all(not v for v in findings.pages.values()), report


async def test_the_axe_check_finds_a_violation_when_there_is_one(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    """The check above can fail: an image without a text alternative is reported."""
    await add_user(embedded_bridge, "olive", "operator")
    page = await signed_in_page(browser, embedded_bridge, "olive", axe=True)
    await page.evaluate("document.querySelector('main').append(document.createElement('img'))")
    assert "image-alt" in {v["id"] for v in await axe_violations(page)}
