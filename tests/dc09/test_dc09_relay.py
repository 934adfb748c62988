"""The bridge between a panel and the council's centre, both speaking DC-09: a panel's alarms and
restores, received over TCP, reach pysiaalarm (PyPI) as the upstream centre with the codes the panel
sent. A help or urgent alarm the panel restores stays open on our queue (an operator must resolve it),
and the centre still hears the restore; a technical one is resolved and its restore forwarded. Both
stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from forward_support import PysiaCentre, forward_env
from harness import RunningBridge, eventually, make_config, running_bridge

from bridge.transports.dc09 import DC09_RECEIVER
from devices.dc09 import Frame, Qualifier, Token
from simulators.dc09_panel import Dc09Panel

PANEL_ACCOUNT = "4E5F"
CENTRE_ACCOUNT = "C0FFEE"


@pytest.fixture
async def centre() -> AsyncIterator[PysiaCentre]:
    peer = PysiaCentre({CENTRE_ACCOUNT: None})
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


@pytest.fixture
async def relay(tmp_path: Path, store_url: str, centre: PysiaCentre) -> AsyncIterator[RunningBridge]:
    path = {"url": centre.url, "account": CENTRE_ACCOUNT}
    config = make_config(
        tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0", TELECARE_STORE__URL=store_url, **forward_env(path)
    )
    async with running_bridge(config) as running:
        body = {"id": "panel-rel", "kind": "ip_unit", "channel": "dc09", "dc09_account": PANEL_ACCOUNT}
        status, answer = await running.call(
            "POST", "/api/v1/devices", user="ian", role="installer", json=body
        )
        assert status == 201, answer
        yield running


def acked(answer: Any) -> bool:
    return isinstance(answer.frame, Frame) and answer.frame.token is Token.ACK


async def heard(centre: PysiaCentre, count: int) -> list[str]:
    """The Contact ID events (qualifier and code, as pysiaalarm read them) the centre has heard."""

    async def enough() -> bool:
        return len(centre.messages()) >= count

    await eventually(enough)
    return [f"{e.event_qualifier}{e.event_type}" for e in centre.messages()]


async def alert_of(bridge: RunningBridge, alert_type: str, state: str) -> dict[str, Any]:
    status, body = await bridge.call("GET", f"/api/v1/alerts?state={state}")
    assert status == 200, body
    [alert] = [a for a in body["alerts"] if a["device_id"] == "panel-rel" and a["type"] == alert_type]
    return dict(alert)


async def test_a_panels_alarms_and_restores_reach_the_centre(
    relay: RunningBridge, centre: PysiaCentre
) -> None:
    port = relay.bridge.app[DC09_RECEIVER].port
    async with Dc09Panel("127.0.0.1", port, account=PANEL_ACCOUNT, resend_s=5.0) as panel:
        assert acked(await panel.send_contact_id(111))  # smoke: priority 1
        assert await heard(centre, 1) == ["1111"]
        assert acked(await panel.send_contact_id(111, qualifier=Qualifier.RESTORE))
        assert await heard(centre, 2) == ["1111", "3111"]
        assert acked(await panel.send_contact_id(302))  # low battery: technical
        assert acked(await panel.send_contact_id(302, qualifier=Qualifier.RESTORE))
        assert await heard(centre, 4) == ["1111", "3111", "1302", "3302"]
    # Our operator still has the smoke alarm; the battery closed itself.
    smoke = await alert_of(relay, "smoke", "open")
    battery = await alert_of(relay, "low_battery", "resolved")
    assert battery["outcome"] == "cleared_by_device"
    status, full = await relay.call("GET", f"/api/v1/alerts/{smoke['id']}")
    assert status == 200
    actions = [e["action"] for e in full["timeline"]]
    assert "unit_restored" in actions
    assert [
        (e["action"], e["detail"]["kind"]) for e in full["timeline"] if e["action"] == "forward_acked"
    ] == [
        ("forward_acked", "alarm"),
        ("forward_acked", "restore"),
    ]
    # The centre sees the panel in the alarm text block: who, not only the account.
    assert {tuple((x.identifier, x.value) for x in e.extended_data or []) for e in centre.messages()} == {
        (("I", "panel-rel"),)
    }


async def test_a_second_restore_of_the_same_alarm_is_forwarded_once(
    relay: RunningBridge, centre: PysiaCentre
) -> None:
    port = relay.bridge.app[DC09_RECEIVER].port
    async with Dc09Panel("127.0.0.1", port, account=PANEL_ACCOUNT, resend_s=5.0) as panel:
        assert acked(await panel.send_contact_id(120))  # panic
        assert acked(await panel.send_contact_id(120, qualifier=Qualifier.RESTORE))
        assert acked(await panel.send_contact_id(120, qualifier=Qualifier.RESTORE))
        assert acked(await panel.send_contact_id(154))  # flood, after both restores: the order holds
        codes = await heard(centre, 3)
    assert codes == ["1120", "3120", "1154"]
    panic = await alert_of(relay, "panic", "open")
    status, full = await relay.call("GET", f"/api/v1/alerts/{panic['id']}")
    assert status == 200
    assert [e["action"] for e in full["timeline"]].count("unit_restored") == 2
