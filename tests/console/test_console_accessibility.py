"""WCAG 2.2 AA checks of the console that axe cannot make, in real headless Chromium.

Keyboard (2.1.1, 2.1.4), timing (2.2.1, 2.2.2), reflow at 320 px (1.4.10), focus not obscured at 200 %
zoom (2.4.11), label in name (2.5.3), info and relationships (1.3.1), use of colour (1.4.1), and what a
screen reader is told (4.1.3). Every check here failed on the console before issue 16.

Time in the browser is Playwright's clock where a check needs minutes to pass; the bridge's sessions
follow a :class:`SteppedClock`; nothing sleeps to wait.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from browser_support import axe_report, axe_violations, sign_in, signed_in_page
from clock import SteppedClock
from console_support import add_user, raise_alert
from harness import RunningBridge, make_config, running_bridge

from alarm_centre.console import SESSION_COOKIE
from alarm_centre.console.signin import SESSIONS
from devices.events import DeviceEvent
from devices.vocabulary import EventType

pytestmark = pytest.mark.browser

#: Records every fetch the page starts, synchronously, so a test can tell that a key started none.
RECORD_FETCHES = """
window.__fetches = [];
const realFetch = window.fetch.bind(window);
window.fetch = (input, init) => {
  const url = String(input && input.url ? input.url : input);
  window.__fetches.push(((init && init.method) || "GET") + " " + url);
  return realFetch(input, init);
};
"""
UNREGISTERED = "gsm-unit-" + "0123456789" * 5 + "-abcd"


async def record_fetches(page: Any) -> None:
    await page.add_init_script(RECORD_FETCHES)


async def fetches(page: Any, what: str) -> list[str]:
    calls: list[str] = await page.evaluate("window.__fetches")
    return [c for c in calls if what in c]


async def escalate_emergencies_at_once(b: RunningBridge) -> None:
    """An escalation policy that highlights every emergency as soon as it is raised."""
    status, _ = await b.call(
        "PUT",
        "/api/v1/escalation/policies/1",
        user="admin",
        role="admin",
        json={"steps": [{"after_s": 0, "action": "highlight"}]},
    )
    assert status == 200


# -- 2.1.4 character key shortcuts -----------------------------------------------------------------


async def test_single_key_shortcuts_act_only_on_the_queue_and_can_be_turned_off(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    alert_id = await raise_alert(b, "unit-keys", "pendant")
    page = await signed_in_page(browser, b, "olive", record_fetches)
    row = page.locator(f"#alert-{alert_id} button")
    await expect(row).to_be_visible()
    ack = f"/alerts/{alert_id}/acknowledge"
    for control in ("#sound-toggle", "#logout", "header nav a", "#btn-note", "#help-button"):
        await page.locator(control).first.focus()
        for key in ("a", "j", "r", "n", "?"):
            await page.keyboard.press(key)
        assert await fetches(page, ack) == [], f"'a' acknowledged with focus on {control}"
        await expect(page.locator("dialog[open]")).to_have_count(0)
        await expect(page.locator(control).first).to_be_focused()
    # On the queue they act: that is where they are meant.
    await row.focus()
    await page.keyboard.press("?")
    await expect(page.locator("#help-dialog")).to_be_visible()
    switch = page.locator("#shortcuts-on")
    await expect(switch).to_be_checked()
    await switch.uncheck()
    await page.keyboard.press("Escape")
    await expect(page.locator("#help-dialog")).to_be_hidden()
    await expect(page.locator(".keys")).to_contain_text("Single-key shortcuts are off")
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    await page.locator(f"#alert-{alert_id} button").focus()
    for key in ("a", "j", "k", "r", "n", "?"):
        await page.keyboard.press(key)
    assert await fetches(page, ack) == [], "shortcuts switched off (and remembered) still acted"
    await expect(page.locator("dialog[open]")).to_have_count(0)
    await page.click("#btn-ack")  # the buttons still work, of course
    await expect(page.locator(f"#alert-{alert_id}")).to_contain_text("Acknowledged by olive")
    assert page.js_errors == []


# -- 2.2.1 timing adjustable: the session warning, and drafts that survive -------------------------


async def test_a_warning_before_the_session_ends_extends_it_and_a_half_written_note_survives(
    browser: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    server_clock = SteppedClock()
    # An hour's session; the idle limit is out of the way (the open queue's stream would keep it moving,
    # but the clocks here jump an hour at a time, with no stream traffic in between).
    config = make_config(
        tmp_path, TELECARE_CONSOLE__SESSION_TTL_S="3600", TELECARE_CONSOLE__IDLE_TIMEOUT_S="86400"
    )
    async with running_bridge(config) as b:
        b.bridge.app[SESSIONS].clock = server_clock
        await add_user(b, "olive", "operator")
        alert_id = await raise_alert(b, "unit-draft", "pendant")

        async def browser_clock(page: Any) -> None:
            await page.clock.install()

        page = await signed_in_page(browser, b, "olive", browser_clock)
        await page.locator(f"#alert-{alert_id} button").click()
        await page.click("#btn-note")
        await page.keyboard.type("Rang her twice, no answer; Carl is on his")
        warning = page.locator("#session-dialog")
        await expect(warning).to_be_hidden()

        async def time_passes(seconds: int) -> None:
            server_clock.advance(seconds)
            await page.clock.fast_forward(seconds * 1000)

        await time_passes(3600 - 100)  # 100 s left: the warning is up, with at least 20 s to answer
        await expect(warning).to_be_visible()
        assert await warning.get_attribute("role") == "alertdialog"
        await expect(warning).to_contain_text("Your session ends in")
        stay = page.locator("#session-stay")
        await expect(stay).to_be_focused()
        await stay.click()
        await expect(warning).to_be_hidden()
        await expect(page.locator("#note-text")).to_be_focused()  # back where the operator was typing
        await expect(page.locator("#note-text")).to_have_value("Rang her twice, no answer; Carl is on his")
        cookie = next(c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE)
        session = await b.bridge.app[SESSIONS].lookup(cookie["value"])
        assert session is not None and session.deadline - server_clock() >= 3600, "extended by an hour"

        # Nobody answers the next warning: the session ends, the note is kept for after signing in.
        await time_passes(3600 - 119)
        await expect(warning).to_be_visible()
        await time_passes(200)
        await page.wait_for_url("**/login**")
        await expect(page.locator("#login-message")).to_contain_text("session ended")
        await page.clock.resume()
        await sign_in(page, b, "olive")
        await page.locator(f"#alert-{alert_id} button").click()
        await page.click("#btn-note")
        await expect(page.locator("#note-text")).to_have_value("Rang her twice, no answer; Carl is on his")
        await expect(page.locator("#note-draft")).to_contain_text("restored")
        await page.keyboard.press("Enter")
        await expect(page.locator("#timeline")).to_contain_text("Carl is on his")
        await page.click("#btn-note")
        await expect(page.locator("#note-text")).to_have_value("")  # a sent note is no longer a draft
        assert page.js_errors == []


# -- 2.2.1 / 2.2.2: the commissioning checklist updates without reloading, and can be paused ------


async def test_the_commissioning_checklist_updates_in_place_and_can_be_paused(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "ian", "installer")
    unit = {
        "id": "unit-c",
        "kind": "gsm_unit",
        "peripherals": [{"id": "pendant-1", "type": "pendant"}, {"id": "smoke-1", "type": "smoke"}],
    }
    assert (await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=unit))[0] == 201
    status, _ = await b.call(
        "POST", "/api/v1/commissioning/unit-c", user="ian", role="installer", json={"minutes": 30}
    )
    assert status == 201

    async def prepare(page: Any) -> None:
        await page.clock.install()
        await record_fetches(page)

    page = await signed_in_page(browser, b, "ian", prepare)
    response = await page.goto(b.url + "/console/installations/unit-c")
    assert response is not None and "refresh" not in response.headers, "the page must not reload itself"
    await page.evaluate("window.__same_document = true")
    progress = page.locator("#commissioning-progress")
    await expect(progress).to_contain_text("0 of 2")

    async def press(event_id: str, kind: EventType) -> None:
        await b.bridge.intake.submit(DeviceEvent("unit-c", event_id, kind, datetime.now(UTC), test=True))

    await press("t1", EventType.PENDANT)
    await page.clock.fast_forward(3000)
    await expect(progress).to_contain_text("1 of 2")
    pause = page.locator("#live-pause")
    await expect(pause).to_have_attribute("aria-pressed", "false")
    await pause.click()
    await expect(pause).to_have_attribute("aria-pressed", "true")
    asked = len(await fetches(page, "/console/installations/unit-c"))
    await press("t2", EventType.SMOKE)
    await page.clock.fast_forward(30_000)
    assert len(await fetches(page, "/console/installations/unit-c")) == asked, "paused, yet it asked"
    await expect(progress).to_contain_text("1 of 2")
    await pause.click()
    await expect(progress).to_contain_text("2 of 2")
    assert await page.evaluate("window.__same_document") is True, "the page reloaded"
    assert page.js_errors == []


# -- 2.5.3 label in name, 1.3.1 the resident card, 2.1.1 the timeline ------------------------------


async def test_rows_are_named_by_their_visible_text_and_the_cards_are_well_formed(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    ids = [await raise_alert(b, UNREGISTERED, "fall"), await raise_alert(b, "unit-b", "low_battery")]
    for n in range(25):
        status, _ = await b.call("POST", f"/api/v1/alerts/{ids[0]}/notes", json={"note": f"attempt {n}"})
        assert status == 201
    page = await signed_in_page(browser, b, "olive")
    for alert_id in ids:
        button = page.locator(f"#alert-{alert_id} button")
        await expect(button).to_be_visible()
        visible = await button.evaluate(  # what each part shows (the ticking timer aside)
            """b => [...b.querySelectorAll(':scope > span:not(.timer):not(.sr-only)')]
                .filter((s) => s.offsetWidth > 0 && !s.closest('[aria-hidden]'))
                .map((s) => {
                    const shown = s.cloneNode(true);
                    shown.querySelectorAll('.sr-only').forEach((n) => n.remove());
                    return shown.textContent.replace(/\\s+/g, ' ').trim();
                })
                .filter(Boolean)"""
        )
        name = re.sub(r"\s+", " ", (await button.aria_snapshot()).split('"', 1)[1].rsplit('"', 1)[0])
        assert name.startswith(visible[0]), (name, visible)
        for text in visible:
            assert text in name, f"visible {text!r} is not in the name {name!r}"
    await page.locator(f"#alert-{ids[0]} button").click()
    await expect(page.locator("#resident")).to_contain_text("Unregistered device")
    orphans = await page.locator("#resident").evaluate(
        "dl => [...dl.querySelectorAll(':scope > dd')].filter(dd => !(dd.previousElementSibling && "
        "['DT', 'DD'].includes(dd.previousElementSibling.tagName) && dl.querySelector(':scope > dt'))).length"
    )
    assert orphans == 0, "a <dd> without its <dt>"
    timeline = page.locator("#timeline")
    await expect(timeline).to_contain_text("attempt 24")
    scrolls = await timeline.evaluate("t => t.scrollHeight > t.clientHeight")
    assert scrolls, "the test needs a timeline longer than its box"
    await timeline.focus()
    await expect(timeline).to_be_focused()
    assert await timeline.evaluate("t => t.tabIndex") == 0, "reachable with Tab"
    await page.keyboard.press("End")
    await page.wait_for_function("() => document.getElementById('timeline').scrollTop > 0")
    assert page.js_errors == []


# -- 1.4.10 reflow at 320 CSS px, and no widening at 1280 ------------------------------------------


async def horizontal_overflow(page: Any) -> int:
    """CSS pixels the page is wider than its viewport (0: nothing to scroll sideways)."""
    width: int = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


async def assert_inside(page: Any, selector: str, width: int) -> None:
    for node in await page.locator(selector).all():
        if not await node.is_visible():
            continue
        box = await node.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (
            selector,
            box,
        )


async def test_the_console_reflows_at_320_css_pixels(browser: Any, embedded_bridge: RunningBridge) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "sue", "supervisor")
    await add_user(b, "olive", "operator")
    ids = [await raise_alert(b, UNREGISTERED, "fall"), await raise_alert(b, "unit-b", "low_battery")]
    await b.call("POST", f"/api/v1/alerts/{ids[0]}/notes", json={"note": "rang the unit: " + "x" * 80})
    page = await signed_in_page(browser, b, "sue", axe=True, viewport={"width": 320, "height": 640})
    for alert_id in ids:
        await page.locator(f"#alert-{alert_id} button").click()
        await expect(page.locator("#timeline li").first).to_be_visible()
        assert await horizontal_overflow(page) == 0, f"queue with alert {alert_id}"
        await assert_inside(page, "#actions button", 320)
        violations = await axe_violations(page)
        assert violations == [], axe_report(f"queue at 320 px, alert {alert_id}", violations)
    await page.locator(f"#alert-{ids[0]} button").click()
    await page.click("#btn-ack")
    await expect(page.locator("#btn-resolve")).to_be_enabled()
    for opener, dialog in (
        ("#btn-note", "#note-dialog"),
        ("#btn-resolve", "#resolve-dialog"),
        ("#btn-reassign", "#reassign-dialog"),
        ("#help-button", "#help-dialog"),
    ):
        await page.locator(opener).scroll_into_view_if_needed()
        await page.click(opener)
        await expect(page.locator(dialog)).to_be_visible()
        await assert_inside(page, dialog, 320)
        await assert_inside(page, f"{dialog} button, {dialog} input, {dialog} textarea", 320)
        await page.keyboard.press("Escape")
        await expect(page.locator(dialog)).to_be_hidden()
    for path in ("/console/installations", "/console/service-levels"):
        await page.goto(b.url + path)
        assert await horizontal_overflow(page) == 0, path  # wide tables scroll inside their own box
        violations = await axe_violations(page)  # ... which can be scrolled with the keyboard
        assert violations == [], axe_report(f"{path} at 320 px", violations)
    await page.context.clear_cookies()
    await page.goto(b.url + "/login")
    assert await horizontal_overflow(page) == 0, "sign-in page"
    await assert_inside(page, "form button, form input", 320)
    assert page.js_errors == []


async def test_selecting_an_unregistered_alert_does_not_widen_the_page_at_1280(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    await raise_alert(b, "unit-b", "low_battery")
    alert_id = await raise_alert(b, UNREGISTERED, "fall")
    page = await signed_in_page(browser, b, "olive", viewport={"width": 1280, "height": 800})
    await page.locator(f"#alert-{alert_id} button").click()
    await expect(page.locator("#units")).to_contain_text(UNREGISTERED)
    assert await horizontal_overflow(page) == 0
    assert page.js_errors == []


# -- 2.4.11 focus not obscured at 200 % zoom -------------------------------------------------------


async def test_the_key_bar_never_hides_the_focused_row_at_200_percent_zoom(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    ids = [await raise_alert(b, f"unit-{n:02}", "pendant") for n in range(12)]
    # 1280 x 800 at 200 %: 640 x 400 CSS pixels, each two device pixels wide.
    page = await signed_in_page(
        browser, b, "olive", viewport={"width": 640, "height": 400}, device_scale_factor=2
    )
    await expect(page.locator(f"#alert-{ids[-1]}")).to_be_visible()

    async def obscured() -> str | None:
        return await page.evaluate(  # type: ignore[no-any-return]
            """() => {
                const focused = document.activeElement;
                const f = focused.getBoundingClientRect();
                for (const n of document.querySelectorAll('body *')) {
                    const s = getComputedStyle(n);
                    if (!['fixed', 'sticky'].includes(s.position) || n.contains(focused)) continue;
                    const r = n.getBoundingClientRect();
                    const across = r.left < f.right && r.right > f.left;
                    const overlap = across && r.top < f.bottom && r.bottom > f.top;
                    if (r.width && r.height && overlap)
                        return (n.id || n.className) + ' covers ' + focused.outerHTML.slice(0, 80);
                }
                return null;
            }"""
        )

    await page.locator(f"#alert-{ids[0]} button").focus()
    for _ in ids:
        assert await obscured() is None
        await page.keyboard.press("j")
    for _ in range(40):  # and with Tab, through everything on the page
        await page.keyboard.press("Tab")
        assert await obscured() is None
    assert page.js_errors == []


# -- 4.1.3 status messages: a burst is summed up; technical alerts are polite ----------------------

RECORD_ANNOUNCEMENTS = """
window.__said = [];
document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[aria-live]")) {
    new MutationObserver(() => {
      const text = region.textContent.trim();
      if (text) window.__said.push({live: region.getAttribute("aria-live"), text});
    }).observe(region, {childList: true, characterData: true, subtree: true});
  }
});
"""


async def test_a_burst_of_twelve_emergencies_is_announced_as_a_summary(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")

    async def listen(page: Any) -> None:
        await page.add_init_script(RECORD_ANNOUNCEMENTS)

    page = await signed_in_page(browser, b, "olive", listen)
    results = await asyncio.gather(
        *(
            b.bridge.intake.submit(DeviceEvent(f"unit-{n:02}", f"e-{n}", EventType.FALL, datetime.now(UTC)))
            for n in range(12)
        )
    )
    await expect(page.locator(".q-item")).to_have_count(12)
    # Wait until the twelve have all been told (one summary, or very rarely two if the stream split them).
    await page.wait_for_function(
        """() => window.__said.filter((s) => s.live === "assertive").reduce((n, s) => {
            const m = s.text.match(/^(\\d+) new emergencies/);
            return n + (m ? Number(m[1]) : s.text.startsWith("New emergency") ? 1 : 0);
        }, 0) >= 12"""
    )
    said: list[dict[str, str]] = await page.evaluate("window.__said")
    assertive = [s["text"] for s in said if s["live"] == "assertive"]
    counted = sum(int(m.group(1)) for s in assertive for m in [re.match(r"(\d+) new emergencies", s)] if m)
    counted += sum(1 for s in assertive if s.startswith("New emergency"))
    assert counted == 12 and len(assertive) <= 2, assertive
    assert any(s.startswith("12 new emergencies: Fall for ") for s in assertive) or len(assertive) == 2
    assert len(results) == 12
    assert page.js_errors == []


async def test_technical_alerts_are_announced_politely_and_emergencies_assertively(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")

    async def listen(page: Any) -> None:
        await page.add_init_script(RECORD_ANNOUNCEMENTS)

    page = await signed_in_page(browser, b, "olive", listen)
    await raise_alert(b, "unit-batt", "low_battery")
    polite = page.locator("#announcer-polite")
    await expect(polite).to_contain_text("Low battery")
    assert await polite.get_attribute("aria-live") == "polite"
    await raise_alert(b, "unit-fall", "fall")
    await expect(page.locator("#announcer")).to_contain_text("Fall")
    said: list[dict[str, str]] = await page.evaluate("window.__said")
    assert [s["live"] for s in said if "Low battery" in s["text"]] == ["polite"], said
    assert [s["live"] for s in said if "Fall" in s["text"]] == ["assertive"], said
    assert page.js_errors == []


# -- help by a button; focus goes back to what opened a dialog -------------------------------------


async def test_help_has_a_button_and_focus_returns_to_what_opened_each_dialog(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "sue", "supervisor")
    alert_id = await raise_alert(b, "unit-f", "pendant")
    page = await signed_in_page(browser, b, "sue")
    help_button = page.get_by_role("button", name=re.compile("keyboard help", re.I))
    await expect(help_button).to_be_visible()
    await help_button.click()
    await expect(page.locator("#help-dialog")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(help_button).to_be_focused()
    await page.locator(f"#alert-{alert_id} button").click()
    for opener, dialog in (("#btn-note", "#note-dialog"), ("#btn-reassign", "#reassign-dialog")):
        await page.click(opener)
        await expect(page.locator(dialog)).to_be_visible()
        await page.keyboard.press("Escape")
        await expect(page.locator(opener)).to_be_focused()
        await page.click(opener)
        await page.click(f"{dialog} .cancel")
        await expect(page.locator(opener)).to_be_focused()
    await page.click("#btn-ack")
    await expect(page.locator("#btn-resolve")).to_be_enabled()
    await page.click("#btn-resolve")
    await page.keyboard.press("Escape")
    await expect(page.locator("#btn-resolve")).to_be_focused()
    row = page.locator(f"#alert-{alert_id} button")
    await row.focus()
    await page.keyboard.press("n")  # opened from the queue by its key: back to the row
    await expect(page.locator("#note-dialog")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(row).to_be_focused()
    assert page.js_errors == []


# -- 1.4.1 use of colour: a late timer, and the selected row among escalated ones ------------------


async def test_a_late_timer_and_the_selected_escalated_row_do_not_rely_on_colour(
    browser: Any, embedded_bridge: RunningBridge
) -> None:
    from playwright.async_api import expect

    b = embedded_bridge
    await add_user(b, "olive", "operator")
    await escalate_emergencies_at_once(b)
    late = await raise_alert(b, "unit-late", "low_battery")
    first = await raise_alert(b, "unit-e1", "pendant")
    second = await raise_alert(b, "unit-e2", "pendant")

    async def browser_clock(page: Any) -> None:
        await page.clock.install()

    page = await signed_in_page(browser, b, "olive", browser_clock)
    for alert_id in (first, second):
        await expect(page.locator(f"#alert-{alert_id}")).to_have_class(re.compile("is-escalated"))
    timer = page.locator(f"#alert-{late} .timer")
    await page.clock.fast_forward(90_000)  # a minute and a half without an answer
    await expect(timer).to_have_class(re.compile("overdue"))
    text = (await timer.inner_text()).lower()
    problems = [] if "late" in text else [f"a late timer says so in words, not only in red: {text!r}"]

    async def grey_picture(alert_id: str) -> bytes:
        """The row and what is drawn just left and right of it (a marker may sit outside its box)."""
        box = await page.locator(f"#alert-{alert_id}").bounding_box()
        assert box is not None
        clip = {"x": box["x"] - 16, "y": box["y"], "width": box["width"] + 24, "height": box["height"]}
        shot: bytes = await page.screenshot(clip=clip, animations="disabled")
        return shot

    # Seen without colour; the ticking timers are hidden so that only the selection can differ.
    await page.evaluate(
        """() => {
            document.documentElement.style.filter = "grayscale(1)";
            for (const t of document.querySelectorAll(".q-item .timer")) t.style.visibility = "hidden";
        }"""
    )
    await page.locator(f"#alert-{first} button").click()
    await page.evaluate("document.activeElement.blur()")
    await expect(page.locator(f"#alert-{first}")).to_have_class(re.compile("selected"))
    selected = await grey_picture(first)
    await page.locator(f"#alert-{second} button").click()
    await page.evaluate("document.activeElement.blur()")
    await expect(page.locator(f"#alert-{first}")).not_to_have_class(re.compile("selected"))
    if selected == await grey_picture(first):
        problems.append("on an escalated row, the selection shows only in colour")
    pointer = await page.locator(f"#alert-{second}").evaluate("n => getComputedStyle(n, '::before').content")
    if "▶" not in pointer:
        problems.append(f"the selected row has no pointer: {pointer!r}")
    assert problems == []
    assert page.js_errors == []
