"""Alexa request verification: every bad-input case from issue 3, against a real local HTTPS cert server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from simulators.alexa import (
    AlexaEndpointError,
    CertChainServer,
    RequestSigner,
    SigningCertificate,
    TestCertificateAuthority,
    encode,
    intent_request,
    launch_request,
    post_utterance,
    session_ended_request,
)
from skills.verification import (
    AlexaRequestRejected,
    AlexaVerifier,
    CertificateUnavailable,
    RequestTooLarge,
    VerificationFailed,
    check_cert_chain_url,
)

SKILL_ID = "amzn1.ask.skill.11111111-2222-3333-4444-555555555555"
DEVICE_ID = "amzn1.ask.device.TESTECHO"
USER_ID = "amzn1.ask.account.TESTUSER"


@pytest.fixture
def root_pem(ca: TestCertificateAuthority, tmp_path: Path) -> Path:
    return ca.write_root(tmp_path / "alexa-test-root.pem")


@pytest.fixture
def verifier(root_pem: Path, cert_server: CertChainServer) -> AlexaVerifier:
    return AlexaVerifier(SKILL_ID, test_ca=root_pem, test_cert_origin=cert_server.origin, fetch_timeout=2.0)


@pytest.fixture
def signer(cert_server: CertChainServer, good_cert: SigningCertificate) -> RequestSigner:
    return RequestSigner(good_cert, cert_server.publish("echo-api-cert.pem", good_cert.chain_pem))


def trigger(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"device_id": DEVICE_ID, "user_id": USER_ID, "skill_id": SKILL_ID}
    args.update(overrides)
    return intent_request("TriggerHelpIntent", **args)


async def rejected(verifier: AlexaVerifier, headers: dict[str, str], body: bytes) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        await verifier.verify(headers, body)
    assert info.value.http_status == 400
    return info.value


# --- the good path -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        trigger,
        lambda: launch_request(device_id=DEVICE_ID, user_id=USER_ID, skill_id=SKILL_ID),
        lambda: session_ended_request(device_id=DEVICE_ID, user_id=USER_ID, skill_id=SKILL_ID),
    ],
    ids=["IntentRequest", "LaunchRequest", "SessionEndedRequest"],
)
async def test_valid_request_passes_and_returns_parsed_body(
    verifier: AlexaVerifier, signer: RequestSigner, build: Any
) -> None:
    envelope = build()
    body = encode(envelope)
    assert await verifier.verify(signer.headers(body), body) == envelope


async def test_chain_is_fetched_once_and_cached(
    verifier: AlexaVerifier, signer: RequestSigner, cert_server: CertChainServer
) -> None:
    for _ in range(3):
        body = encode(trigger())
        await verifier.verify(signer.headers(body), body)
    assert cert_server.hits == {"/echo.api/echo-api-cert.pem": 1}


async def test_concurrent_requests_share_one_download(
    verifier: AlexaVerifier,
    signer: RequestSigner,
    cert_server: CertChainServer,
    good_cert: SigningCertificate,
) -> None:
    slow = RequestSigner(good_cert, cert_server.publish("slow.pem", good_cert.chain_pem, delay=0.2))
    bodies = [encode(trigger()) for _ in range(20)]
    results = await asyncio.gather(*(verifier.verify(slow.headers(b), b) for b in bodies))
    assert len(results) == 20
    assert cert_server.hits["/echo.api/slow.pem"] == 1


async def test_header_names_are_case_insensitive(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    body = encode(trigger())
    headers = {k.lower(): v for k, v in signer.headers(body).items()}
    assert (await verifier.verify(headers, body))["request"]["type"] == "IntentRequest"


async def test_timestamp_inside_tolerance_passes(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    for offset in (-140, 140):
        body = encode(trigger(timestamp=datetime.now(UTC) + timedelta(seconds=offset)))
        envelope = await verifier.verify(signer.headers(body), body)
        assert envelope["request"]["type"] == "IntentRequest"


# --- headers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["SignatureCertChainUrl", "Signature-256"])
async def test_missing_signature_header(verifier: AlexaVerifier, signer: RequestSigner, missing: str) -> None:
    body = encode(trigger())
    headers = signer.headers(body)
    del headers[missing]
    assert missing in (await rejected(verifier, headers, body)).reason


async def test_no_headers_at_all(verifier: AlexaVerifier) -> None:
    await rejected(verifier, {}, encode(trigger()))


async def test_signature_not_base64(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    body = encode(trigger())
    headers = signer.headers(body) | {"Signature-256": "not base64 at all!"}
    assert "base64" in (await rejected(verifier, headers, body)).reason


# --- certificate URL -----------------------------------------------------------------------------------

GOOD_URLS = [
    "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com:443/echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com/echo.api/../echo.api/echo-api-cert.pem",
    "HTTPS://S3.AMAZONAWS.COM/echo.api/echo-api-cert.pem",
    "https://S3.amazonaws.com/echo.api/sub/dir/cert.pem",
]

BAD_URLS = [
    "http://s3.amazonaws.com/echo.api/echo-api-cert.pem",  # not https
    "ftp://s3.amazonaws.com/echo.api/echo-api-cert.pem",
    "https://notamazon.com/echo.api/echo-api-cert.pem",  # wrong host
    "https://s3.amazonaws.com.evil.example/echo.api/echo-api-cert.pem",
    "https://evil.example/echo.api/x.pem#@s3.amazonaws.com",
    "https://user:pw@s3.amazonaws.com/echo.api/echo-api-cert.pem",  # credentials
    "https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem",  # wrong port
    "https://s3.amazonaws.com:80/echo.api/echo-api-cert.pem",
    "https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem",  # path is case-sensitive
    "https://s3.amazonaws.com/invalid.path/echo-api-cert.pem",
    "https://s3.amazonaws.com/echo.api/../invalid.path/echo-api-cert.pem",  # escapes after normalising
    "https://s3.amazonaws.com/echo.api/%2e%2e/invalid.path/echo-api-cert.pem",
    "https://s3.amazonaws.com/echo.api/",  # the folder, not a file
    "https://s3.amazonaws.com/echo.api",
    "https://s3.amazonaws.com",
    "https://s3.amazonaws.com:notaport/echo.api/x.pem",
    "not a url",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_cert_url_forms_allowed(url: str) -> None:
    assert check_cert_chain_url(url) == url


@pytest.mark.parametrize("url", BAD_URLS)
def test_cert_url_forms_refused(url: str) -> None:
    with pytest.raises(VerificationFailed):
        check_cert_chain_url(url)


@pytest.mark.parametrize("url", BAD_URLS[:8])
async def test_bad_cert_url_is_refused_before_any_fetch(
    verifier: AlexaVerifier, signer: RequestSigner, cert_server: CertChainServer, url: str
) -> None:
    body = encode(trigger())
    await rejected(verifier, signer.headers(body) | {"SignatureCertChainUrl": url}, body)
    assert cert_server.hits == {}


async def test_test_origin_with_wrong_port_or_path_is_refused(
    verifier: AlexaVerifier, signer: RequestSigner, cert_server: CertChainServer
) -> None:
    body = encode(trigger())
    port = int(cert_server.origin.rsplit(":", 1)[1])
    for url in (
        f"https://127.0.0.1:{port + 1}/echo.api/echo-api-cert.pem",
        f"http://127.0.0.1:{port}/echo.api/echo-api-cert.pem",
        f"{cert_server.origin}/other/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",  # test mode replaces the origin
    ):
        await rejected(verifier, signer.headers(body) | {"SignatureCertChainUrl": url}, body)
    assert cert_server.hits == {}


# --- certificates ----------------------------------------------------------------------------------


async def publish_and_sign(
    cert_server: CertChainServer, name: str, cert: SigningCertificate
) -> tuple[dict[str, str], bytes]:
    signer = RequestSigner(cert, cert_server.publish(name, cert.chain_pem))
    body = encode(trigger())
    return signer.headers(body), body


async def test_expired_certificate(
    verifier: AlexaVerifier, ca: TestCertificateAuthority, cert_server: CertChainServer
) -> None:
    now = datetime.now(UTC)
    cert = ca.issue_signing_cert(not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    headers, body = await publish_and_sign(cert_server, "expired.pem", cert)
    assert "expired" in (await rejected(verifier, headers, body)).reason


async def test_not_yet_valid_certificate(
    verifier: AlexaVerifier, ca: TestCertificateAuthority, cert_server: CertChainServer
) -> None:
    now = datetime.now(UTC)
    cert = ca.issue_signing_cert(not_before=now + timedelta(days=1), not_after=now + timedelta(days=10))
    headers, body = await publish_and_sign(cert_server, "future.pem", cert)
    assert "not yet valid" in (await rejected(verifier, headers, body)).reason


async def test_certificate_from_a_foreign_ca(verifier: AlexaVerifier, cert_server: CertChainServer) -> None:
    foreign = TestCertificateAuthority.create("Some Other Root")
    headers, body = await publish_and_sign(cert_server, "foreign.pem", foreign.issue_signing_cert())
    assert "does not validate" in (await rejected(verifier, headers, body)).reason


async def test_self_signed_certificate(
    verifier: AlexaVerifier, ca: TestCertificateAuthority, cert_server: CertChainServer
) -> None:
    headers, body = await publish_and_sign(cert_server, "self.pem", ca.issue_signing_cert(self_signed=True))
    assert "does not validate" in (await rejected(verifier, headers, body)).reason


async def test_chain_without_its_intermediate(
    verifier: AlexaVerifier, ca: TestCertificateAuthority, cert_server: CertChainServer
) -> None:
    cert = ca.issue_signing_cert()
    leaf_only = SigningCertificate(
        cert.cert,
        cert.key,
        cert.chain_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n",
    )
    headers, body = await publish_and_sign(cert_server, "leaf-only.pem", leaf_only)
    assert "does not validate" in (await rejected(verifier, headers, body)).reason


@pytest.mark.parametrize("names", [("echo-api.example.com",), ("www.amazon.com", "amazon.com"), ()])
async def test_wrong_san(
    verifier: AlexaVerifier,
    ca: TestCertificateAuthority,
    cert_server: CertChainServer,
    names: tuple[str, ...],
) -> None:
    headers, body = await publish_and_sign(
        cert_server, "wrong-san.pem", ca.issue_signing_cert(dns_names=names)
    )
    assert "SAN" in (await rejected(verifier, headers, body)).reason


async def test_served_garbage_is_a_failed_check(
    verifier: AlexaVerifier, cert_server: CertChainServer, good_cert: SigningCertificate
) -> None:
    signer = RequestSigner(good_cert, cert_server.publish("garbage.pem", b"<html>nope</html>"))
    body = encode(trigger())
    assert "no certificate" in (await rejected(verifier, signer.headers(body), body)).reason


async def test_test_ca_is_not_trusted_by_default(good_cert: SigningCertificate) -> None:
    """A verifier without test mode, handed the test chain for the real Amazon URL, refuses it."""

    async def fetch(url: str) -> bytes:
        assert url == "https://s3.amazonaws.com/echo.api/echo-api-cert.pem"
        return good_cert.chain_pem

    strict = AlexaVerifier(SKILL_ID, fetch=fetch)
    assert not strict.test_mode
    signer = RequestSigner(good_cert, "https://s3.amazonaws.com/echo.api/echo-api-cert.pem")
    body = encode(trigger())
    assert "does not validate" in (await rejected(strict, signer.headers(body), body)).reason


async def test_default_verifier_refuses_a_local_cert_origin(
    signer: RequestSigner, cert_server: CertChainServer
) -> None:
    strict = AlexaVerifier(SKILL_ID)
    body = encode(trigger())
    assert "host" in (await rejected(strict, signer.headers(body), body)).reason
    assert cert_server.hits == {}


def test_test_origin_needs_the_test_ca() -> None:
    with pytest.raises(ValueError, match="test_ca"):
        AlexaVerifier(SKILL_ID, test_cert_origin="https://127.0.0.1:8443")


async def test_cached_chain_is_refetched_and_refused_when_it_expires(
    root_pem: Path, cert_server: CertChainServer, ca: TestCertificateAuthority
) -> None:
    now = datetime.now(UTC)
    cert = ca.issue_signing_cert(not_after=now + timedelta(hours=1))
    signer = RequestSigner(cert, cert_server.publish("short.pem", cert.chain_pem))
    clock = [now]
    verifier = AlexaVerifier(
        SKILL_ID, test_ca=root_pem, test_cert_origin=cert_server.origin, clock=lambda: clock[0]
    )
    body = encode(trigger(timestamp=now))
    await verifier.verify(signer.headers(body), body)
    clock[0] = now + timedelta(hours=2)
    body = encode(trigger(timestamp=clock[0]))
    assert "expired" in (await rejected(verifier, signer.headers(body), body)).reason
    assert cert_server.hits["/echo.api/short.pem"] == 2  # an out-of-date cache entry is fetched again


# --- signature and body ------------------------------------------------------------------------------


async def test_tampered_body(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    envelope = trigger()
    headers = signer.headers(encode(envelope))
    envelope["context"]["System"]["device"]["deviceId"] = "amzn1.ask.device.SOMEONEELSE"
    assert "signature" in (await rejected(verifier, headers, encode(envelope))).reason


async def test_body_signed_by_another_key(
    verifier: AlexaVerifier, signer: RequestSigner, ca: TestCertificateAuthority
) -> None:
    body = encode(trigger())
    other = RequestSigner(ca.issue_signing_cert(), signer.cert_url)  # right chain URL, wrong key
    assert "signature" in (await rejected(verifier, other.headers(body), body)).reason


@pytest.mark.parametrize("offset", [-151, -3600, 151, 3600])
async def test_stale_and_future_timestamps(
    verifier: AlexaVerifier, signer: RequestSigner, offset: int
) -> None:
    body = encode(trigger(timestamp=datetime.now(UTC) + timedelta(seconds=offset)))
    reason = (await rejected(verifier, signer.headers(body), body)).reason
    assert ("stale" if offset < 0 else "future") in reason


async def test_unparseable_timestamp(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    envelope = trigger()
    envelope["request"]["timestamp"] = "yesterday"
    body = encode(envelope)
    assert "ISO 8601" in (await rejected(verifier, signer.headers(body), body)).reason


async def test_wrong_skill_id(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    body = encode(trigger(skill_id="amzn1.ask.skill.someone-elses-skill"))
    assert "applicationId" in (await rejected(verifier, signer.headers(body), body)).reason


async def test_session_and_context_skill_ids_must_both_match(
    verifier: AlexaVerifier, signer: RequestSigner
) -> None:
    envelope = trigger()
    envelope["session"]["application"]["applicationId"] = "amzn1.ask.skill.other"
    body = encode(envelope)
    await rejected(verifier, signer.headers(body), body)


async def test_missing_skill_id(verifier: AlexaVerifier, signer: RequestSigner) -> None:
    envelope = trigger()
    del envelope["session"]
    del envelope["context"]
    body = encode(envelope)
    assert "no applicationId" in (await rejected(verifier, signer.headers(body), body)).reason


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2, 3]", b'"a string"', b'{"version": "1.0"}'],
    ids=["broken", "empty", "not-utf8", "array", "string", "no-request"],
)
async def test_malformed_json(verifier: AlexaVerifier, signer: RequestSigner, body: bytes) -> None:
    await rejected(verifier, signer.headers(body), body)


async def test_body_over_the_cap(root_pem: Path, cert_server: CertChainServer, signer: RequestSigner) -> None:
    verifier = AlexaVerifier(
        SKILL_ID, test_ca=root_pem, test_cert_origin=cert_server.origin, max_body_bytes=4096
    )
    envelope = trigger()
    envelope["padding"] = "x" * 5000
    body = encode(envelope)
    with pytest.raises(RequestTooLarge) as info:
        await verifier.verify(signer.headers(body), body)
    assert info.value.http_status == 413
    assert cert_server.hits == {}


# --- certificate unavailable -----------------------------------------------------------------------


async def test_certificate_not_found_is_unavailable(
    verifier: AlexaVerifier, cert_server: CertChainServer, good_cert: SigningCertificate
) -> None:
    signer = RequestSigner(good_cert, f"{cert_server.origin}/echo.api/missing.pem")
    body = encode(trigger())
    with pytest.raises(CertificateUnavailable) as info:
        await verifier.verify(signer.headers(body), body)
    assert info.value.http_status == 503
    assert "404" in info.value.reason


async def test_slow_certificate_server_times_out_then_recovers(
    root_pem: Path, cert_server: CertChainServer, good_cert: SigningCertificate
) -> None:
    verifier = AlexaVerifier(
        SKILL_ID, test_ca=root_pem, test_cert_origin=cert_server.origin, fetch_timeout=0.3
    )
    url = cert_server.publish("slow.pem", good_cert.chain_pem, delay=1.0)
    signer = RequestSigner(good_cert, url)
    body = encode(trigger())
    with pytest.raises(CertificateUnavailable, match="timed out"):
        await verifier.verify(signer.headers(body), body)
    cert_server.publish("slow.pem", good_cert.chain_pem)  # the server is fast again: failures are not cached
    assert (await verifier.verify(signer.headers(body), body))["request"]["type"] == "IntentRequest"


async def test_nothing_listening_is_unavailable(root_pem: Path, good_cert: SigningCertificate) -> None:
    with socket.socket() as sock:  # find a port, then close it so nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    origin = f"https://127.0.0.1:{port}"
    verifier = AlexaVerifier(SKILL_ID, test_ca=root_pem, test_cert_origin=origin, fetch_timeout=2.0)
    signer = RequestSigner(good_cert, f"{origin}/echo.api/echo-api-cert.pem")
    body = encode(trigger())
    with pytest.raises(CertificateUnavailable):
        await verifier.verify(signer.headers(body), body)


async def test_pluggable_fetch_failure_is_unavailable(good_cert: SigningCertificate, root_pem: Path) -> None:
    async def broken_fetch(url: str) -> bytes:
        raise ConnectionResetError("peer went away")

    verifier = AlexaVerifier(
        SKILL_ID, test_ca=root_pem, test_cert_origin="https://127.0.0.1:9", fetch=broken_fetch
    )
    signer = RequestSigner(good_cert, "https://127.0.0.1:9/echo.api/echo-api-cert.pem")
    body = encode(trigger())
    with pytest.raises(CertificateUnavailable, match="peer went away"):
        await verifier.verify(signer.headers(body), body)


# --- the simulator's post_utterance against a real local endpoint ---------------------------------


@pytest.fixture
async def echo_endpoint(verifier: AlexaVerifier) -> AsyncIterator[str]:
    """A stand-in skill endpoint (not the bridge's): verify, then echo what was asked."""

    async def handle(request: web.Request) -> web.Response:
        try:
            envelope = await verifier.verify(request.headers, await request.read())
        except AlexaRequestRejected as exc:
            return web.json_response({"error": exc.reason}, status=exc.http_status)
        req = envelope["request"]
        device = envelope["context"]["System"]["device"]["deviceId"]
        return web.json_response(
            {"type": req["type"], "intent": req.get("intent", {}).get("name"), "device": device}
        )

    app = web.Application()
    app.router.add_post("/alexa", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/alexa"
    finally:
        await runner.cleanup()


async def test_post_utterance_builds_signs_and_posts(echo_endpoint: str, signer: RequestSigner) -> None:
    ids = {"device_id": DEVICE_ID, "user_id": USER_ID, "skill_id": SKILL_ID, "signer": signer}
    assert await post_utterance(echo_endpoint, "Alexa, trigger help", **ids) == {
        "type": "IntentRequest",
        "intent": "TriggerHelpIntent",
        "device": DEVICE_ID,
    }
    assert (await post_utterance(echo_endpoint, "is help coming", **ids))["intent"] == "HelpStatusIntent"
    assert (await post_utterance(echo_endpoint, "open care alarm", **ids))["type"] == "LaunchRequest"
    assert (await post_utterance(echo_endpoint, "play some jazz", **ids))["intent"] == "AMAZON.FallbackIntent"


async def test_post_utterance_reports_a_rejection(echo_endpoint: str, signer: RequestSigner) -> None:
    with pytest.raises(AlexaEndpointError) as info:
        await post_utterance(
            echo_endpoint,
            "trigger help",
            device_id=DEVICE_ID,
            user_id=USER_ID,
            skill_id="amzn1.ask.skill.wrong",
            signer=signer,
        )
    assert info.value.status == 400
    assert "applicationId" in info.value.body


async def test_renewed_chain_at_the_same_url_is_picked_up(
    root_pem: Path, cert_server: CertChainServer, ca: TestCertificateAuthority
) -> None:
    now = datetime.now(UTC)
    old = ca.issue_signing_cert(not_after=now + timedelta(hours=1))
    url = cert_server.publish("renewed.pem", old.chain_pem)
    clock = [now]
    verifier = AlexaVerifier(
        SKILL_ID, test_ca=root_pem, test_cert_origin=cert_server.origin, clock=lambda: clock[0]
    )
    body = encode(trigger(timestamp=now))
    await verifier.verify(RequestSigner(old, url).headers(body), body)
    new = ca.issue_signing_cert(not_after=now + timedelta(days=3))
    cert_server.publish("renewed.pem", new.chain_pem)
    clock[0] = now + timedelta(hours=2)
    body = encode(trigger(timestamp=clock[0]))
    assert (await verifier.verify(RequestSigner(new, url).headers(body), body))["request"][
        "type"
    ] == "IntentRequest"
