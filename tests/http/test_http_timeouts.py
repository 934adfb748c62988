"""Idle and trickling HTTP connections are closed after the configured timeouts (raw sockets, real server).

The clients below pace their trickle by waiting for the server (a read with a short timeout), and every
wait for the close has a generous bound; the configured timeouts are small so the tests are quick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import RunningBridge, make_config, running_bridge

IDLE_S = 1.0
BODY_S = 1.0
#: Far above the configured timeouts and far below the 150 s seen before the fix.
GENEROUS_S = 20.0


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    config = make_config(
        tmp_path, TELECARE_HTTP__IDLE_TIMEOUT_S=str(IDLE_S), TELECARE_HTTP__BODY_TIMEOUT_S=str(BODY_S)
    )
    async with running_bridge(config) as running:
        yield running


async def connect(bridge: RunningBridge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", bridge.bridge.http_port)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(GENEROUS_S):
        return await reader.read()


async def trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time, pacing each byte by a short wait for the server to answer.

    Returns what the server sent once it closed, and how long the trickle had gone on.
    """
    started = time.monotonic()
    async with asyncio.timeout(GENEROUS_S):
        for byte in data:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                return b"", time.monotonic() - started
            try:
                async with asyncio.timeout(0.1):
                    answer = await reader.read()
            except TimeoutError:
                continue
            return answer, time.monotonic() - started
    raise AssertionError("the whole trickle was accepted")


async def test_silent_connections_are_closed(bridge: RunningBridge) -> None:
    connections = [await connect(bridge) for _ in range(10)]
    started = time.monotonic()
    for reader, writer in connections:
        assert await closed_by_server(reader) == b""
        writer.close()
    assert time.monotonic() - started < GENEROUS_S


async def test_a_kept_alive_connection_is_closed_when_idle(bridge: RunningBridge) -> None:
    reader, writer = await connect(bridge)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 ")
    rest = await closed_by_server(reader)  # the rest of the answer, then the close when idle
    assert b"ready" in rest
    writer.close()


async def test_trickled_headers_are_cut_off(bridge: RunningBridge) -> None:
    reader, writer = await connect(bridge)
    endless = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Slow: " + b"a" * 100_000
    answer, took = await trickle(reader, writer, endless)
    assert b"ready" not in answer  # the request never reached a handler
    assert took < GENEROUS_S
    writer.close()


async def test_a_trickled_body_is_answered_408_and_closed(bridge: RunningBridge) -> None:
    reader, writer = await connect(bridge)
    body = b"name=olive&password=" + b"p" * 2000
    head = (
        b"POST /login HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    writer.write(head)
    await writer.drain()
    answer, took = await trickle(reader, writer, body)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"request timeout"' in answer
    assert took < GENEROUS_S
    writer.close()
