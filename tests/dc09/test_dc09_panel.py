"""The simulated panel resends as real panels do: the same frame until its own answer, over a new TCP
connection when the receiver went away, and gives up after a bounded number of tries. Real sockets on
loopback; the receivers here are small scripted servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from devices.dc09 import NEED_DATA, Frame, FrameSplitter, Token, build_ack, parse_frame
from simulators.dc09_panel import Dc09Panel, sequence_of

Script = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_receiver(script: Script) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that hands every frame it reads, with the connection's number, to ``script``."""
    frames: list[bytes] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        splitter = FrameSplitter()
        try:
            while data := await reader.read(4096):
                splitter.feed(data)
                while (item := splitter.next_frame()) is not NEED_DATA:
                    assert isinstance(item, bytes)
                    frames.append(item)
                    await script(number, item, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], frames


def ack_for(raw: bytes, *, sequence: int | None = None) -> bytes:
    now = datetime.now(UTC)
    frame = parse_frame(raw, now=now, window=None)
    assert isinstance(frame, Frame)
    if sequence is not None:
        frame = Frame(frame.token, frame.encrypted, sequence, frame.receiver, frame.line, frame.account, "")
    return build_ack(frame, now=now)


async def test_a_late_answer_to_another_frame_is_passed_over() -> None:
    async def stale_then_right(_n: int, raw: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(ack_for(raw, sequence=9) + ack_for(raw))

    async with (
        scripted_receiver(stale_then_right) as (port, frames),
        Dc09Panel("127.0.0.1", port, account="1234") as panel,
    ):
        answer = await panel.send_contact_id(101)
    assert isinstance(answer.frame, Frame) and answer.frame.token is Token.ACK
    assert answer.frame.sequence == 1 and len(frames) == 1


async def test_the_same_frame_is_resent_on_a_new_connection_after_the_receiver_went_away() -> None:
    async def drop_first_connection(n: int, raw: bytes, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            writer.transport.abort()  # the receiver died before answering
        else:
            writer.write(ack_for(raw))

    async with (
        scripted_receiver(drop_first_connection) as (port, frames),
        Dc09Panel("127.0.0.1", port, account="1234", resend_s=0.5) as panel,
    ):
        answer = await panel.send_contact_id(101, attempts=4)
    assert answer.token == "ACK" and panel.connections == 2
    assert len(frames) == 2 and frames[0] == frames[1], "the same bytes, the same sequence"
    assert sequence_of(frames[0]) == 1


async def test_a_panel_gives_up_after_its_attempts() -> None:
    async def never_answer(_n: int, _raw: bytes, _writer: asyncio.StreamWriter) -> None:
        return None

    async with (
        scripted_receiver(never_answer) as (port, frames),
        Dc09Panel("127.0.0.1", port, account="1234", resend_s=0.2) as panel,
    ):
        with pytest.raises(TimeoutError, match="3 attempts"):
            await panel.link_test(attempts=3)
    assert panel.sent_frames == 3 and len(set(frames)) == 1


@pytest.mark.parametrize(("raw", "expected"), [(b'\n1234005A"ADM-CID"0042L0#1234[]', 42), (b"junk", None)])
def test_sequence_of_reads_the_clear_header(raw: bytes, expected: int | None) -> None:
    assert sequence_of(raw) == expected
