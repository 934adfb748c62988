"""Shared fixtures and helpers for the voice tests: a bridge with /alexa on, a test CA, a signer.

(No tests here; the other test_voice_* modules import from it.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alexa_ca import ca, cert_server, good_cert
from clock import SteppedClock
from harness import RunningBridge, make_config, running_bridge

from simulators.alexa import (
    CertChainServer,
    RequestSigner,
    SigningCertificate,
    TestCertificateAuthority,
    encode,
    intent_request,
)

SKILL_ID = "amzn1.ask.skill.99999999-8888-7777-6666-555555555555"
# Real Alexa device ids are long: well over the 64-character device-id rule.
ECHO_ID = "amzn1.ask.device." + "AEXAMPLEECHOKITCHEN" * 8
USER_ID = "amzn1.ask.account." + "AUSERRESIDENTONE" * 6
RESIDENT = "res-ann"
UNIT = "unit-ann"


@pytest.fixture
def signer(cert_server: CertChainServer, good_cert: SigningCertificate) -> RequestSigner:
    return RequestSigner(good_cert, cert_server.publish("echo-api-cert.pem", good_cert.chain_pem))


def voice_env(root_pem: Path, origin: str, **extra: str) -> dict[str, str]:
    return {
        "TELECARE_ALEXA__ENABLED": "true",
        "TELECARE_ALEXA__SKILL_ID": SKILL_ID,
        "TELECARE_ALEXA__TEST_CA": str(root_pem),
        "TELECARE_ALEXA__TEST_CERT_ORIGIN": origin,
        "TELECARE_ALEXA__FETCH_TIMEOUT": "2",
        "TELECARE_ALEXA__MAX_BODY_BYTES": "16384",
        "TELECARE_ALEXA__CHECK_IN_POLL_S": "0.2",
        **extra,
    }


@pytest.fixture
async def voice(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    topic_root: str,
    ca: TestCertificateAuthority,
    cert_server: CertChainServer,
) -> AsyncIterator[RunningBridge]:
    """A bridge on the real Mosquitto with /alexa on, trusting the test CA, and a linked resident; its
    time is a :class:`SteppedClock` (:func:`voice_clock`), so its check-in loop sees a deadline pass
    only when a test moves the clock."""
    root = ca.write_root(tmp_path / "alexa-test-ca.pem")
    host, port = mosquitto
    config = make_config(
        tmp_path,
        mqtt_url=f"mqtt://{host}:{port}",
        topic_root=topic_root,
        **voice_env(root, cert_server.origin),
    )
    async with running_bridge(config, clock=SteppedClock()) as running:
        await running.store.devices.upsert_resident(RESIDENT, "Ann Example")
        await running.store.devices.upsert_device(UNIT, "gsm_unit", resident_id=RESIDENT)
        status, body = await running.call(
            "POST",
            "/api/v1/alexa-links",
            user="inst",
            role="installer",
            json={
                "device_id": "echo-ann",
                "alexa_device_id": ECHO_ID,
                "resident_id": RESIDENT,
                "alexa_user_id": USER_ID,
            },
        )
        assert status == 201, body
        yield running


def voice_clock(running: RunningBridge) -> SteppedClock:
    """The clock the ``voice`` bridge decides time by (its check-in loop included)."""
    clock = running.bridge.clock
    assert isinstance(clock, SteppedClock)
    return clock


async def post_raw(running: RunningBridge, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with running.session.post(running.url + "/alexa", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def say(
    running: RunningBridge,
    signer: RequestSigner,
    intent: str,
    *,
    device_id: str = ECHO_ID,
    user_id: str = USER_ID,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Sign and post one IntentRequest; return (status, JSON)."""
    body = encode(intent_request(intent, device_id=device_id, user_id=user_id, skill_id=SKILL_ID, **kwargs))
    return await post_raw(running, body, signer.headers(body))


def speech(reply: dict[str, Any]) -> str:
    text: str = reply["response"]["outputSpeech"]["ssml"]
    return text


async def alerts(running: RunningBridge, state: str = "all") -> list[dict[str, Any]]:
    status, body = await running.call("GET", f"/api/v1/alerts?state={state}")
    assert status == 200, body
    result: list[dict[str, Any]] = body["alerts"]
    return result


async def alert_count(running: RunningBridge) -> int:
    return len(await alerts(running))


__all__ = [
    "aiohttp",
    "alert_count",
    "alerts",
    "ca",
    "cert_server",
    "good_cert",
    "post_raw",
    "say",
    "signer",
    "speech",
    "voice",
    "voice_clock",
    "voice_env",
]
