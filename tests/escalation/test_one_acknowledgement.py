"""One acknowledgement on any channel stops every pending notification for that alert, on every channel:
a supervisor's YES by SMS, or key 1 on the escalation call, claims the alert like the console does; what
is queued is cancelled and calls still ringing are stopped at Twilio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clock import SteppedClock
from escalation_support import (
    SUPERVISOR,
    actions,
    advance,
    at_raise,
    raise_alert,
    settle,
    timeline,
    twilio_config,
)
from harness import eventually, running_bridge

from simulators.twilio_server import TwilioServer

SECOND = "+447700900002"
#: Texts to both supervisors at 2 s, calls to both at 3 s, texts again at 30 s.
POLICY = {
    "1": [
        {"after_s": 2, "action": "sms", "to": ["supervisors", SECOND]},
        {"after_s": 3, "action": "call", "to": ["supervisors", SECOND]},
        {"after_s": 30, "action": "sms", "to": ["supervisors", SECOND]},
    ]
}


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


async def test_a_yes_by_sms_acknowledges_and_stops_the_calls_still_ringing(
    tmp_path: Path, twilio: TwilioServer
) -> None:
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio, policies=POLICY), clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-ack-1")
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 3.1)
        async with asyncio.timeout(10):
            texts = [await twilio.next_message(), await twilio.next_message()]
            calls = [await twilio.next_call(), await twilio.next_call()]
        assert {c.to for c in calls} == {SUPERVISOR, SECOND}

        async def all_sent() -> bool:
            return (await actions(bridge, alert_id)).count("notification_sent") == 4

        await eventually(all_sent)
        assert all(twilio.voice.calls[c.sid].status == "ringing" for c in calls)
        reply = await twilio.reply_sms(bridge.url + "/twilio/sms", SECOND, "yes, on it")
        assert reply.status == 200 and "acknowledged" in reply.text
        alert, _ = await bridge.store.get_alert(alert_id)
        assert alert.state == "acknowledged" and alert.acknowledged_by == f"supervisor:{SECOND}"
        await settle(bridge)
        await twilio.settled()
        await settle(bridge)
        assert [twilio.voice.calls[c.sid].status for c in calls] == ["canceled", "canceled"], (
            "phones stop ringing"
        )
        await advance(bridge, clock, 60)
        assert len(twilio.messages) == len(texts), "the 30 s texts never go out"
        trail = await timeline(bridge, alert_id)
        acked = next(e for e in trail if e["action"] == "acknowledged")
        assert acked["source"] == "sms"
        stopped = [e for e in trail if e["action"] == "notification_status" and e.get("stopped")]
        assert len(stopped) == 2 and "acknowledged" in stopped[0]["stopped"]
        assert "notification_failed" not in [e["action"] for e in trail], "a stopped call is no failure"


async def test_key_1_on_the_call_acknowledges_and_the_other_phone_stops(
    tmp_path: Path, twilio: TwilioServer
) -> None:
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio, policies=POLICY), clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-ack-2")
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 3.1)
        async with asyncio.timeout(10):
            await twilio.next_message()
            await twilio.next_message()
            calls = {c.to: c for c in (await twilio.next_call(), await twilio.next_call())}

        async def all_sent() -> bool:
            return (await actions(bridge, alert_id)).count("notification_sent") == 4

        await eventually(all_sent)
        mine = calls[SUPERVISOR]
        await twilio.answer(mine.sid)
        answer = await twilio.press_digits(mine.gather_action or "", mine.sid, "1")
        assert answer.status == 200 and "acknowledged" in answer.text
        alert, _ = await bridge.store.get_alert(alert_id)
        assert alert.state == "acknowledged" and alert.acknowledged_by == f"supervisor:{SUPERVISOR}"
        await settle(bridge)
        await twilio.settled()
        assert twilio.voice.calls[calls[SECOND].sid].status == "canceled"
        heard = twilio.voice.calls[mine.sid]
        assert heard.status == "completed" and "acknowledged" in heard.heard[-1], "told, then goodbye"
        # a second key press (a replay is refused; another supervisor's YES is just noted)
        late = await twilio.reply_sms(bridge.url + "/twilio/sms", SECOND, "YES")
        assert late.status == 200 and "Noted" in late.text
        alert, _ = await bridge.store.get_alert(alert_id)
        assert alert.acknowledged_by == f"supervisor:{SUPERVISOR}"


async def test_the_console_acknowledgement_stops_ringing_calls_too(
    tmp_path: Path, twilio: TwilioServer
) -> None:
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio, policies=POLICY), clock=clock) as bridge:
        alert_id = await raise_alert(bridge, "unit-ack-3")
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 3.1)
        async with asyncio.timeout(10):
            calls = [await twilio.next_call(), await twilio.next_call()]

        async def all_sent() -> bool:
            return (await actions(bridge, alert_id)).count("notification_sent") == 4

        await eventually(all_sent)
        status, _ = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="alice")
        assert status == 200
        await settle(bridge)
        await twilio.settled()
        assert [twilio.voice.calls[c.sid].status for c in calls] == ["canceled", "canceled"]
