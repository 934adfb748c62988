"""A simulated SIA DC-09 panel: sends Contact ID, SIA DCS and link-test frames over TCP or UDP,
encrypted or not, and resends each frame until the receiver ACKs it (as real panels do).

    async with Dc09Panel("127.0.0.1", port, account="1234") as panel:
        answer = await panel.send_contact_id(101)           # a pendant press, ACKed once stored
        answer = await panel.send_raw(frame_bytes)          # any frame (for refusal tests)
"""

from __future__ import annotations

import asyncio
import re
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
        #: TCP connections opened (more than one: the receiver went away and the panel reconnected).
        self.connections = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self._splitter = FrameSplitter()

    async def __aenter__(self) -> Self:
        if self.transport == "tcp":
            await self._connect()
        else:
            loop = asyncio.get_running_loop()
            queue = self._datagrams

            class _Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    queue.put_nowait(data)

            self._udp, _ = await loop.create_datagram_endpoint(_Protocol, remote_addr=(self.host, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._disconnect()
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
        """Send ``frame`` and resend the same bytes every ``resend_s`` until the receiver answers it (an
        ACK or DUH with its sequence number, or a NAK: returned, the caller decides), at most
        ``attempts`` times; TimeoutError after that. Over TCP a lost or refused connection (the receiver
        restarting) is opened again for the next attempt, as real panels do."""
        loop = asyncio.get_running_loop()
        sequence = sequence_of(frame)
        for _ in range(attempts):
            attempt_ends = loop.time() + self.resend_s
            try:
                async with asyncio.timeout_at(attempt_ends):
                    await self._connect()
                    self._send(frame)
                    return await self._answer(sequence)
            except TimeoutError:
                continue
            except (ConnectionError, OSError):
                self._disconnect()
                # The connection is gone: the next attempt comes at the panel's resend interval.
                await asyncio.sleep(max(0.0, attempt_ends - loop.time()))
        raise TimeoutError(f"no answer to the frame after {attempts} attempts")

    async def _connect(self) -> None:
        """(Re)open the TCP connection when it was lost; nothing for UDP."""
        if self.transport != "tcp" or self._writer is not None:
            return
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._splitter = FrameSplitter()
        self.connections += 1

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def _send(self, frame: bytes) -> None:
        self.sent_frames += 1
        if self._writer is not None:
            self._writer.write(frame)
        elif self._udp is not None:
            self._udp.sendto(frame)
        else:
            raise RuntimeError("the panel is not connected")

    async def _answer(self, sequence: int | None = None) -> Answer:
        """The next answer; with ``sequence``, the next NAK or the next ACK/DUH echoing it (a late answer
        to an earlier frame is passed over)."""
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
            answer = Answer(parse_frame(raw, now=self.now(), keys=keys, window=None), raw)
            if sequence is None or not _passed_over(answer, sequence):
                return answer


_SEQUENCE_RE = re.compile(rb'"\*?[A-Z-]{3,8}"([0-9]{4})')


def sequence_of(frame: bytes) -> int | None:
    """The sequence number in a frame's clear header (None when the bytes have none)."""
    found = _SEQUENCE_RE.search(frame)
    return int(found[1]) if found else None


def _passed_over(answer: Answer, sequence: int) -> bool:
    """An ACK or DUH to another frame (a NAK names no sequence; an unreadable answer is returned)."""
    frame = answer.frame
    return isinstance(frame, Frame) and frame.token is not Token.NAK and frame.sequence != sequence
