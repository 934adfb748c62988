"""Shared pieces for the telephony tests: a bridge taking calls through the local Twilio stand-in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from clock import SteppedClock
from escalation_support import twilio_config
from harness import RunningBridge, eventually

from alarm_centre.telephony.runner import TELEPHONY_RUNNER
from bridge.config import Config
from simulators.twilio_server import RecordedCall, TwilioServer

CENTRE = "+441632960001"
OVERFLOW = "+441632960999"
ALICE_PHONE = "+447700900111"
BOB_PHONE = "+447700900222"
UNIT_SIM = "+447700900555"
RESIDENT_PHONE = "+447700900666"
RESPONDER_PHONE = "+447700900777"


def telephony_config(
    tmp_path: Path, twilio: TwilioServer, *, operators: dict[str, Any] | None = None, **extra: str
) -> Config:
    """Twilio on the stand-in, telephony on, no escalation steps (their SMS would only be noise)."""
    ops = (
        operators if operators is not None else {"alice": {"phone": ALICE_PHONE}, "bob": {"phone": BOB_PHONE}}
    )
    env = {
        "TELECARE_TELEPHONY__ENABLED": "true",
        "TELECARE_TELEPHONY__NUMBERS": json.dumps([CENTRE]),
        "TELECARE_TELEPHONY__OPERATORS": json.dumps(ops),
        "TELECARE_TELEPHONY__RING_S": "20",
        "TELECARE_TELEPHONY__OVERFLOW_AFTER_S": "60",
        "TELECARE_TELEPHONY__OVERFLOW_NUMBER": OVERFLOW,
        "TELECARE_TELEPHONY__POLL_S": "0.2",
        **extra,
    }
    return twilio_config(tmp_path, twilio, policies={"1": [], "2": [], "3": []}, **env)


async def settle(bridge: RunningBridge, passes: int = 2) -> None:
    """Until the telephony loop has made ``passes`` more passes and has nothing in flight at Twilio."""
    runner = bridge.bridge.app[TELEPHONY_RUNNER]
    target = runner.passes + passes
    runner.wake()

    async def settled() -> bool:
        if runner.passes < target:
            runner.wake()
            return False
        return not runner.working

    await eventually(settled)


async def advance(bridge: RunningBridge, clock: SteppedClock, seconds: float, twilio: TwilioServer) -> None:
    """Move the bridge's clock and let the loop act on it, and the stand-in deliver what followed."""
    clock.advance(seconds)
    await settle(bridge)
    await twilio.settled()
    await settle(bridge)


async def ringing(twilio: TwilioServer, to: str, timeout: float = 10.0) -> RecordedCall:
    """The next call the bridge placed, which must be to ``to``."""
    async with asyncio.timeout(timeout):
        call = await twilio.next_call()
    assert call.to == to, (call.to, to)
    return call


async def call_actions(bridge: RunningBridge, alert_id: str) -> list[str]:
    _, entries = await bridge.store.get_alert(alert_id)
    return [e.action for e in entries if e.action.startswith("call_")]


async def call_entries(bridge: RunningBridge, alert_id: str, action: str) -> list[dict[str, Any]]:
    _, entries = await bridge.store.get_alert(alert_id)
    return [{**e.detail, "actor": e.actor, "source": e.source} for e in entries if e.action == action]


async def available(bridge: RunningBridge, *names: str) -> None:
    for name in names:
        status, body = await bridge.call(
            "PUT", "/api/v1/telephony/presence", user=name, json={"available": True}
        )
        assert status == 200 and body["available"] is True, body
