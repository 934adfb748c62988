"""A simulated telecare unit on a pty, speaking the serial frame protocol (devices/serial_frame.py).

The unit holds the pty's master side; the bridge opens :attr:`PtyPort.path` (or a stable symlink given
as ``link``) like any serial device. :meth:`SimulatedSerialUnit.raise_event` retransmits a frame until
the bridge ACKs or NAKs it; CMD frames are answered with a ``cmd_result`` event. :meth:`unplug` and
:meth:`plug` make the port vanish and come back (at the same symlink), like a USB lead.

Run ``python -m simulators.serial_unit --device-id unit-1 --link /tmp/telecare-unit`` for a demo unit
that presses its pendant every ``--every`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import time
import tty
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Self

from devices.cancellation import stop
from devices.serial_frame import (
    AckFrame,
    CommandFrame,
    EventFrame,
    FrameDecoder,
    Malformed,
    NakFrame,
    NeedData,
    encode_event,
)


class PtyPort:
    """The master side of a pty pair, with non-blocking async read and write (no busy waiting)."""

    def __init__(self, *, link: str | None = None) -> None:
        self.link = link
        self.master = -1
        self._slave = -1
        self.path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def is_open(self) -> bool:
        return self.master >= 0

    def open(self) -> str:
        """Create the pty pair; returns the path the bridge should open (the symlink if any)."""
        self._loop = asyncio.get_running_loop()
        self.master, self._slave = os.openpty()
        # Raw from the start, so nothing written before the bridge configures the port is echoed.
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)
        return self.link or self.path

    def close(self) -> None:
        """Close both sides: the bridge's port reads fail (EIO), as on a USB unplug."""
        if self.master >= 0 and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.master)
                self._loop.remove_writer(self.master)
        for fd in (self.master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = -1
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self, add: Callable[..., Any], remove: Callable[[int], bool]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fd = self.master

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(fd, ready)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if self.master == fd:
                remove(fd)

    async def read(self) -> bytes:
        """Bytes from the bridge; b"" once closed."""
        assert self._loop is not None
        while self.master >= 0:
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                await self._wait(self._loop.add_reader, self._loop.remove_reader)
                continue
            except OSError:
                return b""
            return data
        return b""

    async def write(self, data: bytes) -> None:
        assert self._loop is not None
        view = memoryview(data)
        while view and self.master >= 0:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                n = 0
            except OSError:
                return
            view = view[n:]
            if view:
                await self._wait(self._loop.add_writer, self._loop.remove_writer)


class SimulatedSerialUnit:
    """A unit on a pty; an async context manager."""

    def __init__(
        self,
        device_id: str,
        *,
        link: str | None = None,
        retry_interval: float = 1.0,
        answer_commands: bool = True,
    ) -> None:
        self.device_id = device_id
        self.port = PtyPort(link=link)
        self.retry_interval = retry_interval
        self.answer_commands = answer_commands
        self.path = ""
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[AckFrame | NakFrame]] = {}
        self._garbled = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.acks: list[AckFrame] = []
        self.naks: list[NakFrame] = []
        self.commands: list[CommandFrame] = []
        self.malformed: list[Malformed] = []
        self.frames_sent = 0

    async def __aenter__(self) -> Self:
        self.plug()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unplug()
        await stop(*self._tasks)

    def plug(self) -> str:
        """(Re)create the port; the symlink, if any, now points at the new pty."""
        self.path = self.port.open()
        self._reader = asyncio.create_task(self._read_loop(), name=f"unit-reader:{self.device_id}")
        self._tasks.add(self._reader)
        self._reader.add_done_callback(self._tasks.discard)
        return self.path

    def unplug(self) -> None:
        self.port.close()
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    def pause_reading(self) -> None:
        """Stop reading the line (a unit busy or held off by flow control): the bridge's writes back up."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    def resume_reading(self) -> None:
        if self._reader is None and self.port.is_open:
            self._reader = asyncio.create_task(self._read_loop(), name=f"unit-reader:{self.device_id}")
            self._tasks.add(self._reader)
            self._reader.add_done_callback(self._tasks.discard)

    async def send_raw(self, data: bytes) -> None:
        await self.port.write(data)

    def next_event_id(self) -> str:
        return f"{self.device_id}-{int(time.time())}-{next(self._ids)}"

    async def raise_event(
        self,
        event_type: str,
        *,
        event_id: str | None = None,
        test: bool = False,
        data: dict[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> AckFrame | NakFrame:
        """Send one event and retransmit it until the bridge answers it by event id."""
        event_id = event_id or self.next_event_id()
        frame = encode_event(
            self.device_id, event_id, event_type, ts=ts or datetime.now(UTC), test=test, data=data
        )
        fut: asyncio.Future[AckFrame | NakFrame] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = fut
        try:
            while True:
                self._garbled.clear()
                if self.port.is_open:
                    await self.port.write(frame)
                    self.frames_sent += 1
                garbled: asyncio.Future[Any] = asyncio.ensure_future(self._garbled.wait())
                try:
                    await asyncio.wait(
                        {fut, garbled}, timeout=self.retry_interval, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    garbled.cancel()
                if fut.done():
                    return fut.result()
        finally:
            self._waiting.pop(event_id, None)

    async def _read_loop(self) -> None:
        decoder = FrameDecoder()
        while True:
            data = await self.port.read()
            if not data:
                return
            decoder.feed(data)
            while not isinstance(out := decoder.next_frame(), NeedData):
                if isinstance(out, AckFrame):
                    self.acks.append(out)
                    self._answer(out.event_id, out)
                elif isinstance(out, NakFrame):
                    self.naks.append(out)
                    if out.event_id is None:
                        self._garbled.set()  # line garbled: resend now
                    else:
                        self._answer(out.event_id, out)
                elif isinstance(out, CommandFrame):
                    self.commands.append(out)
                    if self.answer_commands and out.device_id == self.device_id:
                        task = asyncio.create_task(
                            self.raise_event(
                                "cmd_result", data={"cmd_id": out.cmd_id, "cmd": out.cmd, "result": "ok"}
                            )
                        )
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                elif isinstance(out, Malformed):
                    self.malformed.append(out)
                elif isinstance(out, EventFrame):
                    pass  # another unit's frame echoed back; not for us

    def _answer(self, event_id: str, frame: AckFrame | NakFrame) -> None:
        fut = self._waiting.get(event_id)
        if fut is not None and not fut.done():
            fut.set_result(frame)


async def _demo(args: argparse.Namespace) -> None:
    async with SimulatedSerialUnit(args.device_id, link=args.link) as unit:
        print(f"unit {args.device_id} on {unit.path}", flush=True)
        while True:
            await asyncio.sleep(args.every)
            answer = await unit.raise_event(args.type, test=args.test)
            print(answer, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device-id", default="serial-unit-1")
    parser.add_argument("--link", help="stable symlink to the pty (what the bridge opens)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between events")
    parser.add_argument("--type", default="pendant")
    parser.add_argument("--test", action="store_true")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(parser.parse_args()))


if __name__ == "__main__":
    main()
