"""A simulated SIA DC-09 panel: sends Contact ID, SIA DCS and link-test frames over TCP or UDP,
encrypted or not, and resends each frame until the receiver ACKs it (as real panels do).

    async with Dc09Panel("127.0.0.1", port, account="1234") as panel:
        answer = await panel.send_contact_id(101)           # a pendant press, ACKed once stored
        answer = await panel.send_raw(frame_bytes)          # any frame (for refusal tests)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from devices.dc09 import (
    NEED_DATA,
    ContactId,
    Frame,
    FrameSplitter,
    Qualifier,
    Refused,
    Token,
    build_frame,
    contact_id_data,
    parse_frame,
    sia_dcs_data,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """The receiver's answer: its frame (or refusal) and the raw bytes."""

    frame: Frame | Refused
    raw: bytes

    @property
    def token(self) -> str | None:
        return self.frame.token.value if isinstance(self.frame, Frame) else self.frame.token


class Dc09Panel:
    """One panel on one TCP connection (opened on entry) or one UDP socket."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        account: str,
        key: bytes | None = None,
        transport: Literal["tcp", "udp"] = "tcp",
        line: str = "1",
        receiver: str | None = "1",
        resend_s: float = 2.0,
        clock_offset: timedelta = timedelta(0),
    ) -> None:
        self.host, self.port, self.account, self.key = host, port, account, key
        self.transport, self.line, self.receiver = transport, line, receiver
        self.resend_s = resend_s
        #: Added to the panel's clock (a panel whose clock is wrong sends stale timestamps).
        self.clock_offset = clock_offset
        self.sequence = 0
        self.sent_frames = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self._splitter = FrameSplitter()

    async def __aenter__(self) -> Self:
        if self.transport == "tcp":
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        else:
            loop = asyncio.get_running_loop()
            queue = self._datagrams

            class _Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    queue.put_nowait(data)

            self._udp, _ = await loop.create_datagram_endpoint(_Protocol, remote_addr=(self.host, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 9999 + 1
        return self.sequence

    def frame(self, token: Token, data: str = "", *, sequence: int | None = None) -> bytes:
        """A frame from this panel (encrypted when it has a key), with the next sequence number."""
        return build_frame(
            token=token,
            sequence=self.next_sequence() if sequence is None else sequence,
            account=self.account,
            line=self.line,
            receiver=self.receiver,
            data=data,
            timestamp=self.now(),
            key=self.key,
        )

    async def send_contact_id(
        self, code: int, *, qualifier: Qualifier = Qualifier.NEW, zone: str = "001", attempts: int = 5
    ) -> Answer:
        data = contact_id_data(self.account, ContactId(qualifier, code, "01", zone))
        return await self.send_raw(self.frame(Token.ADM_CID, data), attempts=attempts)

    async def send_sia(self, code: str, *, address: str = "001", attempts: int = 5) -> Answer:
        data = sia_dcs_data(self.account, code, address=address, area="1")
        return await self.send_raw(self.frame(Token.SIA_DCS, data), attempts=attempts)

    async def link_test(self, *, attempts: int = 5) -> Answer:
        return await self.send_raw(self.frame(Token.NULL), attempts=attempts)

    async def send_raw(self, frame: bytes, *, attempts: int = 5) -> Answer:
        """Send ``frame`` and resend it every ``resend_s`` until an ACK or a NAK comes back (a NAK is
        returned: the caller decides), at most ``attempts`` times; TimeoutError after that."""
        for _ in range(attempts):
            self._send(frame)
            try:
                async with asyncio.timeout(self.resend_s):
                    return await self._answer()
            except TimeoutError:
                continue
        raise TimeoutError(f"no answer to the frame after {attempts} attempts")

    def _send(self, frame: bytes) -> None:
        self.sent_frames += 1
        if self._writer is not None:
            self._writer.write(frame)
        elif self._udp is not None:
            self._udp.sendto(frame)
        else:
            raise RuntimeError("the panel is not connected")

    async def _answer(self) -> Answer:
        while True:
            if self._reader is not None:
                item = self._splitter.next_frame()
                if item is NEED_DATA:
                    data = await self._reader.read(4096)
                    if not data:
                        raise ConnectionError("the receiver closed the connection")
                    self._splitter.feed(data)
                    continue
                if isinstance(item, Refused):
                    continue
                assert isinstance(item, bytes)
                raw = item
            else:
                raw = await self._datagrams.get()
            keys = (lambda _a: self.key) if self.key is not None else (lambda _a: None)
            return Answer(parse_frame(raw, now=self.now(), keys=keys, window=None), raw)
