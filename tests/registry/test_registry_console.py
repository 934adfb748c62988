"""Installer console pages over real HTTP with a signed-in session: the installations table, one unit's
live commissioning checklist (updated in place while in test mode, never by reloading), rights, and
escaping."""

from __future__ import annotations

from datetime import UTC, datetime

from console_support import console_client
from harness import RunningBridge

from devices.events import DeviceEvent
from devices.vocabulary import EventType


async def test_installations_and_live_checklist(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    unit = {
        "id": "unit-p",
        "kind": "gsm_unit",
        "firmware": "<script>alert(1)</script>",
        "peripherals": [{"id": "pendant-1", "type": "pendant"}, {"id": "smoke-1", "type": "smoke"}],
    }
    assert (await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=unit))[0] == 201
    async with console_client(b, "iris", "installer") as client:
        async with client.http.get(b.url + "/console/installations") as resp:
            page = await resp.text()
        assert resp.status == 200 and 'href="/console/installations/unit-p"' in page
        assert ">Installations</a>" in page  # in the navigation for installers
        status, _ = await client.call("POST", "/api/v1/commissioning/unit-p", json={"minutes": 5})
        assert status == 201
        await b.bridge.intake.submit(
            DeviceEvent("unit-p", "t1", EventType.PENDANT, datetime.now(UTC), test=True)
        )
        async with client.http.get(b.url + "/console/installations/unit-p") as resp:
            page = await resp.text()
            refresh = resp.headers.get("Refresh")
        # Live without reloading (WCAG 2.2.1): the checklist updates in place and can be paused.
        assert resp.status == 200 and refresh is None
        assert 'data-live="true"' in page and 'id="live-pause"' in page and "installation.js" in page
        assert "<strong>1 of 2</strong> confirmed" in page and "in test mode until" in page
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
        status, _ = await client.call("POST", "/api/v1/commissioning/unit-p/finish", json={})
        assert status == 200
        async with client.http.get(b.url + "/console/installations/unit-p") as resp:
            page = await resp.text()
            assert "Refresh" not in resp.headers
        assert "not passed; missing smoke-1" in page
        assert 'data-live="false"' in page and "live-pause" not in page and "installation.js" not in page
        async with client.http.get(b.url + "/console/installations/nope") as resp:
            assert resp.status == 404
    async with console_client(b, "olga", "operator") as reader:  # operators read
        status, _ = await reader.call("GET", "/console/installations")
        assert status == 200
    async with console_client(b) as stranger:  # not signed in
        status, _ = await stranger.call("GET", "/console/installations")
        assert status == 303, "signed out: sent to the sign-in page"
