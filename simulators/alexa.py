"""Alexa request generator: a test certificate authority, real request envelopes, signing, posting.

Nothing here is trusted by the bridge unless its config names this CA's root PEM for testing (see
:mod:`skills.verification`). Typical use::

    ca = TestCertificateAuthority.create()
    ca.write_root(tmp_path / "alexa-test-ca.pem")
    async with CertChainServer(ca) as certs:
        signer = RequestSigner(ca.issue_signing_cert(), certs.publish("echo-api-cert.pem", ...))
        reply = await post_utterance(url, "trigger help", device_id=..., user_id=..., skill_id=...,
                                     signer=signer)

The utterance-to-intent step uses :mod:`simulators.alexa_matcher` (pure, no I/O) so the simulator and the
skill agree on the interaction model.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import ssl
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulators.alexa_matcher import LAUNCH, UtteranceMatcher

ALEXA_SAN = "echo-api.amazon.com"
KEY_SIZE = 2048
POST_TIMEOUT_S = 10.0


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Telecare bridge test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    *,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True, slots=True)
class SigningCertificate:
    """A leaf certificate, its key, and the PEM chain (leaf first, then intermediates) to publish."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    chain_pem: bytes


@dataclass(slots=True)
class TestCertificateAuthority:
    """A root CA and one intermediate made at test time: Amazon's chain shape (leaf, intermediate, root)."""

    __test__ = False  # not a pytest test class

    root_key: rsa.RSAPrivateKey
    root_cert: x509.Certificate
    intermediate_key: rsa.RSAPrivateKey
    intermediate_cert: x509.Certificate
    name: str = "Telecare Test Alexa Root"
    _server_certs: dict[str, SigningCertificate] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str = "Telecare Test Alexa Root", *, days: int = 30) -> TestCertificateAuthority:
        """Make a fresh root and intermediate valid from an hour ago for ``days`` days."""
        now = datetime.now(UTC)
        root_key, intermediate_key = _new_key(), _new_key()
        root_name, intermediate_name = _name(name), _name(f"{name} Intermediate")
        start, end = now - timedelta(hours=1), now + timedelta(days=days)
        root = _ca_cert(
            root_name, root_key, root_name, root_key, not_before=start, not_after=end, path_length=1
        )
        intermediate = _ca_cert(
            intermediate_name,
            intermediate_key,
            root_name,
            root_key,
            not_before=start,
            not_after=end,
            path_length=0,
        )
        return cls(root_key, root, intermediate_key, intermediate, name)

    @property
    def root_pem(self) -> bytes:
        """The root certificate as PEM: what the bridge's test-CA config points at."""
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    def write_root(self, path: Path) -> Path:
        """Write :attr:`root_pem` to ``path`` and return it."""
        path.write_bytes(self.root_pem)
        return path

    def _leaf(
        self,
        *,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str] = (),
        not_before: datetime | None,
        not_after: datetime | None,
        self_signed: bool,
    ) -> SigningCertificate:
        now = datetime.now(UTC)
        key = _new_key()
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        first = next((n for n in dns_names), None) or next(iter(ip_addresses), "leaf")
        subject = _name(str(first))
        issuer_key = key if self_signed else self.intermediate_key
        issuer_name = subject if self_signed else self.intermediate_cert.subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        chain = [cert] if self_signed else [cert, self.intermediate_cert]
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return SigningCertificate(cert, key, pem)

    def issue_signing_cert(
        self,
        *,
        dns_names: Iterable[str] = (ALEXA_SAN,),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        self_signed: bool = False,
    ) -> SigningCertificate:
        """A leaf like Amazon's request-signing certificate (SAN ``echo-api.amazon.com`` by default).

        Override ``dns_names`` for a wrong SAN, the dates for an expired one, or ``self_signed`` for a leaf
        that chains to nothing.
        """
        return self._leaf(
            dns_names=list(dns_names), not_before=not_before, not_after=not_after, self_signed=self_signed
        )

    def issue_server_cert(self, host: str = "127.0.0.1") -> SigningCertificate:
        """A TLS server certificate for the local certificate server (IP or DNS SAN for ``host``)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return self._leaf(dns_names=[host], not_before=None, not_after=None, self_signed=False)
        return self._leaf(
            dns_names=[], ip_addresses=[host], not_before=None, not_after=None, self_signed=False
        )


class RequestSigner:
    """Signs request bodies the way Alexa does: ``Signature-256`` = base64 RSA-SHA256 over the raw body."""

    def __init__(self, signing: SigningCertificate, cert_url: str) -> None:
        self.signing = signing
        self.cert_url = cert_url

    def signature(self, body: bytes) -> str:
        """The base64 signature of ``body``."""
        raw = self.signing.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")

    def headers(self, body: bytes) -> dict[str, str]:
        """The two headers Alexa adds, plus the JSON content type."""
        return {
            "Content-Type": "application/json; charset=utf-8",
            "SignatureCertChainUrl": self.cert_url,
            "Signature-256": self.signature(body),
        }


# --- request envelopes ---------------------------------------------------------------------------------


def _timestamp(at: datetime | None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    request: dict[str, Any],
    *,
    device_id: str,
    user_id: str,
    skill_id: str,
    session_id: str | None = None,
    new_session: bool = True,
    person_id: str | None = None,
) -> dict[str, Any]:
    """Wrap a ``request`` object in a full request envelope (version, session, context.System)."""
    application = {"applicationId": skill_id}
    user = {"userId": user_id}
    system: dict[str, Any] = {
        "application": application,
        "user": user,
        "device": {"deviceId": device_id, "supportedInterfaces": {}},
        "apiEndpoint": "https://api.eu.amazonalexa.com",
        "apiAccessToken": "test-access-token",
    }
    if person_id is not None:
        system["person"] = {"personId": person_id}
    return {
        "version": "1.0",
        "session": {
            "new": new_session,
            "sessionId": session_id or f"amzn1.echo-api.session.{uuid.uuid4()}",
            "application": dict(application),
            "attributes": {},
            "user": dict(user),
        },
        "context": {"System": system},
        "request": request,
    }


def launch_request(
    *,
    device_id: str,
    user_id: str,
    skill_id: str,
    locale: str = "en-GB",
    timestamp: datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A ``LaunchRequest`` envelope ("Alexa, open care alarm")."""
    request = {
        "type": "LaunchRequest",
        "requestId": request_id or f"amzn1.echo-api.request.{uuid.uuid4()}",
        "timestamp": _timestamp(timestamp),
        "locale": locale,
    }
    return envelope(request, device_id=device_id, user_id=user_id, skill_id=skill_id)


def intent_request(
    intent_name: str,
    *,
    device_id: str,
    user_id: str,
    skill_id: str,
    locale: str = "en-GB",
    slots: dict[str, str] | None = None,
    timestamp: datetime | None = None,
    request_id: str | None = None,
    new_session: bool = True,
) -> dict[str, Any]:
    """An ``IntentRequest`` envelope for ``intent_name`` with optional slot values."""
    request = {
        "type": "IntentRequest",
        "requestId": request_id or f"amzn1.echo-api.request.{uuid.uuid4()}",
        "timestamp": _timestamp(timestamp),
        "locale": locale,
        "dialogState": "COMPLETED",
        "intent": {
            "name": intent_name,
            "confirmationStatus": "NONE",
            "slots": {
                name: {"name": name, "value": value, "confirmationStatus": "NONE"}
                for name, value in (slots or {}).items()
            },
        },
    }
    return envelope(request, device_id=device_id, user_id=user_id, skill_id=skill_id, new_session=new_session)


def session_ended_request(
    *,
    device_id: str,
    user_id: str,
    skill_id: str,
    reason: str = "USER_INITIATED",
    locale: str = "en-GB",
    timestamp: datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A ``SessionEndedRequest`` envelope (``reason``: USER_INITIATED, ERROR or EXCEEDED_MAX_REPROMPTS)."""
    request = {
        "type": "SessionEndedRequest",
        "requestId": request_id or f"amzn1.echo-api.request.{uuid.uuid4()}",
        "timestamp": _timestamp(timestamp),
        "locale": locale,
        "reason": reason,
    }
    return envelope(request, device_id=device_id, user_id=user_id, skill_id=skill_id, new_session=False)


def encode(envelope_: dict[str, Any]) -> bytes:
    """The exact bytes to sign and send."""
    return json.dumps(envelope_, separators=(",", ":")).encode("utf-8")


# --- the certificate server ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Published:
    body: bytes
    status: int = 200
    delay: float = 0.0


@dataclass(slots=True)
class CertChainServer:
    """A tiny HTTPS server on 127.0.0.1 (port 0) serving PEM chains under ``/echo.api/``.

    Its TLS certificate is issued by ``ca``, so a verifier in test mode (which trusts that CA) can fetch
    from it. ``origin`` is the value for the verifier's ``test_cert_origin``; ``hits`` counts hits by path.
    """

    ca: TestCertificateAuthority
    host: str = "127.0.0.1"
    hits: dict[str, int] = field(default_factory=dict)
    _published: dict[str, _Published] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _port: int | None = None
    _tmp_files: list[Path] = field(default_factory=list)

    @property
    def origin(self) -> str:
        if self._port is None:
            raise RuntimeError("server not started")
        return f"https://{self.host}:{self._port}"

    def publish(self, name: str, chain_pem: bytes, *, status: int = 200, delay: float = 0.0) -> str:
        """Serve ``chain_pem`` at ``/echo.api/{name}`` (with an optional status or delay); return its URL."""
        path = f"/echo.api/{name}"
        self._published[path] = _Published(chain_pem, status, delay)
        return f"{self.origin}{path}"

    async def _serve(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        item = self._published.get(request.path)
        if item is None:
            return web.Response(status=404, text="not found")
        if item.delay:
            await asyncio.sleep(item.delay)
        return web.Response(status=item.status, body=item.body, content_type="application/x-pem-file")

    def _ssl_context(self) -> ssl.SSLContext:
        server = self.ca.issue_server_cert(self.host)
        key_pem = server.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as cert_file:
            cert_file.write(server.chain_pem)
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as key_file:
            key_file.write(key_pem)
        self._tmp_files += [Path(cert_file.name), Path(key_file.name)]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file.name, key_file.name)
        return context

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self._ssl_context())
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for path in self._tmp_files:
            path.unlink(missing_ok=True)
        self._tmp_files.clear()


# --- posting -------------------------------------------------------------------------------------------


class AlexaEndpointError(RuntimeError):
    """The skill endpoint answered something other than 200."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"skill endpoint answered HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


def build_for_utterance(
    utterance: str,
    *,
    device_id: str,
    user_id: str,
    skill_id: str,
    locale: str = "en-GB",
    matcher: UtteranceMatcher | None = None,
) -> dict[str, Any]:
    """Match ``utterance`` to an intent (or a launch) and build its request envelope."""
    match = (matcher or UtteranceMatcher.for_locale(locale)).match(utterance)
    if match.intent == LAUNCH:
        return launch_request(device_id=device_id, user_id=user_id, skill_id=skill_id, locale=locale)
    return intent_request(
        match.intent, device_id=device_id, user_id=user_id, skill_id=skill_id, locale=locale
    )


async def post_envelope(
    endpoint_url: str,
    envelope_: dict[str, Any],
    *,
    signer: RequestSigner,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """Sign and POST one envelope; return the response JSON, or raise :class:`AlexaEndpointError`."""
    body = encode(envelope_)
    owned = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S))
    try:
        async with client.post(endpoint_url, data=body, headers=signer.headers(body)) as response:
            text = await response.text()
            if response.status != 200:
                raise AlexaEndpointError(response.status, text)
            result: dict[str, Any] = json.loads(text)
            return result
    finally:
        if owned:
            await client.close()


async def post_utterance(
    endpoint_url: str,
    utterance: str,
    *,
    device_id: str,
    user_id: str,
    skill_id: str,
    signer: RequestSigner,
    locale: str = "en-GB",
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """Match ``utterance``, build, sign and POST its request to the skill endpoint; return the reply JSON."""
    env = build_for_utterance(
        utterance, device_id=device_id, user_id=user_id, skill_id=skill_id, locale=locale
    )
    return await post_envelope(endpoint_url, env, signer=signer, session=session)
