"""Verify that a request really comes from Alexa, as Alexa requires of a skill hosted outside Lambda.

This replaces ``ask-sdk-webservice-support`` (which fails at import on today's OpenSSL through
certvalidator/oscrypto, and downloads certificates with a blocking ``urlopen`` and no timeout). The checks:

1. the body is at most ``max_body_bytes``;
2. ``SignatureCertChainUrl`` and ``Signature-256`` headers are present;
3. the certificate URL is https, host ``s3.amazonaws.com`` (any case), port 443 if given, and its path is
   under ``/echo.api/`` after normalising ``.`` and ``..`` segments;
4. the body is a JSON object whose ``applicationId`` is the configured skill id and whose
   ``request.timestamp`` is within 150 s of now;
5. the certificate chain (fetched with aiohttp and a timeout, cached by URL) leads to a trusted root, is in
   date, and its leaf names ``echo-api.amazon.com`` in its SAN (``cryptography.x509.verification``);
6. ``Signature-256`` is a base64 RSA PKCS#1 v1.5 SHA-256 signature of the raw body by the leaf's key.

A failed check raises :class:`VerificationFailed` (HTTP 400); a certificate chain that cannot be fetched
raises :class:`CertificateUnavailable` (HTTP 503: our side, not the caller's fault).

**Test mode.** ``test_ca`` adds one extra trusted root from a PEM file; only then may ``test_cert_origin``
(``https://host:port``) replace ``s3.amazonaws.com:443`` as the allowed certificate origin, and the default
fetcher then also trusts that CA for the TLS connection. Neither is ever on by default, and
``test_cert_origin`` without ``test_ca`` is refused at construction.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import posixpath
import ssl
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from devices import strict_json
from devices.strict_json import dig

log = logging.getLogger(__name__)

ALEXA_CERT_HOST = "s3.amazonaws.com"
ALEXA_CERT_PORT = 443
ALEXA_CERT_PATH_PREFIX = "/echo.api/"
ALEXA_SAN = "echo-api.amazon.com"
CERT_URL_HEADER = "SignatureCertChainUrl"
SIGNATURE_HEADER = "Signature-256"
TIMESTAMP_TOLERANCE_S = 150.0
DEFAULT_FETCH_TIMEOUT_S = 5.0
DEFAULT_MAX_BODY_BYTES = 128 * 1024
MAX_CHAIN_BYTES = 64 * 1024
CACHE_SIZE = 16

#: An async function returning the body of an https GET, raising on any failure.
Fetch = Callable[[str], Awaitable[bytes]]


class AlexaRequestRejected(Exception):
    """Base class: the request must not be handled. ``http_status`` is what the endpoint answers."""

    http_status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VerificationFailed(AlexaRequestRejected):
    """The request failed a check: answer 400 and do nothing else."""

    http_status = 400


class RequestTooLarge(VerificationFailed):
    """The body is over the size cap: answer 413."""

    http_status = 413


class CertificateUnavailable(AlexaRequestRejected):
    """The certificate chain could not be fetched (timeout, network, HTTP error): answer 503."""

    http_status = 503


@dataclass(frozen=True, slots=True)
class CertOrigin:
    """The one origin certificate URLs may point at."""

    host: str
    port: int

    @classmethod
    def parse(cls, origin: str) -> CertOrigin:
        """Parse ``https://host[:port]``; anything else is a ValueError."""
        parts = urlsplit(origin)
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"certificate origin must look like https://host[:port], not {origin!r}")
        return cls(parts.hostname.lower(), parts.port or 443)


AMAZON_ORIGIN = CertOrigin(ALEXA_CERT_HOST, ALEXA_CERT_PORT)


def check_cert_chain_url(url: str, origin: CertOrigin = AMAZON_ORIGIN) -> str:
    """Return ``url`` if it is a certificate URL Alexa may use; raise :class:`VerificationFailed` if not.

    Scheme ``https`` and host compare case-insensitively; the port, if given, must be the origin's; the
    path must start with ``/echo.api/`` (case-sensitive) after ``.``/``..`` segments are resolved.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise VerificationFailed(f"certificate URL is malformed: {exc}") from None
    if parts.scheme.lower() != "https":
        raise VerificationFailed("certificate URL scheme must be https")
    if parts.username is not None or parts.password is not None:
        raise VerificationFailed("certificate URL must not carry credentials")
    if (parts.hostname or "").lower() != origin.host:
        raise VerificationFailed(f"certificate URL host must be {origin.host}")
    if port is not None and port != origin.port:
        raise VerificationFailed(f"certificate URL port must be {origin.port}")
    # Decode first so "%2e%2e" is treated like "..", then resolve dot segments.
    path = unquote(parts.path)
    normalised = posixpath.normpath(path) if path else ""
    if path.endswith("/") and not normalised.endswith("/"):
        normalised += "/"
    if not normalised.startswith(ALEXA_CERT_PATH_PREFIX) or normalised == ALEXA_CERT_PATH_PREFIX:
        raise VerificationFailed(f"certificate URL path must be under {ALEXA_CERT_PATH_PREFIX}")
    return url


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle that ``cryptography`` can parse (others are skipped)."""
    certs: list[x509.Certificate] = []
    marker = b"-----END CERTIFICATE-----"
    for block in data.split(marker):
        start = block.find(b"-----BEGIN CERTIFICATE-----")
        if start < 0:
            continue
        try:
            with warnings.catch_warnings():  # some system roots have non-positive serials
                warnings.simplefilter("ignore")
                certs.append(x509.load_pem_x509_certificate(block[start:] + marker))
        except ValueError:
            continue
    return certs


def default_trusted_roots() -> list[x509.Certificate]:
    """The system CA bundle (``ssl.get_default_verify_paths``), else certifi's bundle (read once)."""
    return list(_load_default_roots())


@functools.cache
def _load_default_roots() -> tuple[x509.Certificate, ...]:
    candidates: list[str] = []
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path:
            candidates.append(path)
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with aiohttp's and twilio's dependencies
        pass
    for candidate in candidates:
        file = Path(candidate)
        if file.is_file():
            roots = load_pem_bundle(file.read_bytes())
            if roots:
                return tuple(roots)
    raise RuntimeError("no trusted root certificates found (system bundle or certifi)")


@dataclass(frozen=True, slots=True)
class _VerifiedChain:
    """A chain that validated: the leaf's key and the window in which the whole chain is in date."""

    public_key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime


class AlexaVerifier:
    """Checks incoming Alexa requests; see the module docstring for the rules and the test mode.

    ``fetch`` replaces the default aiohttp download (tests may serve chains from a local server).
    ``clock`` returns the current aware UTC time.
    """

    def __init__(
        self,
        skill_id: str,
        *,
        test_ca: Path | None = None,
        test_cert_origin: str | None = None,
        fetch: Fetch | None = None,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT_S,
        timestamp_tolerance: float = TIMESTAMP_TOLERANCE_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        trusted_roots: list[x509.Certificate] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not skill_id:
            raise ValueError("skill_id is required")
        if test_cert_origin is not None and test_ca is None:
            raise ValueError("test_cert_origin may only be set together with test_ca (test mode)")
        self.skill_id = skill_id
        self.origin = CertOrigin.parse(test_cert_origin) if test_cert_origin else AMAZON_ORIGIN
        self.fetch_timeout = fetch_timeout
        self.timestamp_tolerance = timestamp_tolerance
        self.max_body_bytes = max_body_bytes
        self._clock = clock or (lambda: datetime.now(UTC))
        roots = list(trusted_roots) if trusted_roots is not None else default_trusted_roots()
        self._ssl: ssl.SSLContext | bool = True
        if test_ca is not None:
            extra = load_pem_bundle(Path(test_ca).read_bytes())
            if not extra:
                raise ValueError(f"no certificate found in test CA file {test_ca}")
            roots.extend(extra)
            ssl_context = ssl.create_default_context()
            ssl_context.load_verify_locations(cafile=str(test_ca))
            self._ssl = ssl_context
            log.warning("Alexa verification in TEST MODE: extra CA %s, cert origin %s", test_ca, self.origin)
        self._store = Store(roots)
        self._fetch: Fetch = fetch or self._fetch_with_aiohttp
        self._cache: OrderedDict[str, _VerifiedChain] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[bytes]] = {}

    @property
    def test_mode(self) -> bool:
        """True when an extra test CA is trusted."""
        return self._ssl is not True

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> dict[str, Any]:
        """Run every check on one request and return its parsed JSON body.

        ``headers`` may be any mapping; names are matched case-insensitively.
        Raises :class:`VerificationFailed` (or :class:`RequestTooLarge`) or :class:`CertificateUnavailable`.
        """
        if len(raw_body) > self.max_body_bytes:
            raise RequestTooLarge(f"body is over {self.max_body_bytes} bytes")
        cert_url = _header(headers, CERT_URL_HEADER)
        signature_b64 = _header(headers, SIGNATURE_HEADER)
        if not cert_url:
            raise VerificationFailed(f"missing {CERT_URL_HEADER} header")
        if not signature_b64:
            raise VerificationFailed(f"missing {SIGNATURE_HEADER} header")
        try:
            signature = base64.b64decode(signature_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise VerificationFailed(f"{SIGNATURE_HEADER} is not base64") from None
        check_cert_chain_url(cert_url, self.origin)
        envelope = self._parse_envelope(raw_body)
        now = self._clock()
        self.check_application_id(envelope)
        self.check_timestamp(envelope, now)
        chain = await self._verified_chain(cert_url, now)
        try:
            chain.public_key.verify(signature, raw_body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise VerificationFailed("signature does not match the body") from None
        return envelope

    @staticmethod
    def _parse_envelope(raw_body: bytes) -> dict[str, Any]:
        try:
            envelope = strict_json.loads(raw_body)
        except strict_json.JSONRefused as exc:
            raise VerificationFailed(f"body is not valid JSON: {exc.message}") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("request"), dict):
            raise VerificationFailed("body is not an Alexa request envelope")
        return envelope

    def check_application_id(self, envelope: Mapping[str, Any]) -> None:
        """Every applicationId the envelope carries (context and session) must be the configured skill id."""
        found = [
            app_id
            for app_id in (
                dig(envelope, "context", "System", "application", "applicationId"),
                dig(envelope, "session", "application", "applicationId"),
            )
            if app_id is not None
        ]
        if not found:
            raise VerificationFailed("request carries no applicationId")
        if any(app_id != self.skill_id for app_id in found):
            raise VerificationFailed("applicationId is not this skill's id")

    def check_timestamp(self, envelope: Mapping[str, Any], now: datetime) -> None:
        """``request.timestamp`` (ISO 8601) must be within the tolerance of ``now``, either way."""
        raw = dig(envelope, "request", "timestamp")
        if not isinstance(raw, str):
            raise VerificationFailed("request.timestamp is missing")
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            raise VerificationFailed("request.timestamp is not ISO 8601") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        skew = (now - stamp).total_seconds()
        if skew > self.timestamp_tolerance:
            raise VerificationFailed(f"request.timestamp is stale ({skew:.0f} s old)")
        if skew < -self.timestamp_tolerance:
            raise VerificationFailed(f"request.timestamp is in the future ({-skew:.0f} s ahead)")

    async def _verified_chain(self, url: str, now: datetime) -> _VerifiedChain:
        cached = self._cache.get(url)
        if cached is not None and cached.not_before <= now <= cached.not_after:
            self._cache.move_to_end(url)
            return cached
        self._cache.pop(url, None)  # missing, or out of date: fetch again (the file may have been renewed)
        chain = self.validate_chain(await self._fetch_once(url), now)
        self._cache[url] = chain
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return chain

    async def _fetch_once(self, url: str) -> bytes:
        """One download per URL at a time; concurrent requests for the same URL share it."""
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._fetch_checked(url), name=f"alexa-cert-fetch {url}")
            self._inflight[url] = task
            task.add_done_callback(self._fetch_done)
        return await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[bytes]) -> None:
        for url, inflight in list(self._inflight.items()):
            if inflight is task:
                del self._inflight[url]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged as lost

    async def _fetch_checked(self, url: str) -> bytes:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.fetch_timeout):
                data = await self._fetch(url)
        except TimeoutError:
            raise CertificateUnavailable(f"certificate download timed out ({self.fetch_timeout} s)") from None
        except AlexaRequestRejected:
            raise
        except Exception as exc:  # any failure of the download itself is "unavailable", never a crash
            raise CertificateUnavailable(f"certificate download failed: {exc!r}") from None
        elapsed = time.monotonic() - started
        log.info("fetched Alexa certificate chain %s (%d bytes, %.3f s)", url, len(data), elapsed)
        return data

    async def _fetch_with_aiohttp(self, url: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, ssl=self._ssl, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise CertificateUnavailable(f"certificate download answered HTTP {response.status}")
            data = await response.content.read(MAX_CHAIN_BYTES + 1)
            if len(data) > MAX_CHAIN_BYTES:
                raise CertificateUnavailable("certificate chain is too large")
            return data

    def validate_chain(self, pem: bytes, now: datetime) -> _VerifiedChain:
        """Parse a PEM chain (leaf first) and validate it to a trusted root at ``now``."""
        certs = load_pem_bundle(pem)
        if not certs:
            raise VerificationFailed("certificate chain holds no certificate")
        leaf, intermediates = certs[0], certs[1:]
        if now < leaf.not_valid_before_utc:
            raise VerificationFailed("signing certificate is not yet valid")
        if now > leaf.not_valid_after_utc:
            raise VerificationFailed("signing certificate has expired")
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if ALEXA_SAN not in (name.lower() for name in names):
            raise VerificationFailed(f"signing certificate SAN does not name {ALEXA_SAN}")
        public_key = leaf.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise VerificationFailed("signing certificate key is not RSA")
        verifier = PolicyBuilder().store(self._store).time(now).build_server_verifier(x509.DNSName(ALEXA_SAN))
        try:
            chain = verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            raise VerificationFailed(f"certificate chain does not validate: {exc}") from None
        return _VerifiedChain(
            public_key=public_key,
            not_before=max(cert.not_valid_before_utc for cert in chain),
            not_after=min(cert.not_valid_after_utc for cert in chain),
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None
