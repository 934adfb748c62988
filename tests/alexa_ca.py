"""Fixtures shared by the Alexa tests: a test certificate authority made at test time, its signing
certificate, and a real local HTTPS server that serves certificate chains."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.alexa import CertChainServer, SigningCertificate, TestCertificateAuthority


@pytest.fixture(scope="module")
def ca() -> TestCertificateAuthority:
    return TestCertificateAuthority.create()


@pytest.fixture(scope="module")
def good_cert(ca: TestCertificateAuthority) -> SigningCertificate:
    return ca.issue_signing_cert()


@pytest.fixture
async def cert_server(ca: TestCertificateAuthority) -> AsyncIterator[CertChainServer]:
    async with CertChainServer(ca) as server:
        yield server
