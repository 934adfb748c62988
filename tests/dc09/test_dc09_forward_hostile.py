"""The DC-09 forwarder against a hostile or broken upstream centre, on a real bridge over real TCP: garbage,
an endless line, silence (half-open), a connection closed at once, an ACK for another sequence or account,
an ACK in clear to an encrypted frame. None is taken as delivery, none stops the delivery loop, and once
the centre answers properly every forward is ACKed exactly as sent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from forward_support import forward_env
from harness import RunningBridge, eventually, make_config, running_bridge

from bridge.dc09_forwarding import DC09_FORWARDER
from devices.dc09 import Frame, FrameSplitter, NeedData, Token, build_ack, build_frame, parse_frame, parse_key
from devices.events import DeviceEvent
from devices.vocabulary import EventType

ACCOUNT = "BEEF"
KEY_TEXT = "00112233445566778899AABBCCDDEEFF"
KEY = parse_key(KEY_TEXT)


@dataclass
class HostileCentre:
    """A TCP centre whose answer to each frame is chosen by ``mode``."""

    mode: str = "ack"
    frames: list[Frame] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def _answer(self, frame: Frame) -> bytes | None:
        now = datetime.now(UTC)
        if self.mode == "ack":
            return build_ack(frame, now=now, key=KEY)
        if self.mode == "garbage":
            return b"\n\x00\xff" + uuid.uuid4().bytes * 8 + b"\r"
        if self.mode == "endless":
            return b"7" * 200_000  # never a CR
        if self.mode == "wrong_sequence":
            return build_frame(
                token=Token.ACK, sequence=frame.sequence % 9999 + 1, account=ACCOUNT, timestamp=now, key=KEY
            )
        if self.mode == "wrong_account":
            return build_frame(
                token=Token.ACK, sequence=frame.sequence, account="ABC", timestamp=now, key=KEY
            )
        if self.mode == "clear_ack":
            return build_frame(token=Token.ACK, sequence=frame.sequence, account=ACCOUNT)
        return None  # silent

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = FrameSplitter()
        try:
            while data := await reader.read(4096):
                splitter.feed(data)
                while not isinstance(raw := splitter.next_frame(), NeedData):
                    if not isinstance(raw, bytes):
                        continue
                    frame = parse_frame(raw, now=datetime.now(UTC), keys=lambda _a: KEY, window=None)
                    if not isinstance(frame, Frame):
                        continue
                    self.frames.append(frame)
                    if self.mode == "close":
                        return
                    answer = self._answer(frame)
                    if answer is not None:
                        writer.write(answer)
                        await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()


@pytest.fixture
async def centre() -> AsyncIterator[HostileCentre]:
    c = HostileCentre()
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def forwards(b: RunningBridge) -> list[dict[str, Any]]:
    async with b.store.read() as tx:
        rows = await tx.fetchall("SELECT * FROM dc09_forwards ORDER BY id")
    return [dict(r) for r in rows]


async def passes(b: RunningBridge, more: int) -> None:
    forwarder = b.bridge.app[DC09_FORWARDER]
    target = forwarder.passes + more

    async def done() -> bool:
        return forwarder.passes >= target

    await eventually(done, timeout=30)


MODES = ("garbage", "endless", "silent", "close", "wrong_sequence", "wrong_account", "clear_ack")


async def test_no_hostile_answer_is_taken_as_delivery_and_the_loop_delivers_after(
    tmp_path: Path, centre: HostileCentre
) -> None:
    path = {
        "url": f"tcp://127.0.0.1:{centre.port}",
        "account": ACCOUNT,
        "key": KEY_TEXT,
        "ack_timeout_s": 0.3,
        "link_test_s": 3600,
    }
    config = make_config(tmp_path, **forward_env(path))
    async with running_bridge(config) as b:
        for n, mode in enumerate(MODES):
            centre.mode = mode
            seen = len(centre.frames)
            result = await b.bridge.intake.submit(
                DeviceEvent(
                    device_id=f"unit-{mode}",
                    event_id=uuid.uuid4().hex[:16],
                    type=EventType.PENDANT,
                    received_at=datetime.now(UTC),
                )
            )
            assert result.result == "accepted"

            async def tried(seen: int = seen) -> bool:
                return len(centre.frames) >= seen + 2  # the frame and its resend

            await eventually(tried, timeout=30)
            await passes(b, 1)
            rows = await forwards(b)
            assert len(rows) == n + 1
            assert all(r["result"] != "ack" for r in rows), (mode, rows)
        sent = {f.sequence for f in centre.frames if f.token is not Token.NULL}
        # The centre comes to its senses: every forward is delivered, each with the sequence it had.
        centre.mode = "ack"

        async def all_acked() -> bool:
            rows = await forwards(b)
            return len(rows) == len(MODES) and all(r["result"] == "ack" for r in rows)

        await eventually(all_acked, timeout=60)
        assert {r["sequence"] for r in await forwards(b)} == sent
        status, health = await b.call("GET", "/healthz", user=None)
        assert status == 200, health
