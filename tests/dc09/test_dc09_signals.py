"""Unknown codes and restores from DC-09 panels, on a real bridge over real TCP and UDP, on SQLite and
PostgreSQL: each distinct unknown code is an ``unknown_signal`` alert of its own showing the raw code;
a restore resolves a technical alert, never a call for help (that gets a timeline entry); a restore with
nothing open is recorded and ACKed. Supervision: link tests and every frame are heartbeats, and a panel
that stops polling raises ``no_heartbeat`` (an injected clock, no waiting); /metrics covers the listener.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clock import SteppedClock
from harness import RunningBridge, eventually, make_config, running_bridge
from prometheus_client.parser import text_string_to_metric_families

from bridge.transports.dc09 import DC09_RECEIVER
from devices.dc09 import ContactId, Frame, Qualifier, Token, contact_id_data
from simulators.dc09_panel import Dc09Panel


@pytest.fixture
async def dc09_bridge(tmp_path: Path, store_url: str) -> AsyncIterator[RunningBridge]:
    config = make_config(tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0", TELECARE_STORE__URL=store_url)
    async with running_bridge(config) as running:
        yield running


def panel(b: RunningBridge, account: str, **kw: Any) -> Dc09Panel:
    return Dc09Panel("127.0.0.1", b.bridge.app[DC09_RECEIVER].port, account=account, resend_s=5.0, **kw)


async def register(b: RunningBridge, device_id: str, account: str, **extra: Any) -> dict[str, Any]:
    body = {"id": device_id, "kind": "ip_unit", "channel": "dc09", "dc09_account": account, **extra}
    status, answer = await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=body)
    assert status == 201, answer
    return dict(answer)


async def alerts_of(b: RunningBridge, device_id: str, state: str = "open") -> list[dict[str, Any]]:
    status, body = await b.call("GET", f"/api/v1/alerts?state={state}")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == device_id]


async def timeline(b: RunningBridge, alert_id: str) -> list[dict[str, Any]]:
    status, full = await b.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 200
    return list(full["timeline"])


def acked(answer: Any) -> bool:
    return isinstance(answer.frame, Frame) and answer.frame.token is Token.ACK


def signal(alert: dict[str, Any]) -> tuple[str, str]:
    data = alert["data"]["event_data"]
    return data["protocol"], data["code"]


async def test_each_distinct_unknown_code_is_an_alert_of_its_own_showing_the_raw_code(
    dc09_bridge: RunningBridge,
) -> None:
    await register(dc09_bridge, "panel-una", "1A2B")
    async with panel(dc09_bridge, "1A2B") as p:
        first = p.frame(Token.ADM_CID, contact_id_data("1A2B", ContactId(Qualifier.NEW, 999, "01", "001")))
        assert acked(await p.send_raw(first))  # never a DUH: a panel resends a DUH'd frame forever
        assert acked(await p.send_raw(first))  # the same frame resent: a duplicate of the first
        assert acked(await p.send_contact_id(888))  # another code: an alert of its own
        assert acked(await p.send_contact_id(999))  # the first code again, a new frame: joins its alert
        assert acked(await p.send_sia("ZX"))  # an unknown SIA code
        assert acked(await p.send_contact_id(380))  # a known sensor fault stays a sensor fault
    alerts = await alerts_of(dc09_bridge, "panel-una")
    unknown = sorted(
        (signal(a), a["priority"], a["repeat_count"]) for a in alerts if a["type"] == "unknown_signal"
    )
    assert unknown == [(("dc09", "1888"), 2, 0), (("dc09", "1999"), 2, 1), (("dc09", "ZX"), 2, 0)]
    assert [a["type"] for a in alerts if a["type"] != "unknown_signal"] == ["sensor_fault"]
    received = dc09_bridge.bridge.metrics.registry.get_sample_value(
        "telecare_events_received_total",
        {"type": "unknown_signal", "result": "duplicate", "transport": "dc09"},
    )
    assert received == 1.0


async def test_an_unknown_code_from_an_unknown_account_over_udp(dc09_bridge: RunningBridge) -> None:
    async with panel(dc09_bridge, "C0FFEE", transport="udp") as p:
        assert acked(await p.send_contact_id(777))
    [alert] = await alerts_of(dc09_bridge, "dc09-C0FFEE")
    assert alert["type"] == "unknown_signal" and alert["unregistered"] is True
    assert signal(alert) == ("dc09", "1777")


async def test_a_technical_restore_resolves_its_alert_with_the_unit_as_the_reason(
    dc09_bridge: RunningBridge,
) -> None:
    await register(dc09_bridge, "panel-tec", "2B3C")
    async with panel(dc09_bridge, "2B3C") as p:
        assert acked(await p.send_contact_id(302))  # low battery (Contact ID)
        assert acked(await p.send_sia("TA"))  # tamper (SIA)
        [battery] = [a for a in await alerts_of(dc09_bridge, "panel-tec") if a["type"] == "low_battery"]
        assert acked(await p.send_contact_id(302, qualifier=Qualifier.RESTORE))
        assert acked(await p.send_sia("TR"))  # the SIA restore of tamper
    assert await alerts_of(dc09_bridge, "panel-tec") == []
    resolved = await alerts_of(dc09_bridge, "panel-tec", state="resolved")
    assert sorted((a["type"], a["outcome"]) for a in resolved) == [
        ("low_battery", "cleared_by_device"),
        ("tamper", "cleared_by_device"),
    ]
    last = (await timeline(dc09_bridge, battery["id"]))[-1]
    assert (last["action"], last["actor"], last["source"]) == ("resolved", "device:panel-tec", "device")
    assert last["detail"]["reason"] == "the unit reports low_battery restored"


async def test_a_restore_never_closes_a_call_for_help_but_is_on_its_timeline(
    dc09_bridge: RunningBridge,
) -> None:
    await register(dc09_bridge, "panel-hlp", "3C4D")
    async with panel(dc09_bridge, "3C4D") as p:
        assert acked(await p.send_contact_id(111))  # smoke: priority 1
        assert acked(await p.send_sia("WA"))  # flood: priority 2
        assert acked(await p.send_contact_id(111, qualifier=Qualifier.RESTORE))
        assert acked(await p.send_sia("WH"))
    alerts = {a["type"]: a for a in await alerts_of(dc09_bridge, "panel-hlp")}
    assert sorted(alerts) == ["flood", "smoke"]  # both still open for an operator
    for kind in ("smoke", "flood"):
        assert alerts[kind]["state"] == "raised"
        entries = [
            t for t in await timeline(dc09_bridge, alerts[kind]["id"]) if t["action"] == "unit_restored"
        ]
        assert len(entries) == 1, kind
        assert entries[0]["detail"]["restores"] == kind
        assert entries[0]["actor"] == "device:panel-hlp"
        assert "must still resolve" in entries[0]["detail"]["reason"]


async def test_a_restore_with_nothing_open_is_recorded_and_acked_and_raises_nothing(
    dc09_bridge: RunningBridge,
) -> None:
    await register(dc09_bridge, "panel-nil", "4D5E")
    async with panel(dc09_bridge, "4D5E", transport="udp") as p:
        assert acked(await p.send_contact_id(384, qualifier=Qualifier.RESTORE))
        assert acked(await p.send_sia("FH"))
        assert acked(await p.send_contact_id(301, qualifier=Qualifier.RESTORE))  # mains_restored
    assert await alerts_of(dc09_bridge, "panel-nil", state="all") == []
    async with dc09_bridge.store.read() as tx:
        rows = await tx.fetchall(
            "SELECT type, data, alert_id FROM events WHERE device_id = ? ORDER BY received_at, event_id",
            "panel-nil",
        )
    assert sorted(r["type"] for r in rows) == ["mains_restored", "restored", "restored"]
    assert all(r["alert_id"] is None for r in rows)
    assert sorted(json.loads(r["data"])["restores"] for r in rows if r["type"] == "restored") == [
        "low_battery",
        "smoke",
    ]


async def test_a_panel_that_stops_polling_raises_no_heartbeat(tmp_path: Path, store_url: str) -> None:
    clock = SteppedClock()
    start = clock.now
    config = make_config(
        tmp_path,
        TELECARE_DC09__LISTEN="127.0.0.1:0",
        TELECARE_STORE__URL=store_url,
        TELECARE_HEARTBEATS__CHECK_EVERY_S="0.05",
    )
    async with running_bridge(config, clock=clock) as b:
        await register(b, "panel-pol", "5E6F", heartbeat_interval_s=60, heartbeat_grace_s=0)

        async def due_at() -> float:
            status, device = await b.call("GET", "/api/v1/devices/panel-pol", user="ian", role="installer")
            assert status == 200
            return datetime.fromisoformat(device["heartbeat_due_at"].replace("Z", "+00:00")).timestamp()

        async def late() -> list[dict[str, Any]]:
            return [a for a in await alerts_of(b, "panel-pol") if a["type"] == "no_heartbeat"]

        def step(seconds: float, p: Dc09Panel) -> None:
            clock.advance(seconds)
            p.clock_offset = timedelta(seconds=clock.now - start)  # the panel's clock keeps ours

        async with panel(b, "5E6F") as p:
            assert acked(await p.link_test())
            assert await due_at() == pytest.approx(clock.now + 60, abs=1)
            step(50, p)
            assert acked(await p.send_contact_id(302))  # any frame is a heartbeat too
            assert await due_at() == pytest.approx(clock.now + 60, abs=1)
            step(61, p)  # the panel stops polling: its deadline passes

            async def raised() -> bool:
                return len(await late()) == 1

            await eventually(raised)  # by the bridge's own supervision loop, on the injected clock
            assert acked(await p.link_test())  # it polls again: the alert resolves itself
            assert await late() == []
            [resolved] = [
                a for a in await alerts_of(b, "panel-pol", "resolved") if a["type"] == "no_heartbeat"
            ]
            assert resolved["outcome"] == "cleared_by_device"


async def test_metrics_cover_the_listener(dc09_bridge: RunningBridge) -> None:
    await register(dc09_bridge, "panel-met", "6F70")
    async with panel(dc09_bridge, "6F70") as p:
        assert acked(await p.send_contact_id(999))
        assert acked(await p.send_contact_id(302, qualifier=Qualifier.RESTORE))
        good = p.frame(Token.ADM_CID, contact_id_data("6F70", ContactId(Qualifier.NEW, 101, "01", "001")))
        crc = int(good[1:5], 16) ^ 0x0001  # right length, wrong CRC
        nak = await p.send_raw(good[:1] + f"{crc:04X}".encode() + good[5:])
        assert isinstance(nak.frame, Frame) and nak.frame.token is Token.NAK
    status, text = await dc09_bridge.call("GET", "/metrics", user=None)
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    dc09 = ("transport", "dc09")
    for name, labels, value in (
        ("telecare_events_received_total", (("result", "accepted"), dc09, ("type", "unknown_signal")), 1.0),
        ("telecare_events_received_total", (("result", "accepted"), dc09, ("type", "restored")), 1.0),
        ("telecare_events_rejected_reasons_total", (("reason", "bad_crc"), dc09), 1.0),
        ("telecare_ack_latency_seconds_count", (dc09,), 2.0),
    ):
        assert samples.get((name, labels)) == value, (name, labels, samples.get((name, labels)))
    status, health = await dc09_bridge.call("GET", "/healthz", user=None)
    assert status == 200, health
