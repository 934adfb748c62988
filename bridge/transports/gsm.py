"""GSM modem driver: SMS alarms in, confirmation SMS out, signal and registration for /metrics.

Same I/O approach as the serial transport (:class:`bridge.transports.serial.SerialLink`: pyserial opens
the port, we drive its descriptor with add_reader/add_writer, so there is no write spin).

One session: open the port, initialise (``AT``, ``ATE0``, ``AT+CMEE=1``, ``AT+CMGF=1``, ``AT+CPMS``,
``AT+CSDH=1``, ``AT+CNMI=2,1,0,0,0``, ``AT+CREG=1``, ``AT+CSCS="UCS2"``), then list every stored SMS
(``AT+CMGL``) so messages that arrived while the bridge was down are handled, then serve ``+CMTI``
indications (``AT+CMGR``). An SMS is deleted (``AT+CMGD``) only after the intake answered accepted or
duplicate (or rejected, or it was not an alarm at all, so the SIM never fills up); when the store is
unavailable it stays on the SIM and is retried at the next poll. ``AT+CSQ`` and ``AT+CREG?`` are
polled. A command that times out, or a modem that prints its start-up banner (``RDY``), starts a new
session: initialise again and list again. A port that vanishes is reopened with backoff.

Event ids are derived from sender, modem timestamp and text, so an SMS read again after a restart is a
duplicate, not a new alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self

import serial

from alarm_centre.alerts.intake import Intake, StoreUnavailable
from alarm_centre.faults import Backoff
from bridge.transports.serial import LinkLost, SerialLink
from devices.cancellation import cancel_requests, stop
from devices.events import DeviceEvent
from devices.gsm_at import (
    AtStream,
    FinalResult,
    InfoLine,
    NeedData,
    NewMessage,
    Prompt,
    Registration,
    RegistrationUpdate,
    SignalQuality,
    SmsRecord,
    Unsolicited,
    build,
    build_cmgd,
    build_cmgl,
    build_cmgr,
    build_cmgs,
    build_sms_text,
    parse_cmgs,
    parse_creg,
    parse_csq,
)
from devices.phone import mask_number
from devices.sms_alarm import (
    device_id_for_sender,
    is_help_sms,
    looks_like_help,
    parse_sms_alarm,
    sms_event_id,
)
from devices.vocabulary import EventType, is_help, restored_data

log = logging.getLogger(__name__)

INIT_SEQUENCE = (
    "AT",
    "ATE0",
    "AT+CMEE=1",
    "AT+CMGF=1",
    'AT+CPMS="SM","SM","SM"',
    "AT+CSDH=1",
    "AT+CNMI=2,1,0,0,0",
    "AT+CREG=1",
)


class AtCommandError(RuntimeError):
    """The modem answered a command with ERROR, +CME ERROR or +CMS ERROR."""

    def __init__(self, command: str, result: FinalResult) -> None:
        super().__init__(f"{command}: {result.description}")
        self.command = command
        self.result = result


class ModemNotReady(ConnectionError):
    """The modem is not initialised (port closed, re-initialising, or not answering)."""


class _Restart(Exception):
    """The modem reset itself: start a new session."""


class GsmModem:
    """A GSM modem on a serial port; an async context manager, reusable, not reentrant.

    Attributes for health and /metrics: ``ready``, ``signal`` (SignalQuality: ``rssi``, ``dbm``),
    ``registration`` (Registration: ``stat``, ``registered``, ``description``), ``counts``,
    ``last_error``. ``on_outcome`` is called with ``accepted``, ``duplicate``, ``rejected``,
    ``ignored`` or ``store_unavailable`` per SMS; ``on_status`` after every poll.
    """

    def __init__(
        self,
        port: str,
        *,
        intake: Intake,
        resolve_sender: Callable[[str], Awaitable[str | None]],
        baudrate: int = 115200,
        rtscts: bool = False,
        xonxoff: bool = False,
        command_timeout: float = 5.0,
        send_timeout: float = 60.0,
        poll_interval: float = 30.0,
        reinit_initial: float = 0.5,
        reinit_max: float = 30.0,
        on_outcome: Callable[[str], None] | None = None,
        on_status: Callable[[GsmModem], None] | None = None,
    ) -> None:
        self.port = port
        self._intake = intake
        self._resolve_sender = resolve_sender
        self._settings: dict[str, Any] = {"baudrate": baudrate, "rtscts": rtscts, "xonxoff": xonxoff}
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout
        self.poll_interval = poll_interval
        self._backoff = Backoff(reinit_initial, reinit_max)
        self._on_outcome = on_outcome
        self._on_status = on_status
        self._link: SerialLink | None = None
        self._stream = AtStream()
        self._lock = asyncio.Lock()
        self._final: asyncio.Future[FinalResult] | None = None
        self._prompt: asyncio.Future[None] | None = None
        self._lines: list[str] = []
        self._records: list[SmsRecord] = []
        self._work: asyncio.Queue[int] = asyncio.Queue()
        self._restarted = asyncio.Event()
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.signal: SignalQuality | None = None
        self.registration: Registration | None = None
        self.charset = "IRA"
        self.counts: dict[str, int] = {}
        self.sessions = 0
        self._left_on_sim = False
        self.last_error: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("GsmModem is not reentrant")
        self._runner = asyncio.create_task(self._run(), name=f"gsm-modem:{self.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        runner, self._runner = self._runner, None
        await stop(runner)
        self._close_link()

    @property
    def ready(self) -> bool:
        """Initialised and answering."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Wait until the modem is initialised (wrap in ``asyncio.timeout``)."""
        await self._ready.wait()

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _close_link(self) -> None:
        self._ready.clear()
        if self._link is not None:
            self._link.close()
            self._link = None

    async def _run(self) -> None:
        while True:
            try:
                self._link = SerialLink.open(self.port, **self._settings)
            except (OSError, serial.SerialException, ValueError) as exc:
                self.last_error = f"cannot open {self.port}: {exc}"
                log.warning("GSM modem: %s", self.last_error)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            reader = asyncio.create_task(self._read(self._link), name=f"gsm-reader:{self.port}")
            try:
                while not reader.done():
                    await self._one_session(reader)
                with contextlib.suppress(LinkLost):
                    await reader
            finally:
                with contextlib.suppress(LinkLost):
                    await stop(reader)
                self._close_link()
            log.warning("GSM modem port %s lost; reopening", self.port)
            await asyncio.sleep(self._backoff.next_delay())

    async def _one_session(self, reader: asyncio.Task[None]) -> None:
        """Run a session until it fails or the port goes; then wait a backoff delay."""
        session = asyncio.create_task(self._session(), name=f"gsm-session:{self.port}")
        try:
            await asyncio.wait({reader, session}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            session.cancel()
            try:
                await session
            except asyncio.CancelledError:
                # The session's own cancellation (the port went) is ours to absorb; the runner's is not:
                # swallowing it would keep reopening the port under an __aexit__ waiting for it to stop.
                if not reader.done() or cancel_requests():
                    raise
            except (TimeoutError, AtCommandError, _Restart, LinkLost, ModemNotReady) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.warning("GSM modem %s: %s; initialising again", self.port, self.last_error)
            except Exception as exc:
                self.last_error = repr(exc)
                log.exception("GSM modem %s: session failed; initialising again", self.port)
            self._ready.clear()
        if not reader.done():
            await asyncio.sleep(self._backoff.next_delay())

    # --- reading -----------------------------------------------------------------------------

    async def _read(self, link: SerialLink) -> None:
        while True:
            self._stream.feed(await link.read())
            while not isinstance(event := self._stream.next_event(), NeedData):
                self._dispatch(event)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, FinalResult):
            if self._final is not None and not self._final.done():
                self._final.set_result(event)
        elif isinstance(event, InfoLine):
            self._lines.append(event.text)
        elif isinstance(event, SmsRecord):
            self._records.append(event)
        elif isinstance(event, Prompt):
            if self._prompt is not None and not self._prompt.done():
                self._prompt.set_result(None)
        elif isinstance(event, NewMessage):
            self._work.put_nowait(event.index)
        elif isinstance(event, RegistrationUpdate):
            self.registration = Registration(event.stat)
        elif isinstance(event, Unsolicited) and event.means_restart:
            log.warning("GSM modem %s restarted (%s)", self.port, event.text)
            self._restarted.set()

    # --- commands ----------------------------------------------------------------------------

    async def _exchange(
        self, data: bytes, answer_within: float, command: str
    ) -> tuple[list[str], list[SmsRecord]]:
        link = self._link
        if link is None:
            raise ModemNotReady(f"GSM modem port {self.port} is not open")
        self._lines, self._records = [], []
        self._final = asyncio.get_running_loop().create_future()
        await link.write(data)
        async with asyncio.timeout(answer_within):
            result = await self._final
        if not result.ok:
            raise AtCommandError(command, result)
        return self._lines, self._records

    async def command(self, line: str, *, answer_within: float | None = None) -> list[str]:
        """Send one AT command; returns its information lines. Raises AtCommandError or TimeoutError."""
        async with self._lock:
            lines, _ = await self._exchange(build(line), answer_within or self.command_timeout, line)
            return lines

    async def _records_of(self, data: bytes, command: str) -> list[SmsRecord]:
        async with self._lock:
            _, records = await self._exchange(data, self.command_timeout, command)
            return records

    async def send_sms(self, number: str, text: str) -> int | None:
        """Send an SMS (confirmations, unit commands); returns the message reference.
        Raises ModemNotReady, AtCommandError or TimeoutError."""
        if not self.ready:
            raise ModemNotReady(f"GSM modem on {self.port} is not ready")
        async with self._lock:
            link = self._link
            if link is None:
                raise ModemNotReady(f"GSM modem port {self.port} is not open")
            loop = asyncio.get_running_loop()
            self._prompt = loop.create_future()
            self._final = loop.create_future()
            self._lines = []
            self._stream.expect_prompt()
            await link.write(build_cmgs(number, self.charset))
            async with asyncio.timeout(self.command_timeout):
                waiters: set[asyncio.Future[Any]] = {self._prompt, self._final}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if self._final.done():
                raise AtCommandError("AT+CMGS", self._final.result())
            try:
                lines, _ = await self._exchange(
                    build_sms_text(text, self.charset), self.send_timeout, "AT+CMGS"
                )
                return parse_cmgs(lines)
            except TimeoutError:
                await link.write(b"\x1b")  # abandon the message so the modem leaves text entry
                raise

    # --- a session ---------------------------------------------------------------------------

    async def _initialise(self) -> None:
        self._stream.reset()
        self._stream.charset = self.charset = "IRA"
        # A bridge stopped in the middle of AT+CMGS leaves the modem in SMS text entry, where every
        # AT command is taken as more text. ESC abandons that message; to an idle modem it is nothing.
        if self._link is not None:
            await self._link.write(b"\x1b")
            await asyncio.sleep(0.1)
        for attempt in range(3):  # the first AT after a reset may be eaten by the auto-bauder
            try:
                await self.command("AT", answer_within=min(self.command_timeout, 2.0))
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        for line in INIT_SEQUENCE[1:]:
            await self.command(line)
        try:
            await self.command('AT+CSCS="UCS2"')
            self._stream.charset = self.charset = "UCS2"
        except AtCommandError:
            log.info("GSM modem %s has no UCS2 character set; using IRA", self.port)

    async def _session(self) -> None:
        self._restarted.clear()
        while not self._work.empty():
            self._work.get_nowait()
        await self._initialise()
        self.sessions += 1
        self._backoff.reset()
        self._ready.set()
        log.info("GSM modem %s ready (charset %s)", self.port, self.charset)
        await self._poll()
        await self._sweep()
        restarted = asyncio.create_task(self._restarted.wait())
        try:
            while True:
                next_index = asyncio.create_task(self._work.get())
                try:
                    done, _ = await asyncio.wait(
                        {next_index, restarted},
                        timeout=self.poll_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    if not next_index.done():
                        next_index.cancel()
                if restarted in done:
                    raise _Restart("modem restarted")
                if next_index in done:
                    indices = [next_index.result()]
                    while not self._work.empty():  # SMS that arrived together: help first
                        indices.append(self._work.get_nowait())
                    await self._read_all(indices)
                else:
                    await self._poll()
                    if self._left_on_sim:
                        await self._sweep()  # retry messages the store could not take earlier
        finally:
            restarted.cancel()

    async def _poll(self) -> None:
        self.signal = parse_csq(await self.command("AT+CSQ"))
        self.registration = parse_creg(await self.command("AT+CREG?"))
        if self._on_status is not None:
            self._on_status(self)

    async def _sweep(self) -> None:
        """Handle every SMS on the SIM (those that arrived while we were down, or were left over)."""
        try:
            records = await self._records_of(build_cmgl("ALL", self.charset), "AT+CMGL")
        except AtCommandError:
            if self.charset != "UCS2":
                raise
            records = await self._records_of(build_cmgl("ALL", "IRA"), "AT+CMGL")
        self._left_on_sim = False
        listed = [record for record in records if record.index is not None]
        if self.charset == "UCS2":
            for record in _help_first(listed):
                await self._handle(record.index or 0, record)
        else:
            # +CMGL carries no data coding scheme; +CMGR (with CSDH=1) does, so a UCS2 body in hex
            # is told apart from text that merely looks like hex.
            await self._read_all([record.index for record in listed if record.index is not None])

    async def _read_all(self, indices: list[int]) -> None:
        """Read these SMS, then store them, calls for help first (otherwise in SIM order)."""
        read: list[SmsRecord] = []
        for index in indices:
            try:
                records = await self._records_of(build_cmgr(index), f"AT+CMGR={index}")
            except AtCommandError as exc:
                log.warning("GSM modem %s: cannot read SMS %d: %s", self.port, index, exc)
                continue
            read += [replace(record, index=index) for record in records]
        for record in _help_first(read):
            await self._handle(record.index or 0, record)

    async def _handle(self, index: int, record: SmsRecord) -> None:
        try:
            event = await self.event_for(record)
        except Exception:
            # The registry could not answer: keep the SMS on the SIM and try again at the next poll.
            log.exception(
                "GSM modem: cannot resolve sender %s; SMS %d stays on the SIM",
                mask_number(record.sender),
                index,
            )
            self._left_on_sim = True
            return
        if event is None:
            self._count("ignored")
            # Never the text: a resident's or a stranger's message is theirs, not the log's.
            log.warning(
                "GSM modem: SMS from %s is not an alarm and not a call for help (%d characters); deleting",
                mask_number(record.sender),
                len(record.text),
            )
        else:
            try:
                result = await self._intake.submit(event)
            except StoreUnavailable as exc:
                self._count("store_unavailable")
                self._left_on_sim = True
                log.warning("GSM modem: store unavailable, SMS %d stays on the SIM: %s", index, exc)
                return
            self._count(result.result)
            if result.result == "rejected":
                log.warning(
                    "GSM modem: SMS %s from %s rejected: %s",
                    event.event_id,
                    mask_number(record.sender),
                    result.error,
                )
        try:
            async with self._lock:
                await self._exchange(build_cmgd(index), self.command_timeout, f"AT+CMGD={index}")
        except AtCommandError as exc:
            # Stored already: if it is read again later it is a duplicate, never a second alert.
            log.warning("GSM modem: could not delete SMS %d: %s", index, exc)
        else:
            self._count("deleted")

    async def event_for(self, record: SmsRecord) -> DeviceEvent | None:
        """The DeviceEvent for one SMS, or None when it is neither an alarm nor a call for help."""
        sender, text = record.sender, record.text
        alarm = parse_sms_alarm(text)
        device_id = await self._resolve_sender(sender)
        data: dict[str, Any] = {"sender": sender, "text": text}
        if alarm is not None and alarm.contact_id is not None:
            data.update(
                contact_id=alarm.contact_id, qualifier=alarm.qualifier, group=alarm.group, zone=alarm.zone
            )
        if alarm is not None and alarm.restores is not None:
            data = restored_data(alarm.restores, **data)
        hint = None
        if device_id is None:
            helpish = (alarm is not None and is_help(alarm.type)) or looks_like_help(text)
            if not helpish:
                return None
            device_id = device_id_for_sender(sender)
            data["unregistered"] = True
            hint = {"sender": sender, "channel": "sms"}
            event_type = alarm.type if alarm is not None and is_help(alarm.type) else EventType.PANIC
        elif alarm is not None:
            event_type = alarm.type
        elif looks_like_help(text):
            event_type = EventType.PANIC
        else:
            return None
        return DeviceEvent(
            device_id=device_id,
            event_id=sms_event_id(sender, record.raw_timestamp, text),
            type=event_type,
            received_at=datetime.now(UTC),
            ts=record.timestamp,
            test=alarm.test if alarm is not None else False,
            data=data,
            source="sms",
            unregistered_hint=hint,
        )


def _help_first(records: list[SmsRecord]) -> list[SmsRecord]:
    """Calls for help first, otherwise in the order given (the intake stores help first too, but an
    SMS is stored only when the one before it is)."""
    return sorted(records, key=lambda record: not is_help_sms(record.text))
