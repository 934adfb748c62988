"""Every bad-input case from issue 3 through the real HTTP route: the right status, and no alert raised."""
# ruff: noqa: F811  (pytest fixtures imported from voice_support are used as parameters)

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import RunningBridge
from voice_support import (  # noqa: F401  (fixtures)
    ECHO_ID,
    SKILL_ID,
    USER_ID,
    alert_count,
    ca,
    cert_server,
    good_cert,
    post_raw,
    signer,
    speech,
    voice,
)

from simulators.alexa import (
    CertChainServer,
    RequestSigner,
    SigningCertificate,
    TestCertificateAuthority,
    encode,
    intent_request,
)
from skills import handlers


@dataclass
class Kit:
    ca: TestCertificateAuthority
    server: CertChainServer
    signer: RequestSigner
    good: SigningCertificate


def trigger_body(**overrides: Any) -> bytes:
    args: dict[str, Any] = {"device_id": ECHO_ID, "user_id": USER_ID, "skill_id": SKILL_ID}
    args.update(overrides)
    return encode(intent_request("TriggerHelpIntent", **args))


def signed(kit: Kit, body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, kit.signer.headers(body)


def with_url(kit: Kit, url: str) -> tuple[bytes, dict[str, str]]:
    body = trigger_body()
    return body, {**kit.signer.headers(body), "SignatureCertChainUrl": url}


def with_cert(kit: Kit, name: str, cert: SigningCertificate) -> tuple[bytes, dict[str, str]]:
    body = trigger_body()
    signer_ = RequestSigner(cert, kit.server.publish(name, cert.chain_pem))
    return body, signer_.headers(body)


def without(kit: Kit, header: str) -> tuple[bytes, dict[str, str]]:
    body = trigger_body()
    headers = kit.signer.headers(body)
    del headers[header]
    return body, headers


def tampered(kit: Kit) -> tuple[bytes, dict[str, str]]:
    body = trigger_body()
    headers = kit.signer.headers(body)
    return body.replace(b"TriggerHelpIntent", b"CheckInIntent"), headers


def expired(kit: Kit) -> tuple[bytes, dict[str, str]]:
    now = datetime.now(UTC)
    cert = kit.ca.issue_signing_cert(not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    return with_cert(kit, "expired.pem", cert)


def foreign(kit: Kit) -> tuple[bytes, dict[str, str]]:
    other = TestCertificateAuthority.create("Somebody Else's Root")
    return with_cert(kit, "foreign.pem", other.issue_signing_cert())


def at_time(kit: Kit, delta_s: float) -> tuple[bytes, dict[str, str]]:
    return signed(kit, trigger_body(timestamp=datetime.now(UTC) + timedelta(seconds=delta_s)))


def unpublished(kit: Kit) -> tuple[bytes, dict[str, str]]:
    return with_url(kit, kit.server.origin + "/echo.api/nothing-here.pem")


def oversize(kit: Kit) -> tuple[bytes, dict[str, str]]:
    envelope = intent_request("TriggerHelpIntent", device_id=ECHO_ID, user_id=USER_ID, skill_id=SKILL_ID)
    envelope["session"]["attributes"] = {"padding": "x" * 20_000}
    return signed(kit, encode(envelope))


Case = Callable[[Kit], tuple[bytes, dict[str, str]]]

CASES: dict[str, tuple[Case, int]] = {
    "missing cert URL header": (lambda k: without(k, "SignatureCertChainUrl"), 400),
    "missing signature header": (lambda k: without(k, "Signature-256"), 400),
    "signature not base64": (
        lambda k: (trigger_body(), {**k.signer.headers(trigger_body()), "Signature-256": "!!not base64!!"}),
        400,
    ),
    "cert URL http scheme": (
        lambda k: with_url(k, k.server.origin.replace("https", "http") + "/echo.api/echo-api-cert.pem"),
        400,
    ),
    "cert URL wrong host": (
        lambda k: with_url(k, "https://evil.example.com/echo.api/echo-api-cert.pem"),
        400,
    ),
    "cert URL real Amazon host in test mode": (
        lambda k: with_url(k, "https://s3.amazonaws.com/echo.api/echo-api-cert.pem"),
        400,
    ),
    "cert URL wrong port": (lambda k: with_url(k, "https://127.0.0.1:1/echo.api/echo-api-cert.pem"), 400),
    "cert URL wrong path": (lambda k: with_url(k, k.server.origin + "/EcHo.aPi/echo-api-cert.pem"), 400),
    "cert URL path escapes": (lambda k: with_url(k, k.server.origin + "/echo.api/../invalid.pem"), 400),
    "cert URL encoded escape": (lambda k: with_url(k, k.server.origin + "/echo.api/%2e%2e/invalid.pem"), 400),
    "expired certificate": (expired, 400),
    "foreign certificate": (foreign, 400),
    "self-signed certificate": (
        lambda k: with_cert(k, "self.pem", k.ca.issue_signing_cert(self_signed=True)),
        400,
    ),
    "wrong SAN": (
        lambda k: with_cert(k, "san.pem", k.ca.issue_signing_cert(dns_names=["evil.example.com"])),
        400,
    ),
    "tampered body": (tampered, 400),
    "stale timestamp": (lambda k: at_time(k, -200), 400),
    "future timestamp": (lambda k: at_time(k, +200), 400),
    "wrong skill id": (lambda k: signed(k, trigger_body(skill_id="amzn1.ask.skill.someone-else")), 400),
    "malformed JSON": (lambda k: signed(k, b'{"version": "1.0", "request": {'), 400),
    "JSON that is not an envelope": (lambda k: signed(k, b'["TriggerHelpIntent"]'), 400),
    "oversize body": (oversize, 413),
    "certificate cannot be fetched": (unpublished, 503),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_refused_and_raises_nothing(
    case: str,
    voice: RunningBridge,
    ca: TestCertificateAuthority,
    cert_server: CertChainServer,
    signer: RequestSigner,
    good_cert: SigningCertificate,
) -> None:
    build, expected = CASES[case]
    body, headers = build(Kit(ca, cert_server, signer, good_cert))
    status, reply = await post_raw(voice, body, headers)
    assert status == expected, reply
    assert isinstance(reply, dict) and set(reply) == {"error", "detail"} and reply["detail"]
    assert await alert_count(voice) == 0
    assert await voice.store.event_count() == 0
    # ... and the endpoint still works afterwards
    good = trigger_body(request_id="amzn1.echo-api.request.after-" + case.replace(" ", "-"))
    status, reply = await post_raw(voice, good, signer.headers(good))
    assert status == 200 and handlers.ALERTED in speech(reply)
    assert await alert_count(voice) == 1


async def test_unknown_intent_is_answered_with_the_fallback_and_raises_nothing(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    body = encode(intent_request("OrderPizzaIntent", device_id=ECHO_ID, user_id=USER_ID, skill_id=SKILL_ID))
    status, reply = await post_raw(voice, body, signer.headers(body))
    assert status == 200
    assert handlers.FALLBACK in speech(reply)
    assert await alert_count(voice) == 0 and await voice.store.event_count() == 0


async def test_unknown_request_type_is_refused_without_an_alert(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    envelope = json.loads(trigger_body())
    envelope["request"] = {
        "type": "Bogus.Request",
        "requestId": "r1",
        "timestamp": envelope["request"]["timestamp"],
        "locale": "en-GB",
    }
    body = encode(envelope)
    status, reply = await post_raw(voice, body, signer.headers(body))
    assert status == 400 and reply["error"] == "malformed request envelope", reply
    assert await alert_count(voice) == 0


async def test_get_and_wrong_content_are_json_errors(voice: RunningBridge) -> None:
    async with voice.session.get(voice.url + "/alexa") as resp:
        assert resp.status == 405
        assert set(await resp.json()) == {"error", "detail"}
    assert await alert_count(voice) == 0
