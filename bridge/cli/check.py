"""``telecare-bridge check-config``: validate the configuration, then reach what it names.

It checks what a start needs: the store (a SQLite file is opened read-only, or would be created in a
writable directory; PostgreSQL is connected to) and the broker (``mqtt.url`` is connected to; the
embedded broker is only reported, it is started by ``run``), each within ``--timeout`` seconds. One line
per check; exit status 1 when any check fails, 2 when the configuration itself is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.cli.common import EXIT_FAILED, config_path, describe_store, load
from bridge.config import Config
from bridge.redaction import redact


@dataclass(frozen=True, slots=True)
class Check:
    """One thing ``check-config`` tried, and what it found."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<7} {self.detail}"


async def check_store(url: str, timeout: float) -> Check:
    """Reach the store without changing it."""
    from alarm_centre.store import sqlite_path

    where = describe_store(url)
    path = sqlite_path(url)
    try:
        async with asyncio.timeout(timeout):
            if path is None:
                detail = await _postgres(url, timeout)
            else:
                detail = await asyncio.to_thread(_sqlite, path, timeout)
    except TimeoutError:
        return Check("store", False, f"{where}: no answer within {timeout:g}s")
    except Exception as exc:  # every failure to reach the store is the answer, named
        return Check("store", False, f"{where}: {_reason(exc)}")
    return Check("store", True, f"{where}: {detail}")


def _sqlite(file: str, timeout: float) -> str:
    path = Path(file).absolute()
    if not path.exists():
        parent = next(p for p in path.parents if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"does not exist, and {parent} is not writable to create it")
        return "does not exist yet; the first start creates it"
    for needed in (path, path.parent):
        if not os.access(needed, os.R_OK | os.W_OK):
            raise PermissionError(f"{needed} is not readable and writable by this user")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout)
    try:
        version = _schema_version(conn)
    finally:
        conn.close()
    return f"opened (schema version {version})" if version else "opened (empty: the first start fills it)"


def _schema_version(conn: sqlite3.Connection) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise ValueError(f"not a telecare store (tables: {', '.join(sorted(tables)[:5])})")
        return 0
    return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)


async def _postgres(url: str, timeout: float) -> str:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        server = await conn.fetchval("SHOW server_version")
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        version = await conn.fetchval("SELECT MAX(version) FROM schema_version") if exists else 0
    finally:
        await conn.close()
    schema = f"schema version {version}" if version else "no schema yet: the first start creates it"
    return f"connected (PostgreSQL {server}, {schema})"


async def check_broker(config: Config, timeout: float) -> Check:
    """Connect to ``mqtt.url`` (with its user, password and TLS); the embedded broker is only reported."""
    import aiomqtt

    from bridge.transports.mqtt import BrokerAddress

    if not config.mqtt.url:
        port = config.mqtt.embedded_port
        note = "" if port == 0 or _port_free(port) else " (the port is in use now: by a running bridge?)"
        return Check("broker", True, f"embedded: run starts it on 127.0.0.1:{port}{note}")
    where = redact(config.mqtt.url)
    address = BrokerAddress.from_url(config.mqtt.url)
    try:
        async with (
            asyncio.timeout(timeout),
            aiomqtt.Client(
                address.host,
                address.port,
                identifier=f"telecare-check-{os.getpid()}",
                username=address.username,
                password=address.password,
                tls_params=aiomqtt.TLSParameters() if address.tls else None,
                timeout=timeout,
            ),
        ):
            pass
    except TimeoutError:
        return Check("broker", False, f"{where}: no answer within {timeout:g}s")
    except Exception as exc:  # refused, unknown host, bad credentials, TLS: each is the answer
        return Check("broker", False, f"{where}: {_reason(exc)}")
    return Check("broker", True, f"{where}: connected")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reason(exc: BaseException) -> str:
    text = str(redact(str(exc))) or type(exc).__name__
    return text.splitlines()[0][:300]


def cmd_check_config(args: argparse.Namespace) -> None:
    config = load(args)
    print(f"configuration valid ({config_path(args.config) or 'built-in defaults'}); secrets shown as ***")
    print(json.dumps(redact(config.model_dump(mode="json")), indent=2))

    async def reach() -> list[Check]:
        store = check_store(config.store.url, args.timeout)
        return list(await asyncio.gather(store, check_broker(config, args.timeout)))

    checks = asyncio.run(reach())
    for check in checks:
        print(check.line(), flush=True)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"telecare-bridge: check-config: cannot reach the {' and the '.join(failed)}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED)
    print("configuration OK")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``check-config`` to the top-level subcommands."""
    p = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration, print it (secrets hidden), reach the store and the broker",
        description="Validate the configuration and print it with secrets shown as ***, then reach the "
        "store and the broker it names, each within --timeout. Exit status: 0 all good, 1 a check "
        "failed, 2 the configuration is wrong.",
    )
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per check (default 5)")
    p.set_defaults(func=cmd_check_config)
