"""Driving the console in real headless Chromium (Debian's package, through Playwright), and axe-core.

Chromium missing: skipped locally, a failure in CI (scripts/test installs it). axe-core comes from the npm
registry, pinned, installed by ``scripts/install --test`` into the git-ignored ``.axe/``; missing, it is a
skip locally and a failure in CI too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from console_support import PASSWORD
from harness import IN_CI, RunningBridge

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent
#: Where ``scripts/install --test`` puts axe-core (the version is pinned there).
AXE_JS = ROOT / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
#: WCAG 2.0, 2.1 and 2.2 at levels A and AA: what the accessibility statement claims.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
DESKTOP = {"width": 1400, "height": 900}


def missing(what: str) -> None:
    """Skip here, fail in CI: a tool the browser tests need is not installed."""
    if IN_CI:
        pytest.fail(what + "; CI must provide it (scripts/test installs it)")
    pytest.skip(what)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (which never downloads a browser of its own)."""
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 - one stat before the browser starts
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def axe_source() -> Path:
    if not AXE_JS.exists():
        missing(f"{AXE_JS.relative_to(ROOT)} is missing (scripts/install --test installs axe-core from npm)")
    return AXE_JS


async def sign_in(page: Any, bridge: RunningBridge, name: str) -> None:
    await page.goto(bridge.url + "/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await page.wait_for_selector("body[data-ready=true]")
    await page.wait_for_selector("#live-state.on")


async def signed_in_page(
    browser: Any,
    bridge: RunningBridge,
    name: str,
    prepare: Callable[[Any], Awaitable[None]] | None = None,
    *,
    axe: bool = False,
    **context_options: Any,
) -> Any:
    """A page signed in as ``name`` (1400 x 900 unless ``viewport`` is given); ``prepare(page)`` runs before
    the first request; with ``axe``, axe-core is present in every document the page loads."""
    context_options.setdefault("viewport", DESKTOP)
    context = await browser.new_context(**context_options)
    if axe:  # an init script is not subject to the pages' Content-Security-Policy
        await context.add_init_script(path=str(axe_source()))
    page = await context.new_page()
    if prepare is not None:
        await prepare(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    await sign_in(page, bridge, name)
    return page


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 A/AA violations on the page as it is now (an open dialog included)."""
    result: list[dict[str, Any]] = await page.evaluate(
        """async (tags) => {
            const options = {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]};
            const r = await axe.run(document, options);
            return r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ") + ": " + n.failureSummary)}));
        }""",
        AXE_TAGS,
    )
    return result


def axe_report(where: str, violations: list[dict[str, Any]]) -> str:
    lines = [f"{where}: {len(violations)} axe violation(s)"]
    for v in violations:
        lines.append(f"  {v['id']} ({v['impact']}): {v['help']}")
        lines.extend("    " + n.replace("\n", " ") for n in v["nodes"][:5])
    return "\n".join(lines)
