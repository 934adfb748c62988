"""Fixtures of the telephony tests: a clock the test moves, the Twilio stand-in on it, and a bridge taking
calls through it (on SQLite, and on PostgreSQL too for the modules in ``BOTH_STORES``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clock import SteppedClock
from harness import RunningBridge, running_bridge
from telephony_support import CENTRE, telephony_config

from simulators.twilio_server import TwilioServer


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
async def twilio(clock: SteppedClock) -> AsyncIterator[TwilioServer]:
    async with TwilioServer(clock=clock) as server:
        yield server


@pytest.fixture
async def bridge(
    tmp_path: Path, twilio: TwilioServer, clock: SteppedClock, store_url: str
) -> AsyncIterator[RunningBridge]:
    """A bridge taking calls; the centre's number points at its /twilio/voice."""
    config = telephony_config(tmp_path, twilio, TELECARE_STORE__URL=store_url)
    async with running_bridge(config, clock=clock) as running:
        twilio.configure_number(CENTRE, running.url + "/twilio/voice")
        yield running
