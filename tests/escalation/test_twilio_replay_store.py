"""The Twilio replay guard lives in the store (restarts, every node); an unknown call hears a neutral
goodbye, never "You have accepted this alert"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from escalation_support import twilio_config
from harness import postgres_database, running_bridge

from alarm_centre.escalation.twilio import StoredReplayGuard, WebhookRejected
from alarm_centre.store import open_store
from bridge.config import Config
from simulators.twilio_server import TwilioServer, new_sid

#: The address Twilio is given: the same for every node and across restarts (it signs over it).
PUBLIC = "https://bridge.example.org"


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


def config(tmp_path: Path, twilio: TwilioServer, **extra: str) -> Config:
    return twilio_config(tmp_path, twilio, TELECARE_HTTP__PUBLIC_URL=PUBLIC, **extra)


async def post(twilio: TwilioServer, bridge_url: str, route: str, params: dict[str, str]) -> tuple[int, str]:
    """POST a genuinely signed webhook (signed for the public URL) to one node."""
    answer = await twilio.post_webhook(
        bridge_url + route, params, signature=twilio.sign(PUBLIC + route, params)
    )
    return answer.status, answer.text


def unknown_call(twilio: TwilioServer, digits: str) -> dict[str, str]:
    return {
        "AccountSid": twilio.account_sid,
        "CallSid": new_sid("CA"),
        "Digits": digits,
        "Direction": "outbound-api",
        "From": "+441632960000",
        "To": "+447700900123",
    }


async def test_an_unknown_call_hears_a_neutral_goodbye(tmp_path: Path, twilio: TwilioServer) -> None:
    async with running_bridge(config(tmp_path, twilio)) as bridge:
        for digits in ("1", "2", "9"):
            status, twiml = await post(twilio, bridge.url, "/twilio/voice", unknown_call(twilio, digits))
            assert status == 200
            assert "accepted" not in twiml and "contact someone else" not in twiml
            assert "Goodbye" in twiml and "<Hangup" in twiml


async def test_a_replay_is_refused_after_a_restart(tmp_path: Path, twilio: TwilioServer) -> None:
    params = unknown_call(twilio, "1")
    async with running_bridge(config(tmp_path, twilio)) as bridge:
        assert (await post(twilio, bridge.url, "/twilio/voice", params))[0] == 200
    async with running_bridge(config(tmp_path, twilio)) as bridge:
        status, text = await post(twilio, bridge.url, "/twilio/voice", params)
        assert status == 403 and "replayed" in text


async def test_a_replay_to_another_node_is_refused(tmp_path: Path, twilio: TwilioServer) -> None:
    params = {"AccountSid": twilio.account_sid, "MessageSid": new_sid("SM"), "MessageStatus": "delivered"}
    async with (
        postgres_database() as url,
        running_bridge(config(tmp_path / "a", twilio, TELECARE_STORE__URL=url)) as a,
        running_bridge(config(tmp_path / "b", twilio, TELECARE_STORE__URL=url)) as b,
    ):
        assert (await post(twilio, a.url, "/twilio/status", params))[0] == 200
        status, text = await post(twilio, b.url, "/twilio/status", params)
        assert status == 403 and "replayed" in text


async def test_stored_guard_window_and_release_on_an_injected_clock(tmp_path: Path) -> None:
    now = [1000.0]
    async with open_store(str(tmp_path / "t.db")) as store:
        guard = StoredReplayGuard(store, window=60, clock=lambda: now[0])
        await guard.claim(("sms", "SM1"))
        with pytest.raises(WebhookRejected, match="replayed"):
            await guard.claim(("sms", "SM1"))
        await guard.claim(("sms", "SM2"))  # another webhook is not a replay
        await guard.release(("sms", "SM2"))  # acting on it failed: Twilio's retry is let in
        await guard.claim(("sms", "SM2"))
        now[0] += 59.0
        with pytest.raises(WebhookRejected):
            await guard.claim(("sms", "SM1"))
        now[0] += 1.0  # the window has passed: forgotten, and the expired rows deleted
        await guard.claim(("sms", "SM1"))
        async with store.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM webhook_replays")
        assert row is not None and row["n"] == 1
