"""Make docs/console.png: a bridge with the demo residents, a few live alerts, two operators at work,
and the console in Debian's headless Chromium. Run: ``.venv/bin/python scripts/console_screenshot.py``."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests"))

from harness import make_config, running_bridge  # noqa: E402

from alarm_centre.alerts.model import Role  # noqa: E402
from alarm_centre.sessions import set_password  # noqa: E402
from alarm_centre.store.tx import PostCommit, Tx  # noqa: E402
from devices.events import DeviceEvent  # noqa: E402
from devices.vocabulary import EventType  # noqa: E402
from simulators.fleet import seed_demo  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "screenshot-password"


async def main(out: Path) -> None:
    async with running_bridge(make_config(Path(tempfile.mkdtemp()))) as running:
        store, intake = running.store, running.bridge.intake
        await seed_demo(store.devices)
        await store.devices.upsert_device(
            "echo-ada", "alexa", resident_id="res-ada", alexa_device_id="amzn1.ask.device.ADA"
        )

        async def test_mode(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "UPDATE devices SET test_mode_until = ? WHERE id = 'unit-mary'",
                datetime.now(UTC).timestamp() + 600,
            )

        await store.transaction(test_mode)
        now = datetime.now(UTC)
        raised = {}
        for device, kind, ago, test in [
            ("unit-tommy", "low_battery", 610, False),
            ("unit-mary", "pendant", 130, True),
            ("unit-bill", "fall", 95, False),
            ("echo-ada", "voice_help", 48, False),
            ("unit-9999", "smoke", 25, False),
        ]:
            event = DeviceEvent(
                device,
                f"shot-{device}",
                EventType(kind),
                now - timedelta(seconds=ago),
                test=test,
                source="voice" if kind == "voice_help" else "mqtt",
            )
            result = await intake.submit(event)
            raised[device] = result.alert_id
        for name in ("olive", "oscar"):
            await store.users.add(name, Role.OPERATOR)
        for name in ("olive", "oscar"):
            await set_password(store, name, PASSWORD)
        await store.acknowledge(raised["unit-bill"], actor="oscar", source="console")
        await store.acknowledge(raised["echo-ada"], actor="olive", source="console")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1440, "height": 860})
            await page.goto(running.url + "/login")
            await page.fill("input[name=name]", "olive")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("form button[type=submit]")
            await page.wait_for_url("**/console")
            await page.locator(f"#alert-{raised['echo-ada']}").click()
            await page.wait_for_timeout(1500)
            await page.screenshot(path=str(out))
            await browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(HERE / "docs" / "console.png"))
