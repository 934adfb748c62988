"""The link to one upstream monitoring centre's DC-09 receiver: send a frame, wait for one answer.

TCP keeps one connection open between exchanges (centres and pysiaalarm take many frames per
connection) and opens a new one when it was closed; after a timeout the connection is dropped, so a
late answer can never be read as the answer to the next frame. UDP sends one datagram per frame from
a socket of its own and takes the first datagram back. Exchanges on one link never overlap.

A frame that gets no answer raises TimeoutError; a refused, reset or closed connection raises
ConnectionError or OSError. What the answer means is :mod:`devices.dc09_forward`'s business.
"""

from __future__ import annotations

import asyncio
from typing import Any

from devices.dc09 import FrameSplitter, NeedData, Refused
from devices.dc09_forward import UpstreamUrl


class UpstreamLink:
    """One path's socket. ``ack_timeout_s`` bounds each exchange, connecting included."""

    def __init__(self, url: UpstreamUrl, ack_timeout_s: float) -> None:
        self.url = url
        self._timeout = ack_timeout_s
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._splitter = FrameSplitter()

    async def exchange(self, frame: bytes) -> bytes:
        """Send ``frame`` and return the answer's bytes (one frame)."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    if self.url.scheme == "udp":
                        return await self._udp(frame)
                    return await self._tcp(frame)
            except BaseException:
                self.close()
                raise

    async def _tcp(self, frame: bytes) -> bytes:
        reused = self._writer is not None
        try:
            return await self._tcp_once(frame)
        except (ConnectionError, OSError):
            if not reused:
                raise
            self.close()  # the centre closed an idle connection: one fresh try
            return await self._tcp_once(frame)

    async def _tcp_once(self, frame: bytes) -> bytes:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.url.host, self.url.port)
            self._splitter = FrameSplitter()
        self._writer.write(frame)
        await self._writer.drain()
        while True:
            item = self._splitter.next_frame()
            if isinstance(item, bytes):
                return item
            if isinstance(item, Refused):
                raise ConnectionError(f"unreadable answer: {item.detail}")
            assert isinstance(item, NeedData)
            data = await self._reader.read(4096)
            if not data:
                raise ConnectionError("the centre closed the connection")
            self._splitter.feed(data)

    async def _udp(self, frame: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OneAnswer(answer), remote_addr=(self.url.host, self.url.port)
        )
        try:
            transport.sendto(frame)
            return await answer
        finally:
            transport.close()

    def close(self) -> None:
        """Drop the connection (the next exchange opens a new one)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self, answer: asyncio.Future[bytes]) -> None:
        self._answer = answer

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self._answer.done():
            self._answer.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: refused
        if not self._answer.done():
            self._answer.set_exception(ConnectionRefusedError(str(exc)))
