"""PostgreSQL over TLS (docs/deploying.md, "PostgreSQL over TLS"): a private server with ``ssl = on`` and
a certificate from a CA made here, which refuses every connection that is not TLS. The store connects
with ``sslmode=verify-full`` and the CA; the bridge runs on it; a wrong CA, a name the certificate does
not carry, or no TLS at all are refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import IN_CI, free_port, make_config, running_bridge

from alarm_centre.store import open_store
from devices.events import DeviceEvent
from devices.vocabulary import EventType

BIN_DIRS = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return None


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why}; CI must provide it")
    pytest.skip(why)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, host: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class TlsPostgres:
    port: int
    ca_file: Path
    other_ca_file: Path

    def url(self, host: str = "localhost", *, sslmode: str = "verify-full", ca: Path | None = None) -> str:
        root = ca or self.ca_file
        return f"postgresql://postgres@{host}:{self.port}/postgres?sslmode={sslmode}&sslrootcert={root}"


@pytest.fixture
def tls_postgres() -> Iterator[TlsPostgres]:
    """A PostgreSQL of our own on a free port, TLS only, with a certificate for ``localhost``."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("initdb and pg_ctl (PostgreSQL server binaries) are not installed")
    assert initdb is not None and pg_ctl is not None
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no postgres user to run a server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="pg-tls-"))
    data = base / "data"
    ca_key, ca = make_ca("telecare test CA")
    server_key, server_cert = make_server_cert(ca_key, ca, "localhost")
    _, other_ca = make_ca("someone else's CA")
    (base / "ca.crt").write_bytes(_pem(ca))
    (base / "other-ca.crt").write_bytes(_pem(other_ca))
    (base / "server.crt").write_bytes(_pem(server_cert) + _pem(ca))
    (base / "server.key").write_bytes(_key_pem(server_key))
    os.chmod(base / "server.key", 0o600)
    if owner is not None:
        for path in [base, *base.iterdir()]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(base, 0o755)
    port = free_port()
    quiet = {"capture_output": True, "text": True, "timeout": 120}
    done = subprocess.run(
        [*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], **quiet
    )
    assert done.returncode == 0, done.stderr
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{base}'\n"
            f"ssl = on\nssl_cert_file = '{base / 'server.crt'}'\nssl_key_file = '{base / 'server.key'}'\n"
            "fsync = off\n"
        )
    (data / "pg_hba.conf").write_text(
        "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\nlocal all all trust\n"
    )
    if owner is not None:
        os.chown(data / "pg_hba.conf", owner.pw_uid, owner.pw_gid)
    done = subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "start"], **quiet
    )
    assert done.returncode == 0, done.stderr + (base / "server.log").read_text(errors="replace")
    try:
        yield TlsPostgres(port, base / "ca.crt", base / "other-ca.crt")
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], **quiet)
        shutil.rmtree(base, ignore_errors=True)


async def test_the_store_speaks_tls_verified_against_the_ca(
    tls_postgres: TlsPostgres, tmp_path: Path
) -> None:
    async with open_store(tls_postgres.url()) as store:
        async with store.read() as tx:
            row = await tx.fetchone("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row is not None and row["ssl"] is True and row["version"].startswith("TLSv1.")
        [result] = await store.ingest(
            [DeviceEvent("unit-tls", "e1", EventType.PENDANT, dt.datetime.now(dt.UTC))]
        )
        assert result.result == "accepted"
    # The bridge itself, on the TLS store: it migrates, serves, and is healthy.
    config = make_config(tmp_path, TELECARE_STORE__URL=tls_postgres.url())
    async with running_bridge(config) as bridge:
        status, body = await bridge.call("GET", "/api/v1/alerts", user="olive")
        assert status == 200 and [a["device_id"] for a in body["alerts"]] == ["unit-tls"]
        async with bridge.session.get(bridge.url + "/healthz") as health:
            assert health.status == 200, await health.text()


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("no TLS", "no encryption"),  # the server refuses it: hostnossl ... reject
        ("someone else's CA", "certificate verify failed"),
        ("a name the certificate does not carry", "127.0.0.1"),
    ],
)
async def test_anything_short_of_verified_tls_is_refused(
    tls_postgres: TlsPostgres, how: str, says: str
) -> None:
    url = {
        "no TLS": tls_postgres.url(sslmode="disable"),
        "someone else's CA": tls_postgres.url(ca=tls_postgres.other_ca_file),
        "a name the certificate does not carry": tls_postgres.url("127.0.0.1"),
    }[how]
    with pytest.raises(Exception) as refused:
        async with open_store(url):
            pass
    assert says in str(refused.value), (how, repr(refused.value))
    if how == "someone else's CA":  # check-config says so before the first start
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.cli",
            "check-config",
            env={"PATH": "/usr/bin:/bin", "TELECARE_STORE__URL": url},
            cwd=tempfile.gettempdir(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            said, _ = await proc.communicate()
        assert proc.returncode == 1 and "certificate verify failed" in said.decode()
    # verify-ca checks the CA but not the name: the same address is accepted (and not recommended).
    if how == "a name the certificate does not carry":
        async with open_store(tls_postgres.url("127.0.0.1", sslmode="verify-ca")):
            pass
