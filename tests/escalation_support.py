"""Shared pieces for the escalation, Twilio-route and service-level tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clock import SteppedClock
from harness import RunningBridge, eventually, make_config

from alarm_centre.escalation.runner import ESCALATION_RUNNER
from bridge.config import Config
from devices.events import DeviceEvent
from devices.vocabulary import EventType
from simulators.twilio_server import TwilioServer

OUR_NUMBER = "+441632960000"
SUPERVISOR = "+447700900001"
SHORT_POLICY = {
    "1": [
        {"after_s": 1, "action": "highlight"},
        {"after_s": 2, "action": "sms"},
        {"after_s": 3, "action": "call"},
    ]
}


def twilio_config(
    tmp_path: Path, twilio: TwilioServer | None, *, policies: Any = None, **extra: str
) -> Config:
    """A bridge config on the embedded broker with Twilio pointed at the local server (or disabled)."""
    env: dict[str, str] = {
        "TELECARE_ESCALATION__POLICIES": json.dumps(SHORT_POLICY if policies is None else policies),
        "TELECARE_ESCALATION__POLL_S": "0.2",
        "TELECARE_ESCALATION__RETRY_S": "[0.3]",
        "TELECARE_ESCALATION__LEASE_S": "5",
    }
    if twilio is not None:
        env |= {
            "TELECARE_TWILIO__ENABLED": "true",
            "TELECARE_TWILIO__ACCOUNT_SID": twilio.account_sid,
            "TELECARE_TWILIO__AUTH_TOKEN": twilio.auth_token,
            "TELECARE_TWILIO__FROM_NUMBER": OUR_NUMBER,
            "TELECARE_TWILIO__BASE_URL": twilio.base_url,
            "TELECARE_TWILIO__SUPERVISOR_NUMBERS": json.dumps([SUPERVISOR]),
            "TELECARE_TWILIO__REQUEST_TIMEOUT": "3",
        }
    return make_config(tmp_path, **(env | extra))


async def raise_alert(
    bridge: RunningBridge, device_id: str, event_type: str = "pendant", *, test: bool = False
) -> str:
    now = datetime.now(UTC)
    result = await bridge.bridge.intake.submit(
        DeviceEvent(
            device_id, f"{device_id}-{event_type}-{now.timestamp()}", EventType(event_type), now, test=test
        )
    )
    assert result.alert_id is not None, result
    return result.alert_id


async def timeline(bridge: RunningBridge, alert_id: str) -> list[dict[str, Any]]:
    _, entries = await bridge.store.get_alert(alert_id)
    return [{**e.detail, "action": e.action, "actor": e.actor, "source": e.source} for e in entries]


async def actions(bridge: RunningBridge, alert_id: str) -> list[str]:
    return [e["action"] for e in await timeline(bridge, alert_id)]


async def settle(bridge: RunningBridge, passes: int = 2) -> None:
    """Wait until the escalation loop has made ``passes`` more passes, each reading the clock afresh, and
    has no notification in flight: whatever the clock now makes due has happened."""
    runner = bridge.bridge.app[ESCALATION_RUNNER]
    target = runner.passes + passes
    runner.wake()

    async def settled() -> bool:
        if runner.passes < target:
            runner.wake()
            return False
        return not runner.delivering

    await eventually(settled)


async def at_raise(bridge: RunningBridge, clock: SteppedClock, alert_id: str) -> None:
    """Set the bridge's clock to the moment the store raised the alert (policy steps count from there)."""
    alert, _ = await bridge.store.get_alert(alert_id)
    assert alert.raised_at >= clock.now, "a clock only moves forward"
    clock.now = alert.raised_at


async def advance(bridge: RunningBridge, clock: SteppedClock, seconds: float) -> None:
    """Move the bridge's clock on and let the escalation loop act on it."""
    clock.advance(seconds)
    await settle(bridge)
