"""Directly attached telecare units on a serial line (RS-232, USB serial, a pty).

I/O choice: pyserial opens and configures the port (baud, flow control, exclusive lock); after that we
drive its file descriptor ourselves with ``loop.add_reader``/``loop.add_writer`` (see
:class:`SerialLink`). We do not use pyserial-asyncio-fast because 0.16 spins at 100 % CPU after a
write that only partly completes (its PR #36): our writer registers for writability only while bytes
are left over and removes the registration as soon as it fires, so a partial write waits, never spins.

:class:`SerialTransport` decodes frames with :mod:`devices.serial_frame`, hands events to an
:class:`~alarm_centre.alerts.intake.Intake`, and answers ACK only after ``submit`` returns accepted or
duplicate, NAK (with the reason) for bad frames and rejected events, and nothing at all when the store
is unavailable (the unit retries). When the port vanishes (USB unplug) it reopens it with jittered
exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import time
from collections.abc import Callable
from typing import Any, Self

import serial

from alarm_centre.alerts.intake import Intake, StoreUnavailable
from alarm_centre.faults import Backoff
from devices.cancellation import stop
from devices.serial_frame import (
    AckFrame,
    CommandFrame,
    EventFrame,
    FrameDecoder,
    Malformed,
    NakFrame,
    NeedData,
    encode_ack,
    encode_command,
    encode_nak,
)

log = logging.getLogger(__name__)


class LinkLost(ConnectionError):
    """The port went away (unplugged, hung up, closed)."""


class LinkDown(ConnectionError):
    """There is no open port to write to right now."""


class SerialLink:
    """One open serial port driven through its file descriptor. Not an asyncio transport: two
    coroutines, :meth:`read` and :meth:`write`, with writes serialised by a lock."""

    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port
        self._fd: int = port.fileno()
        os.set_blocking(self._fd, False)
        if os.isatty(self._fd):
            # pyserial leaves VMIN=0/VTIME=0, where read() returns b"" when no data is waiting; with
            # VMIN=1 an empty line gives EAGAIN, and b"" can only mean a hang-up.
            attrs = termios.tcgetattr(self._fd)
            attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        self._loop = asyncio.get_running_loop()
        self._write_lock = asyncio.Lock()
        self._waiters: set[asyncio.Future[None]] = set()
        self.closed = False
        self.write_timeout = 5.0

    @classmethod
    def open(
        cls,
        url: str,
        *,
        baudrate: int = 9600,
        rtscts: bool = False,
        xonxoff: bool = False,
        exclusive: bool = True,
    ) -> SerialLink:
        """Open a device path (``/dev/ttyUSB0``, a pty) or a pyserial URL with a file descriptor
        (``socket://host:port``). Raises OSError / serial.SerialException when it cannot."""
        port = serial.serial_for_url(
            url,
            do_not_open=True,
            baudrate=baudrate,
            rtscts=rtscts,
            xonxoff=xonxoff,
            timeout=0,
            write_timeout=0,
        )
        if exclusive and hasattr(port, "exclusive"):
            port.exclusive = True
        port.open()
        try:
            return cls(port)
        except Exception:
            port.close()
            raise

    async def _wait(self, add: Callable[..., Any], remove: Callable[[int], bool]) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(self._fd, ready)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if not self.closed:
                remove(self._fd)

    async def read(self) -> bytes:
        """The next bytes from the line; LinkLost when the port is gone."""
        while True:
            if self.closed:
                raise LinkLost("port closed")
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                await self._wait(self._loop.add_reader, self._loop.remove_reader)
                continue
            except OSError as exc:  # EIO after a pty hang-up or a USB unplug
                raise LinkLost(f"read failed: {exc}") from exc
            if not data:
                raise LinkLost("end of file (hang-up)")
            return data

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; waits for writability on partial writes (no spinning). Raises
        TimeoutError after ``write_timeout`` seconds (flow control holding us off)."""
        async with self._write_lock, asyncio.timeout(self.write_timeout):
            view = memoryview(data)
            while view:
                if self.closed:
                    raise LinkLost("port closed")
                try:
                    n = os.write(self._fd, view)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    raise LinkLost(f"write failed: {exc}") from exc
                view = view[n:]
                if view:
                    await self._wait(self._loop.add_writer, self._loop.remove_writer)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        except (OSError, RuntimeError, ValueError) as exc:  # the loop is closed, or the fd already gone
            log.debug("serial: unwatching the closed link: %r", exc)
        try:
            self._port.close()
        except OSError as exc:  # pyserial's SerialException is an OSError
            log.warning("serial: closing the port failed: %s", exc)
        for fut in self._waiters:  # wake readers and writers so they see the link is closed
            if not fut.done():
                fut.set_result(None)


class SerialTransport:
    """A serial line carrying the unit protocol; an async context manager, reusable, not reentrant.

    ``on_outcome`` is called with ``accepted``, ``duplicate``, ``rejected``, ``malformed`` or
    ``store_unavailable`` per frame; ``on_link`` with True/False as the port opens and goes away;
    ``on_ack_latency`` with the seconds from a frame's last byte to its ACK written.
    """

    def __init__(
        self,
        port: str,
        *,
        intake: Intake,
        baudrate: int = 9600,
        rtscts: bool = False,
        xonxoff: bool = False,
        reopen_initial: float = 0.2,
        reopen_max: float = 10.0,
        max_in_flight: int = 64,
        on_outcome: Callable[[str], None] | None = None,
        on_link: Callable[[bool], None] | None = None,
        on_ack_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.port = port
        self._intake = intake
        self._settings = {"baudrate": baudrate, "rtscts": rtscts, "xonxoff": xonxoff}
        self._backoff = Backoff(reopen_initial, reopen_max)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._on_outcome = on_outcome
        self._on_link = on_link
        self._on_ack_latency = on_ack_latency
        self._link: SerialLink | None = None
        self._runner: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        #: Device ids seen on this line (so the router knows where to send their commands).
        self.devices: set[str] = set()
        self.counts: dict[str, int] = {}
        self.opens = 0
        self.last_error: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("SerialTransport is not reentrant")
        self._runner = asyncio.create_task(self._run(), name=f"serial:{self.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        runner, self._runner = self._runner, None
        await stop(runner)
        await stop(*self._handlers)
        self._drop_link()

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    async def wait_connected(self) -> None:
        """Wait until the port is open (wrap in ``asyncio.timeout``)."""
        await self._connected.wait()

    def serves(self, device_id: str) -> bool:
        return device_id in self.devices

    async def send_command(self, device_id: str, cmd_id: str, cmd: str, args: dict[str, Any] | None) -> None:
        """Write a CMD frame. Raises LinkDown when the port is not open; the unit answers with a
        ``cmd_result`` event that arrives through the intake like any other event."""
        frame = encode_command(device_id, cmd_id, cmd, args)
        link = self._link
        if link is None or link.closed:
            raise LinkDown(f"serial port {self.port} is not open")
        await link.write(frame)

    # --- the port ----------------------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _drop_link(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
            self._connected.clear()
            if self._on_link is not None:
                self._on_link(False)

    async def _run(self) -> None:
        while True:
            try:
                link = SerialLink.open(self.port, **self._settings)  # type: ignore[arg-type]
            except (OSError, serial.SerialException, ValueError) as exc:
                self.last_error = str(exc)
                delay = self._backoff.next_delay()
                log.warning("serial port %s cannot be opened (%s); retrying in %.1fs", self.port, exc, delay)
                await asyncio.sleep(delay)
                continue
            self._link = link
            self.opens += 1
            self._backoff.reset()
            self._connected.set()
            if self._on_link is not None:
                self._on_link(True)
            log.info("serial port %s open", self.port)
            try:
                await self._serve(link)
            except LinkLost as exc:
                self.last_error = str(exc)
                log.warning("serial port %s lost: %s", self.port, exc)
            finally:
                self._drop_link()
            await asyncio.sleep(self._backoff.next_delay())

    async def _serve(self, link: SerialLink) -> None:
        decoder = FrameDecoder()
        while True:
            data = await link.read()
            decoder.feed(data)
            arrived = time.perf_counter()
            while True:
                outcome = decoder.next_frame()
                if isinstance(outcome, NeedData):
                    break
                if isinstance(outcome, Malformed):
                    self._count("malformed")
                    log.info("serial %s: bad frame (%s): %r", self.port, outcome.reason, outcome.raw[:80])
                    self._spawn(
                        self._write(link, encode_nak(outcome.device_id, outcome.event_id, outcome.reason))
                    )
                elif isinstance(outcome, EventFrame):
                    await self._in_flight.acquire()
                    self._spawn(self._handle(link, outcome, arrived))
                elif isinstance(outcome, NakFrame):
                    log.warning(
                        "serial %s: unit refused a command %s: %s",
                        self.port,
                        outcome.event_id,
                        outcome.reason,
                    )
                elif isinstance(outcome, AckFrame | CommandFrame):
                    self._count("malformed")
                    self._spawn(self._write(link, encode_nak(None, None, "units may not send ACK or CMD")))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _write(self, link: SerialLink, frame: bytes) -> None:
        try:
            await link.write(frame)
        except (LinkLost, TimeoutError) as exc:
            log.info("serial %s: answer not written (%s); the unit will retry", self.port, exc)

    async def _handle(self, link: SerialLink, frame: EventFrame, arrived: float) -> None:
        event = frame.event
        try:
            try:
                result = await self._intake.submit(event)
            except StoreUnavailable as exc:
                # Not stored, so not acknowledged: the unit retransmits until we can store it.
                self._count("store_unavailable")
                log.warning(
                    "serial %s: store unavailable for %s/%s: %s",
                    self.port,
                    event.device_id,
                    event.event_id,
                    exc,
                )
                return
            self.devices.add(event.device_id)
            self._count(result.result)
            if result.result in ("accepted", "duplicate"):
                await self._write(link, encode_ack(event.device_id, event.event_id, result.alert_id))
                if self._on_ack_latency is not None:
                    self._on_ack_latency(time.perf_counter() - arrived)
            else:
                await self._write(
                    link, encode_nak(event.device_id, event.event_id, result.error or "rejected")
                )
        except Exception:
            log.exception("serial %s: failed handling %s/%s", self.port, event.device_id, event.event_id)
        finally:
            self._in_flight.release()
