"""Escalation with a short policy on a real bridge, with a real local Twilio server on loopback.

The policy's steps are 1, 2 and 3 s after the alert; the tests move the bridge's clock (a SteppedClock)
past each one instead of waiting on wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clock import SteppedClock
from escalation_support import (
    OUR_NUMBER,
    SUPERVISOR,
    actions,
    advance,
    at_raise,
    raise_alert,
    timeline,
    twilio_config,
)
from harness import eventually, running_bridge

from simulators.twilio_server import TwilioServer


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


async def test_sms_then_call_reach_twilio_in_order(tmp_path: Path, twilio: TwilioServer) -> None:
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio), clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-esc-1")
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 1.9)
        assert twilio.attempts == [], "nothing before the SMS step (2 s)"
        await advance(bridge, clock, 0.2)
        async with asyncio.timeout(15):
            message = await twilio.next_message()
        assert twilio.calls == [], "the call step (3 s) is not due yet"
        await advance(bridge, clock, 1.0)
        async with asyncio.timeout(15):
            call = await twilio.next_call()
        assert (message.to, message.from_) == (SUPERVISOR, OUR_NUMBER)
        assert f"alert {alert_id}" in message.body and "not been acknowledged" in message.body
        assert call.to == SUPERVISOR and call.gather_action == bridge.url + "/twilio/voice"
        assert any("Press 1 to accept" in text for text in call.spoken_text)
        assert [a.resource for a in twilio.attempts] == ["Messages", "Calls"]

        async def all_sent() -> bool:
            return (await actions(bridge, alert_id)).count("notification_sent") == 2

        await eventually(all_sent)
        trail = await timeline(bridge, alert_id)
        names = [e["action"] for e in trail]
        assert names.index("escalation_scheduled") < names.index("escalation_highlight")
        sent = [e for e in trail if e["action"] == "notification_sent"]
        assert [e["channel"] for e in sent] == ["sms", "call"]
        assert sent[0]["sid"] == message.sid and sent[1]["sid"] == call.sid
        # the console can highlight it: the alert itself carries the escalation level
        alert, _ = await bridge.store.get_alert(alert_id)
        assert alert.data["escalation"]["highlight"] is True

        # The supervisor presses 1 on the call: a signed Gather webhook, recorded on the timeline.
        answer = await twilio.press_digits(call.gather_action or "", call.sid, "1")
        assert answer.status == 200 and "Thank you" in answer.text
        replied = [e for e in await timeline(bridge, alert_id) if e["action"] == "supervisor_replied"]
        assert replied and replied[0]["digits"] == "1" and replied[0]["source"] == "voice"


async def test_acknowledging_stops_the_remaining_steps(tmp_path: Path, twilio: TwilioServer) -> None:
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio), clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-esc-2")
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 1.1)
        assert "escalation_highlight" in await actions(bridge, alert_id)
        status, _ = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="alice")
        assert status == 200

        async def stopped() -> bool:
            return "escalation_stopped" in await actions(bridge, alert_id)

        await eventually(stopped, timeout=10)
        await advance(bridge, clock, 60)  # far past the SMS (2 s) and call (3 s) steps
        assert twilio.messages == [] and twilio.calls == []
        trail = await timeline(bridge, alert_id)
        stop = next(e for e in trail if e["action"] == "escalation_stopped")
        assert stop["cancelled"] == 2 and "alice" in stop["reason"]
        assert "notification_sent" not in [e["action"] for e in trail]


async def test_restart_mid_escalation_neither_loses_nor_repeats(tmp_path: Path, twilio: TwilioServer) -> None:
    config = twilio_config(tmp_path, twilio)
    clock = SteppedClock()
    async with running_bridge(config, clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-esc-3")
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 2.1)
        async with asyncio.timeout(10):
            first = await twilio.next_message()

        async def sms_recorded() -> bool:
            return "notification_sent" in await actions(bridge, alert_id)

        await eventually(sms_recorded)
        # stop before the call step (due 3 s after the alert was raised)
    assert twilio.calls == [], "the bridge stopped before the call step"
    clock.advance(1.5)  # the call step falls due while no bridge runs
    async with running_bridge(config, clock=clock) as bridge:
        async with asyncio.timeout(10):
            call = await twilio.next_call()
        assert call.to == SUPERVISOR

        async def call_recorded() -> bool:
            return (await actions(bridge, alert_id)).count("notification_sent") == 2

        await eventually(call_recorded)
        await advance(bridge, clock, 60)  # past every lease and retry: time for a wrongful repeat to show
        trail = await timeline(bridge, alert_id)
    assert [m.sid for m in twilio.messages] == [first.sid], "the SMS was not sent again"
    assert len(twilio.calls) == 1, "the call was placed once"
    names = [e["action"] for e in trail]
    assert names.count("escalation_highlight") == 1 and names.count("escalation_notify") == 2


async def test_test_alerts_never_escalate(tmp_path: Path, twilio: TwilioServer) -> None:
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio), clock=clock) as bridge:
        await bridge.store.devices.upsert_device("unit-esc-4", "gsm_unit")

        async def test_mode(tx: object, post: object) -> None:
            await tx.execute(
                "UPDATE devices SET test_mode_until = ? WHERE id = ?",  # type: ignore[attr-defined]
                4102444800.0,
                "unit-esc-4",
            )

        await bridge.store.transaction(test_mode)
        alert_id = await raise_alert(bridge, "unit-esc-4", test=True)
        alert, _ = await bridge.store.get_alert(alert_id)
        assert alert.test
        await advance(bridge, clock, 60)
        assert twilio.messages == [] and twilio.calls == []
        assert not {"escalation_scheduled", "escalation_highlight"} & set(await actions(bridge, alert_id))


async def test_failed_delivery_is_retried_and_shown(tmp_path: Path, twilio: TwilioServer) -> None:
    policy = {"1": [{"after_s": 0.5, "action": "sms"}]}
    config = twilio_config(tmp_path, twilio, policies=policy, TELECARE_TWILIO__MAX_ATTEMPTS="1")
    twilio.fail_next(1, status=503)
    async with running_bridge(config) as bridge:
        alert_id = await raise_alert(bridge, "unit-esc-5")
        async with asyncio.timeout(10):
            message = await twilio.next_message()
        assert message.to == SUPERVISOR

        async def shown() -> bool:
            return "notification_sent" in await actions(bridge, alert_id)

        await eventually(shown)
        trail = await timeline(bridge, alert_id)
        failed = [e for e in trail if e["action"] == "notification_failed"]
        assert len(failed) == 1 and failed[0]["retryable"] is True and failed[0]["retry_at"]
        sent = next(e for e in trail if e["action"] == "notification_sent")
        assert sent["attempt"] == 2
        assert [a.status for a in twilio.attempts] == [503, 201]

        # Twilio later reports the text undelivered: shown, and tried again.
        answer = await twilio.send_status(
            message.status_callback or "", message.sid, "undelivered", error_code=30003
        )
        assert answer.status == 200
        async with asyncio.timeout(10):
            again = await twilio.next_message()
        assert again.to == SUPERVISOR and again.body == message.body
        trail = await timeline(bridge, alert_id)
        undelivered = [e for e in trail if e["action"] == "notification_failed" and e.get("status")]
        assert undelivered[0]["error_code"] == 30003 and undelivered[0]["retry_at"]
