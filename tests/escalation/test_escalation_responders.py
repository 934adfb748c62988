"""Resolving with responder_sent: the resident's responders are contacted in order until one accepts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from clock import SteppedClock
from escalation_support import actions, advance, raise_alert, timeline, twilio_config
from harness import RunningBridge, eventually, running_bridge

from alarm_centre.escalation.responders import read_responders
from simulators.twilio_server import TwilioServer

ANNA, BEN, CARA = "+447700900101", "+447700900102", "+447700900103"
RESPONDERS = [
    {"name": "Anna", "phone": ANNA},
    {"name": "no phone"},
    {"name": "Ben", "phone": BEN},
    {"name": "Cara", "phone": CARA},
]


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


async def resolve_sent(bridge: RunningBridge, device_id: str) -> str:
    async def stored_before_validation(tx: Any, post: Any) -> None:
        # The registry refuses a responder without a phone now; a database from before may hold one.
        await tx.execute(
            "INSERT INTO residents (id, name, data, created_at) VALUES (?, ?, ?, 0)",
            "res-" + device_id,
            "Ada Jones",
            json.dumps({"responders": RESPONDERS, "address": "3 Acacia Avenue"}),
        )

    await bridge.store.transaction(stored_before_validation)
    await bridge.store.devices.upsert_device(device_id, "gsm_unit", resident_id="res-" + device_id)
    alert_id = await raise_alert(bridge, device_id)
    status, _ = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="olive")
    assert status == 200
    status, body = await bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/resolve", user="olive", json={"outcome": "responder_sent"}
    )
    assert status == 200, body
    return alert_id


async def test_responders_in_order_until_one_accepts(tmp_path: Path, twilio: TwilioServer) -> None:
    config = twilio_config(tmp_path, twilio, policies={"1": []}, TELECARE_ESCALATION__RESPONDER_WAIT_S="120")
    clock = SteppedClock()
    async with running_bridge(config, clock=clock) as bridge:
        alert_id = await resolve_sent(bridge, "unit-r1")
        async with asyncio.timeout(10):
            sms_a = await twilio.next_message()
            call_a = await twilio.next_call()
        assert sms_a.to == ANNA and call_a.to == ANNA
        assert "Ada Jones" in sms_a.body and "Reply YES" in sms_a.body
        await advance(bridge, clock, 119)
        assert len(twilio.messages) == 1, "Anna still has a second to answer"
        # Anna does not answer within responder_wait_s: Ben is next (the entry without a phone is skipped).
        await advance(bridge, clock, 1)
        async with asyncio.timeout(10):
            sms_b = await twilio.next_message()
            call_b = await twilio.next_call()
        assert sms_b.to == BEN and call_b.to == BEN
        # Ben presses 1: a signed Gather webhook.
        answer = await twilio.press_digits(call_b.gather_action or "", call_b.sid, "1")
        assert answer.status == 200 and "accepted" in answer.text
        trail = await timeline(bridge, alert_id)
        accepted = [e for e in trail if e["action"] == "responder_accepted"]
        assert len(accepted) == 1
        assert (accepted[0]["name"], accepted[0]["via"], accepted[0]["source"]) == ("Ben", "voice", "voice")
        assert accepted[0]["actor"] == "responder:Ben"
        contacted = [e["name"] for e in trail if e["action"] == "responder_contacted"]
        assert contacted == ["Anna", "Ben"]
        started = next(e for e in trail if e["action"] == "responder_callout_started")
        assert started["responders"] == ["Anna", "Ben", "Cara"] and started["skipped"] == 1
        # Anna's late YES is recorded but changes nothing; Cara is never contacted.
        late = await twilio.reply_sms(bridge.url + "/twilio/sms", ANNA, "yes I can go")
        assert late.status == 200 and "already accepted" in late.text
        await advance(bridge, clock, 600)  # far past Ben's wait: Cara would be next if anything were due
        assert CARA not in {m.to for m in twilio.messages} | {c.to for c in twilio.calls}
        names = await actions(bridge, alert_id)
        assert names.count("responder_accepted") == 1 and "responder_replied" in names


async def test_sms_yes_accepts_and_no_moves_on(tmp_path: Path, twilio: TwilioServer) -> None:
    config = twilio_config(tmp_path, twilio, policies={"1": []}, TELECARE_ESCALATION__RESPONDER_WAIT_S="60")
    clock = SteppedClock()
    async with running_bridge(config, clock=clock) as bridge:
        alert_id = await resolve_sent(bridge, "unit-r2")
        async with asyncio.timeout(10):
            assert (await twilio.next_message()).to == ANNA
            await twilio.next_call()
        declined = await twilio.reply_sms(bridge.url + "/twilio/sms", ANNA, "No sorry")
        assert declined.status == 200 and "someone else" in declined.text
        async with asyncio.timeout(10):
            assert (await twilio.next_message()).to == BEN
        accepted = await twilio.reply_sms(bridge.url + "/twilio/sms", BEN, "YES")
        assert accepted.status == 200 and "you have accepted" in accepted.text

        async def recorded() -> bool:
            return "responder_accepted" in await actions(bridge, alert_id)

        await eventually(recorded)
        trail = await timeline(bridge, alert_id)
        assert [e["name"] for e in trail if e["action"] == "responder_declined"] == ["Anna"]
        accept = next(e for e in trail if e["action"] == "responder_accepted")
        assert (accept["name"], accept["via"], accept["source"]) == ("Ben", "sms", "sms")
        # Nobody after Ben is contacted, and nothing more goes out once he accepted.
        await advance(bridge, clock, 1)
        sent = len(twilio.messages) + len(twilio.calls)
        assert CARA not in {m.to for m in twilio.messages} | {c.to for c in twilio.calls}
        await advance(bridge, clock, 600)  # past Ben's wait, every retry and lease
        assert len(twilio.messages) + len(twilio.calls) == sent


async def test_no_responders_is_recorded(tmp_path: Path, twilio: TwilioServer) -> None:
    config = twilio_config(tmp_path, twilio, policies={"1": []})
    async with running_bridge(config) as bridge:
        alert_id = await raise_alert(bridge, "unit-r3")  # unregistered: no resident, no responders
        await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="olive")
        await bridge.call(
            "POST", f"/api/v1/alerts/{alert_id}/resolve", user="olive", json={"outcome": "responder_sent"}
        )

        async def recorded() -> bool:
            return "no_responders" in await actions(bridge, alert_id)

        await eventually(recorded)
        assert twilio.messages == [] and twilio.calls == []


def test_responders_are_read_defensively() -> None:
    assert read_responders(None) == ([], 0)
    assert read_responders("not json") == ([], 0)
    assert read_responders({"responders": "Anna"}) == ([], 0)
    found, skipped = read_responders(
        '{"responders": [{"name": "A", "phone": "+44 7700 900101"}, '
        '{"phone": "07700900102"}, 5, {"name": "dup", "phone": "+447700900101"},'
        '{"phone": "+447700900109"}]}'
    )
    assert [(r.name, r.phone) for r in found] == [("A", ANNA), ("+447700900109", "+447700900109")]
    assert skipped == 3
