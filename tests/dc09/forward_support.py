"""Peers for the forwarding tests: pysiaalarm as the real upstream centre, and a scripted TCP centre that
answers what the test tells it (NAK with a time, DUH, silence), which pysiaalarm cannot be made to do.

(No tests here.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from harness import free_port
from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.event import SIAEvent
from pysiaalarm.utils import CommunicationsProtocol

from devices.dc09 import Frame, FrameSplitter, NeedData, build_ack, build_duh, build_nak, parse_frame


class PysiaCentre:
    """pysiaalarm's asyncio receiver on a loopback port: every event it ACKs is kept in ``events``.

    Started and stopped explicitly: ``SIAClient.__aexit__`` returns True, which would swallow a failed
    assertion inside an ``async with``."""

    def __init__(
        self, accounts: dict[str, str | None], *, udp: bool = False, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.events: list[SIAEvent] = []
        protocol = CommunicationsProtocol.UDP if udp else CommunicationsProtocol.TCP
        self._client = SIAClient(
            "127.0.0.1",
            self.port,
            [SIAAccount(account, key) for account, key in accounts.items()],
            self._heard,
            protocol=protocol,
        )
        self.url = f"{'udp' if udp else 'tcp'}://127.0.0.1:{self.port}"
        self._udp = udp
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _heard(self, event: SIAEvent) -> None:
        self.events.append(event)

    def messages(self) -> list[SIAEvent]:
        """The events that are not link tests."""
        return [e for e in self.events if e.message_type is not None and e.message_type.value != "NULL"]

    async def start(self) -> None:
        if self._udp:
            await self._client.async_start()
            return
        # pysiaalarm's own TCP handler (``handle_line``) behind a server whose connections ``stop`` can
        # close: SIAClientTCP.async_stop stops listening but leaves open connections answering.
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._client.sia_server.handle_line(reader, writer)
        finally:
            self._writers.discard(writer)

    async def stop(self) -> None:
        """Stop listening and drop every connection (a centre that went away)."""
        if self._udp:
            await self._client.async_stop()
            return
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()


@dataclass
class ScriptedCentre:
    """A TCP centre that parses each frame with our codec and answers with ``script`` (``ack``, ``duh``,
    ``nak`` with its clock ``offset`` ahead of ours, ``silent``; the last entry repeats; link tests are
    always ACKed). ``frames`` holds every message frame received, in order."""

    script: list[str]
    key: bytes | None = None
    offset: timedelta = timedelta(0)
    clock: Callable[[], float] | None = None
    frames: list[Frame] = field(default_factory=list)
    port: int = 0
    udp: bool = False
    _server: asyncio.Server | None = None
    _udp: asyncio.DatagramTransport | None = None
    _answered: int = 0

    @property
    def url(self) -> str:
        return f"{'udp' if self.udp else 'tcp'}://127.0.0.1:{self.port}"

    def _now(self) -> datetime:
        base = datetime.now(UTC) if self.clock is None else datetime.fromtimestamp(self.clock(), UTC)
        return (base + self.offset).replace(microsecond=0)

    async def start(self) -> None:
        if self.udp:
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=("127.0.0.1", self.port)
            )
            self.port = self._udp.get_extra_info("sockname")[1]
            return
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def datagram(self, data: bytes, addr: Any) -> None:
        """One frame over UDP: answered to its sender."""
        key = self.key
        frame = parse_frame(data, now=self._now(), keys=lambda _a: key, window=None)
        assert isinstance(frame, Frame), frame
        answer = self._answer(frame)
        if answer is not None and self._udp is not None:
            self._udp.sendto(answer, addr)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = FrameSplitter()
        key = self.key
        try:
            while data := await reader.read(4096):
                splitter.feed(data)
                while isinstance(raw := splitter.next_frame(), bytes):
                    frame = parse_frame(raw, now=self._now(), keys=lambda _a: key, window=None)
                    assert isinstance(frame, Frame), frame
                    answer = self._answer(frame)
                    if answer is not None:
                        writer.write(answer)
                        await writer.drain()
                assert isinstance(splitter.next_frame(), NeedData)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, frame: Frame) -> bytes | None:
        now = self._now()
        if frame.token.value == "NULL":
            return build_ack(frame, now=now, key=self.key)
        self.frames.append(frame)
        step = self.script[min(self._answered, len(self.script) - 1)]
        self._answered += 1
        if step == "ack":
            return build_ack(frame, now=now, key=self.key)
        if step == "duh":
            return build_duh(frame, now=now, key=self.key)
        if step == "nak":
            return build_nak(now=now)
        return None  # silent


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, centre: ScriptedCentre) -> None:
        self._centre = centre

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._centre.datagram(data, addr)


def forward_env(*paths: dict[str, Any], poll_s: float = 0.05) -> dict[str, str]:
    """The environment that configures ``dc09.forward`` with ``paths``."""
    return {"TELECARE_DC09__FORWARD": json.dumps(list(paths)), "TELECARE_DC09__FORWARD_POLL_S": str(poll_s)}
