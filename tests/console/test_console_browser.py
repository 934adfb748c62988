"""The console in real headless Chromium (Debian's package, driven by Playwright).

An alert raised by a simulated unit over the real Mosquitto appears live; it is acknowledged with the
keyboard, noted and resolved; a second operator's screen follows; an installer cannot acknowledge;
markup in names and notes stays text. Chromium missing: skipped locally, a failure in CI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import signed_in_page
from console_support import add_user, raise_alert
from harness import RunningBridge, make_config, running_bridge

from simulators.unit import SimulatedUnit

pytestmark = pytest.mark.browser

EVIL_NAME = 'Ada <img src=x onerror="window.__pwned=1">'
EVIL_NOTE = "<script>window.__pwned=2</script> rang her, she is fine"


async def test_live_queue_keyboard_and_a_second_operator(browser: Any, bridge: RunningBridge) -> None:
    from playwright.async_api import expect

    await add_user(bridge, "olive", "operator")
    await add_user(bridge, "oscar", "operator")
    await bridge.store.devices.upsert_resident(
        "r-ada",
        EVIL_NAME,
        {
            "address": "4 Mill Lane, Leeds LS1 4AB",
            "key_safe": "code 1942, left of door",
            "medical_notes": "MS; uses a wheelchair",
            "language": "cy",
            "responders": [
                {"name": "Carl (neighbour)", "phone": "+447700900001"},
                {"name": "Bea (daughter)", "phone": "+447700900002"},
            ],
        },
    )
    await bridge.store.devices.upsert_device("unit-ada", "gsm_unit", resident_id="r-ada")
    olive = await signed_in_page(browser, bridge, "olive")
    oscar = await signed_in_page(browser, bridge, "oscar")

    host, port = bridge.broker
    root = bridge.bridge.config.topic_root
    async with SimulatedUnit("unit-ada", host=host, port=port, topic_root=root) as unit:
        ack = await unit.send("pendant", timeout=20)
        acked_at = time.monotonic()
        assert ack["result"] == "accepted"
        alert_id = ack["alert_id"]
        row = olive.locator(f"#alert-{alert_id}")
        await expect(row).to_be_visible(timeout=10_000)
        seen_after = time.monotonic() - acked_at
        print(f"alert visible {seen_after * 1000:.0f} ms after the ack")  # the issue asks for < 1 s
        await expect(row).to_contain_text("Pendant")
        await expect(row).to_contain_text(EVIL_NAME)  # markup shown as text
        await expect(olive.locator("#announcer")).to_contain_text("New emergency")
        await expect(olive.locator("#d-state")).to_have_text("Waiting")
        await expect(olive.locator("#resident")).to_contain_text("code 1942")
        await expect(olive.locator("#responders li").first).to_contain_text("Carl")
        await expect(olive.locator("#units")).to_contain_text("unit-ada")
        await expect(olive.locator(f"#alert-{alert_id} .timer")).to_have_text("0:01", timeout=5000)

        await olive.keyboard.press("a")
        await expect(row).to_contain_text("Acknowledged by olive")
        await expect(oscar.locator(f"#alert-{alert_id}")).to_contain_text(
            "Acknowledged by olive", timeout=5000
        )

        await olive.keyboard.press("n")
        await olive.fill("#note-text", EVIL_NOTE)
        await olive.click("#note-dialog button[type=submit]")
        await expect(olive.locator("#timeline")).to_contain_text(EVIL_NOTE)

        await olive.keyboard.press("r")
        await expect(olive.locator("#resolve-dialog")).to_be_visible()
        await olive.keyboard.press("1")
        await olive.keyboard.press("Enter")
        await expect(row).to_contain_text("Resolved (resident ok)")
        await expect(oscar.locator(f"#alert-{alert_id}")).to_contain_text("Resolved", timeout=5000)

    alert, timeline = await bridge.store.get_alert(alert_id)
    assert alert.state == "resolved" and alert.outcome == "resident_ok" and alert.resolved_by == "olive"
    assert [t.source for t in timeline if t.action in ("acknowledged", "note", "resolved")] == ["console"] * 3
    for page in (olive, oscar):
        assert await page.evaluate("window.__pwned") is None
        assert page.js_errors == []


async def test_installer_sees_alerts_but_cannot_acknowledge(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    await add_user(embedded_bridge, "ian", "installer")
    page = await signed_in_page(browser, embedded_bridge, "ian")
    alert_id = await raise_alert(embedded_bridge, "unit-inst", "fall")
    row = page.locator(f"#alert-{alert_id}")
    await expect(row).to_be_visible(timeout=10_000)
    await expect(row).to_contain_text("UNREGISTERED")
    await expect(page.locator("#actions")).to_be_hidden()
    await expect(page.locator("#no-handle")).to_be_visible()
    for key in await page.locator(".keys .handle-key").all():
        await expect(key).to_be_hidden()  # the key legend only shows what this role may do
    await page.keyboard.press("a")
    await expect(page.locator("#status")).to_contain_text("cannot handle alerts")
    status = await page.evaluate(
        """async (id) => {
            const me = await (await fetch('/console/api/me')).json();
            const r = await fetch(`/api/v1/alerts/${id}/acknowledge`, {method: 'POST',
                headers: {[me.csrf_header]: me.csrf}});
            return r.status;
        }""",
        alert_id,
    )
    assert status == 403
    alert, _ = await embedded_bridge.store.get_alert(alert_id)
    assert alert.state == "raised"
    assert page.js_errors == []


async def test_test_alarms_hand_over_and_sign_out(browser: Any, embedded_bridge: RunningBridge) -> None:
    from playwright.async_api import expect

    await add_user(embedded_bridge, "sue", "supervisor")
    await embedded_bridge.store.devices.upsert_device("unit-t", "gsm_unit")
    from datetime import UTC, datetime

    from alarm_centre.store.tx import PostCommit, Tx
    from devices.events import DeviceEvent
    from devices.vocabulary import EventType

    async def test_mode(tx: Tx, post: PostCommit) -> None:
        await tx.execute("UPDATE devices SET test_mode_until = ? WHERE id = 'unit-t'", time.time() + 600)

    await embedded_bridge.store.transaction(test_mode)
    page = await signed_in_page(browser, embedded_bridge, "sue")
    result = await embedded_bridge.bridge.intake.submit(
        DeviceEvent("unit-t", "t-1", EventType.PENDANT, datetime.now(UTC), test=True)
    )
    row = page.locator(f"#alert-{result.alert_id}")
    await expect(row).to_contain_text("TEST")
    assert "is-test" in (await row.get_attribute("class") or "")
    # A test alarm is no emergency: said politely, never interrupting.
    await expect(page.locator("#announcer-polite")).to_contain_text("New test alarm")
    await expect(row.locator(".prio")).to_have_text("TEST")  # never shown as a P1 emergency
    real = await embedded_bridge.bridge.intake.submit(
        DeviceEvent("unit-r", "r-1", EventType.LOW_BATTERY, datetime.now(UTC))
    )
    await expect(page.locator(f"#alert-{real.alert_id}")).to_be_visible()
    order = await page.locator(".q-item").evaluate_all("items => items.map(i => i.id)")
    assert order.index(f"alert-{real.alert_id}") < order.index(f"alert-{result.alert_id}"), order
    await page.keyboard.press("?")
    await expect(page.locator("#help-dialog")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#help-dialog")).to_be_hidden()
    await add_user(embedded_bridge, "olive", "operator")
    await page.keyboard.press("h")  # a supervisor hands the alert to an operator
    await page.fill("#reassign-to", "olive")
    await page.keyboard.press("Enter")
    await expect(row).to_contain_text("Acknowledged by olive")
    await expect(page.locator("#timeline")).to_contain_text("from nobody to olive")
    await page.click("#logout")
    await page.wait_for_url("**/login")
    response = await page.goto(embedded_bridge.url + "/console")
    assert response is not None and response.url.endswith("/login")
    assert page.js_errors == []


async def test_an_alert_the_queue_cannot_draw_is_an_error_row_and_the_rest_still_show(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    """Issue item 1: one alert the console cannot draw used to blank the whole queue."""
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    fall = await raise_alert(b, "unit-fall", "fall")
    odd_outcome = await raise_alert(b, "unit-odd", "pendant")
    odd_type = await raise_alert(b, "unit-type", "low_battery")
    battery = await raise_alert(b, "unit-batt", "low_battery")

    async def reshape(route: Any) -> None:
        """The real list, with two alerts in shapes the console was never written for."""
        response = await route.fetch()
        body = await response.json()
        for alert in body["alerts"]:
            if alert["id"] == odd_outcome:  # an outcome sent as an object (the old renderer threw)
                alert.update(state="resolved", outcome={"code": "resident_ok", "label": "Resident OK"})
            if alert["id"] == odd_type:
                alert["type"] = {"code": "low_battery"}
        await route.fulfill(response=response, body=json.dumps(body))

    async def prepare(page: Any) -> None:
        await page.route("**/api/v1/alerts?*", reshape)

    page = await signed_in_page(browser, b, "olive", prepare)
    for good in (fall, battery):
        await expect(page.locator(f"#alert-{good}")).to_be_visible()
    await expect(page.locator(f"#alert-{fall}")).to_contain_text("Fall")
    bad_outcome, bad_type = page.locator(f"#alert-{odd_outcome}"), page.locator(f"#alert-{odd_type}")
    await expect(bad_outcome).to_contain_text(f"Alert {odd_outcome} cannot be shown here.")
    await expect(bad_outcome).to_contain_text("outcome is object")
    await expect(bad_type).to_contain_text("type is object, not a string")
    order = await page.locator(".q-item").evaluate_all("items => items.map(i => i.id)")
    assert order[:2] == [f"alert-{fall}", f"alert-{battery}"], order  # the drawable ones first
    # Still keyboard-drivable: moving onto an error row says what is wrong and offers no action.
    for _ in range(3):  # fall -> battery -> the odd outcome -> the odd type
        await page.keyboard.press("j")
    await expect(page.locator(f"#alert-{odd_type} button")).to_be_focused()
    await expect(page.locator("#detail-empty")).to_contain_text(f"Alert {odd_type} cannot be shown")
    await page.keyboard.press("a")
    await expect(page.locator("#status")).to_contain_text("cannot be handled here")
    alert, _ = await b.store.get_alert(odd_type)
    assert alert.state == "raised"
    assert page.js_errors == []


async def test_note_dialog_says_how_to_submit_and_enter_adds_the_note(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    alert_id = await raise_alert(b, "unit-note", "pendant")
    page = await signed_in_page(browser, b, "olive")
    await expect(page.locator(f"#alert-{alert_id}")).to_be_visible()
    await page.locator(f"#alert-{alert_id} button").focus()
    await page.keyboard.press("n")
    await expect(page.locator("#note-dialog")).to_be_visible()
    hint = page.locator("#note-hint")
    await expect(hint).to_be_visible()
    await expect(hint).to_contain_text("Enter adds the note")
    await expect(hint).to_contain_text("Shift+Enter starts a new line")
    assert await page.locator("#note-text").get_attribute("aria-describedby") == "note-hint"
    await page.keyboard.type("rang her")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("she is fine")
    await expect(page.locator("#note-dialog")).to_be_visible()  # Shift+Enter did not submit
    await page.keyboard.press("Enter")
    await expect(page.locator("#note-dialog")).to_be_hidden()
    await expect(page.locator("#timeline")).to_contain_text("rang her")
    _, timeline = await b.store.get_alert(alert_id)
    assert [t.detail["note"] for t in timeline if t.action == "note"] == ["rang her\nshe is fine"]
    assert page.js_errors == []


async def test_an_unregistered_unit_id_is_shown_whole_at_1400_px(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    long_id = "gsm-unit-" + "0123456789" * 5 + "-abcd"  # 64 characters, the longest a device id may be
    assert len(long_id) == 64
    alert_id = await raise_alert(b, long_id, "pendant")
    page = await signed_in_page(browser, b, "olive")
    who = page.locator(f"#alert-{alert_id} .a-who")
    await expect(who).to_have_text("Unit " + long_id)
    assert await page.evaluate("() => window.innerWidth") == 1400
    fits = await who.evaluate(
        "n => n.scrollWidth <= n.clientWidth && getComputedStyle(n).textOverflow !== 'ellipsis'"
    )
    assert fits, await who.evaluate("n => [n.scrollWidth, n.clientWidth, getComputedStyle(n).textOverflow]")
    box, row = await who.bounding_box(), await page.locator(f"#alert-{alert_id}").bounding_box()
    assert box is not None and row is not None and box["x"] + box["width"] <= row["x"] + row["width"]
    assert page.js_errors == []


async def test_installations_page_shows_names_kinds_and_local_times(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from playwright.async_api import expect

    from alarm_centre.store.tx import PostCommit, Tx

    b = embedded_bridge
    await add_user(b, "ian", "installer")
    await b.store.devices.upsert_resident("res-ada", "Ada Lovelace", {"language": "en-GB"})
    await b.store.devices.upsert_device("unit-ada", "gsm_unit", resident_id="res-ada")
    await b.store.devices.upsert_device(
        "echo-ada", "alexa", resident_id="res-ada", alexa_device_id="amzn1.ask.device.A"
    )
    seen = datetime(2026, 11, 29, 22, 45, 10, tzinfo=UTC)

    async def last_seen(tx: Tx, post: PostCommit) -> None:
        await tx.execute(
            "UPDATE devices SET last_seen_at = ?, online = 1 WHERE id = 'unit-ada'", seen.timestamp()
        )

    await b.store.transaction(last_seen)
    page = await signed_in_page(browser, b, "ian", timezone_id="Asia/Kolkata")
    await page.goto(b.url + "/console/installations")
    table = page.locator("table.data-table")
    await expect(table).to_be_visible()
    row = table.locator("tr", has=page.locator('a[href="/console/installations/unit-ada"]'))
    await expect(row).to_contain_text("Ada Lovelace")
    await expect(row).to_contain_text("GSM unit")
    await expect(row).to_contain_text("online")
    await expect(table.locator("tr", has_text="echo-ada")).to_contain_text("Alexa (Echo)")
    local = seen.astimezone(ZoneInfo("Asia/Kolkata"))  # 04:15:10 the next day in India
    stamp = row.locator("time")
    await expect(stamp).to_have_attribute("datetime", "2026-11-29T22:45:10.000Z")
    text = await stamp.inner_text()
    assert local.strftime("%H:%M:%S") in text and "T22:45" not in text and "Z" not in text, text
    assert "UTC" in (await stamp.get_attribute("title") or "")
    body = await page.locator("main").inner_text()
    assert "res-ada" in body and "T22:45:10" not in body  # the id is there for the CLI; no ISO strings
    styled = await table.evaluate(
        "t => [getComputedStyle(t).borderCollapse, getComputedStyle(t.querySelector('th')).textTransform]"
    )
    assert styled == ["collapse", "uppercase"], styled
    await page.click('a[href="/console/installations/unit-ada"]')
    await expect(page.locator("h1")).to_contain_text("GSM unit")
    await expect(page.locator("table.data-table").first).to_contain_text("Ada Lovelace")
    assert page.js_errors == []


async def test_unknown_signals_show_their_raw_codes_and_a_restore_is_on_the_timeline(
    browser: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    from bridge.transports.dc09 import DC09_RECEIVER
    from devices.dc09 import Qualifier
    from simulators.dc09_panel import Dc09Panel

    config = make_config(tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0")
    async with running_bridge(config) as b:
        await add_user(b, "olive", "operator")
        page = await signed_in_page(browser, b, "olive")
        port = b.bridge.app[DC09_RECEIVER].port
        async with Dc09Panel("127.0.0.1", port, account="ABC123", resend_s=5.0) as panel:
            for code in (999, 888):
                assert (await panel.send_contact_id(code)).token == "ACK"
            assert (await panel.send_contact_id(111)).token == "ACK"
            assert (await panel.send_contact_id(111, qualifier=Qualifier.RESTORE)).token == "ACK"
        _, body = await b.call("GET", "/api/v1/alerts?state=open")
        ids = {a["data"]["event_data"].get("code", a["type"]): a["id"] for a in body["alerts"]}
        for code in ("1999", "1888"):
            row = page.locator(f"#alert-{ids[code]}")
            await expect(row).to_contain_text(f"Unknown signal: code {code} (dc09)")
            await expect(row.locator(".prio")).to_have_text("P2")
        await page.locator(f"#alert-{ids['1999']} button").click()
        await expect(page.locator("#d-type")).to_have_text("Unknown signal: code 1999 (dc09)")
        await expect(page.locator("#detail-heading")).to_contain_text("code 1999")
        await page.locator(f"#alert-{ids['smoke']} button").click()
        await expect(page.locator("#d-type")).to_have_text("Smoke")
        await expect(page.locator("#timeline")).to_contain_text("unit restored")
        await expect(page.locator("#timeline")).to_contain_text("the unit reports smoke restored")
        assert page.js_errors == []
