"""The SIA DC-09 receiver: TCP and UDP on one port; every frame decoded by :mod:`devices.dc09`.

Each frame is answered once it is handled: a refusal (bad CRC, bad length, stale timestamp, no key
decrypts it ...) with a NAK carrying our time, counted in ``telecare_events_rejected_reasons`` and
logged with its reason; a link test (``NULL``) and every event with an ACK, but only after the intake
says the event is stored (``accepted`` or ``duplicate``). When the store cannot commit, nothing is
answered and the panel resends. A resent frame (same account, sequence and content) maps onto the same
``event_id``, so it collapses onto the first alert as a duplicate and is ACKed again.

An unknown account (unencrypted) still raises its alert, from the synthetic device ``dc09-<account>``,
flagged unregistered by the store. An unknown code is an ``unknown_signal`` (protocol ``dc09`` and the raw
code: an alert of its own per distinct code) and is ACKed (never a DUH, which panels answer by
resending). A restore (Contact ID qualifier 3, a SIA restore code) is a ``restored`` event naming the type
it restores (``mains_restored`` for mains), which the store applies (docs/dc09.md). Keys are read from
the registry per frame and never logged.

Hostile peers (docs/dc09.md, "Limits"): connections, idleness and datagrams in flight are bounded by
:mod:`bridge.transports.guard`; a frame's CRC and length are checked before any registry read; a NAK
bigger than the UDP datagram it answers is not sent; one frame raises at most
:data:`MAX_EVENTS_PER_FRAME` events.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web

from alarm_centre.alerts.intake import Intake, StoreUnavailable
from alarm_centre.registry import store as registry_sql
from alarm_centre.store.base import AlertStore
from bridge.metrics import BridgeMetrics
from bridge.transports.guard import DEFAULT_LIMITS, NOT_HANDLED, NOT_STORED, ListenerGuard, ListenerLimits
from devices.cancellation import stop
from devices.dc09 import (
    Frame,
    FrameSplitter,
    NeedData,
    Refused,
    TimeWindow,
    Token,
    build_ack,
    build_nak,
    check_envelope,
    parse_frame,
    parse_key,
    read_payload,
)
from devices.dc09_codes import CodeKind, CodeMeaning, meaning_of
from devices.events import DeviceEvent
from devices.vocabulary import EventType, restored_data, unknown_signal_data

log = logging.getLogger(__name__)

TRANSPORT = "dc09"
#: Reason counted for an ACK/NAK/DUH sent to us (we are the receiver, not a transmitter).
UNEXPECTED_ANSWER = "unexpected_answer"
#: A NAK to a UDP datagram shorter than the NAK is not sent (logged with this reason): no amplification.
NOT_ANSWERED = "nak_bigger_than_datagram"
#: Resends arrive seconds apart; the same account, sequence and content within this bucket of the
#: frame's (else our) time is one event. Splitting a resend across two buckets is harmless (the second
#: joins the open alert); collapsing two real events after the 9999 sequence wrap would not be.
DEDUP_BUCKET_S = 600
#: The most events one frame may raise: a SIA DCS block of more (``Nri1/MA/MA/...``, up to ~1000 in
#: one frame) is raised as one ``unknown_signal`` showing the raw data, not as one store write each.
MAX_EVENTS_PER_FRAME = 16
#: Why a command to a DC-09 unit is closed unsent (on the alert's timeline).
NO_COMMANDS = "a DC-09 unit takes no commands; call the resident back"
_HEADER_ACCOUNT_RE = re.compile(
    rb'"\*?[A-Z-]{3,8}"[0-9]{4}(?:R[0-9A-Fa-f]{1,6})?L[0-9A-Fa-f]{1,6}?#([0-9A-Fa-f]{3,16})\['
)


def _is_ack(answer: bytes) -> bool:
    return b'"ACK"' in answer[:20] or b'"*ACK"' in answer[:20]


def device_id_for(account: str) -> str:
    """The synthetic device id an unregistered account reports as (keeps the device-id rule)."""
    return f"dc09-{account.upper()}"


def event_id_for(frame: Frame, index: int, now: datetime) -> str:
    """The idempotency key of the ``index``-th event of ``frame``: account, sequence and content (not
    the timestamp, which a panel may renew on a resend), within one :data:`DEDUP_BUCKET_S` bucket."""
    at = frame.timestamp or now
    bucket = int(at.timestamp()) // DEDUP_BUCKET_S
    content = "|".join([frame.token.value, frame.data, *(b.encode() for b in frame.extended), str(bucket)])
    digest = hashlib.sha256(content.encode("ascii", "replace")).hexdigest()[:16]
    return f"dc09-{frame.account}-{frame.sequence:04d}-{digest}-{index}"


@dataclass(frozen=True, slots=True)
class _Unit:
    device_id: str
    key: bytes | None
    registered: bool


class Dc09Receiver:
    """An async context manager serving DC-09 on TCP and UDP; ``port`` is the bound port."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        store: AlertStore,
        intake: Intake,
        metrics: BridgeMetrics,
        window: TimeWindow,
        limits: ListenerLimits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._port = port
        self._store = store
        self._intake = intake
        self._metrics = metrics
        self._window = window
        self._clock = clock
        self._guard = ListenerGuard("DC-09", TRANSPORT, metrics, limits, log)
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connection, self._host, self._port)
        self.port = self._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self._host, self.port)
        )
        log.info("DC-09 receiver on %s:%d (TCP and UDP)", self._host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            await stop(task)

    async def readiness(self) -> list[str]:
        """Problems for /healthz: the listener must be serving."""
        if self._server is None or not self._server.is_serving() or self._udp is None:
            return ["dc09: the receiver is not listening"]
        return []

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # --- the two transports ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        connection = self._guard.open_connection(peer, writer)
        splitter = FrameSplitter()
        try:
            while data := await self._guard.read(reader, 4096, connection):
                splitter.feed(data)
                while not isinstance(item := splitter.next_frame(), NeedData):
                    answer = await self.handle(item, peer)
                    if answer is not None and _is_ack(answer):
                        connection.progressed()  # a NAKed frame is no progress: garbage cannot hold on
                    if answer is not None:
                        writer.write(answer)
                        if not await self._guard.drain(writer, connection):
                            return
        except (ConnectionError, OSError) as exc:
            log.info("DC-09 connection from %s closed: %s", peer, exc)
        finally:
            self._guard.close_connection(connection)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    def datagram(self, data: bytes, addr: Any) -> None:
        """One UDP datagram: one frame, answered to its sender (dropped when too many are in hand)."""
        if not self._guard.open_datagram(addr):
            return
        task = asyncio.create_task(self._datagram(data, addr), name="dc09-datagram")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _datagram(self, data: bytes, addr: Any) -> None:
        try:
            answer = await self.handle(data, addr)
        finally:
            self._guard.close_datagram()
        if answer is None or self._udp is None:
            return
        if len(answer) > len(data) and not _is_ack(answer):
            # A NAK bigger than the datagram: its source may be spoofed, and we are no amplifier. An
            # honest panel's refused frames are longer than a NAK; it resends anyway.
            self._guard.warn(
                NOT_ANSWERED,
                "DC-09 datagram of %d bytes from %s not answered (%s)",
                len(data),
                addr,
                NOT_ANSWERED,
            )
            return
        self._udp.sendto(answer, addr)

    # --- one frame ------------------------------------------------------------------------------

    async def _unit(self, account: str) -> _Unit:
        async with self._store.read() as tx:
            row = await registry_sql.dc09_unit(tx, account)
        if row is None:
            return _Unit(device_id_for(account), None, registered=False)
        key = parse_key(row["dc09_key"]) if row["dc09_key"] else None
        return _Unit(str(row["id"]), key, registered=True)

    def _refuse(self, reason: str, detail: str, account: str | None, peer: Any) -> bytes:
        self._metrics.rejects.labels(reason, TRANSPORT).inc()
        self._guard.warn(
            reason, "DC-09 frame from %s (account %s) refused: %s: %s", peer, account or "?", reason, detail
        )
        return build_nak(now=self._now())

    async def handle(self, raw: bytes | Refused, peer: Any = None) -> bytes | None:
        """The answer to one frame (None: no answer, the panel resends). A fault in handling it (the
        registry unreadable, say) is logged and left unanswered: the panel's resend tries again, and the
        connection and the receiver keep serving."""
        try:
            return await self._handle(raw, peer)
        except Exception:
            self._metrics.unstored.labels(TRANSPORT).inc()
            self._guard.warn(
                NOT_HANDLED,
                "DC-09 frame from %s not handled, not answered (the panel resends)",
                peer,
                exc_info=True,
                level=logging.ERROR,
            )
            return None

    async def _handle(self, raw: bytes | Refused, peer: Any) -> bytes | None:
        started = time.monotonic()
        if isinstance(raw, Refused):
            return self._refuse(raw.reason.value, raw.detail, raw.account, peer)
        envelope = check_envelope(raw)  # garbage is refused before any registry read
        if envelope is not None:
            return self._refuse(envelope.reason.value, envelope.detail, envelope.account, peer)
        header = _HEADER_ACCOUNT_RE.search(raw)
        unit = await self._unit(header[1].decode("ascii").upper()) if header else None
        key = unit.key if unit is not None else None
        now = self._now()
        parsed = parse_frame(raw, now=now, keys=lambda _account: key, window=self._window)
        if isinstance(parsed, Refused):
            return self._refuse(parsed.reason.value, parsed.detail, parsed.account, peer)
        if parsed.is_answer:
            return self._refuse(UNEXPECTED_ANSWER, f"a {parsed.token.value} sent to the receiver", None, peer)
        if unit is None or header is None or header[1].decode("ascii").upper() != parsed.account:
            unit = await self._unit(parsed.account)  # the account was in the data block only
        events = self._events(parsed, unit, now)
        for event in events:
            try:
                result = await self._intake.submit(event)
            except StoreUnavailable as exc:
                self._metrics.unstored.labels(TRANSPORT).inc()
                self._guard.warn(
                    NOT_STORED, "DC-09 %s from %s not stored, not ACKed: %s", event.type, unit.device_id, exc
                )
                return None
            self._metrics.events.labels(event.type.value, result.result, TRANSPORT).inc()
            if result.result == "rejected":
                log.warning(
                    "DC-09 %s from %s rejected by the store: %s", event.type, unit.device_id, result.error
                )
                return None
        self._metrics.ack_latency.labels(TRANSPORT).observe(time.monotonic() - started)
        return build_ack(parsed, now=self._now(), key=unit.key)

    def _events(self, frame: Frame, unit: _Unit, now: datetime) -> list[DeviceEvent]:
        """The events a frame carries for the intake (a link test is the unit's heartbeat)."""
        if frame.token is Token.NULL:
            if not unit.registered:
                return []  # a link test from an unknown account: answered, nothing to supervise
            meanings: tuple[CodeMeaning, ...] = (CodeMeaning("NULL", CodeKind.EVENT, EventType.HEARTBEAT),)
        else:
            payload = read_payload(frame)
            meanings = (
                meaning_of(payload) if payload is not None else (CodeMeaning(frame.data, CodeKind.UNKNOWN),)
            )
            if len(meanings) > MAX_EVENTS_PER_FRAME:
                self._guard.warn(
                    "too_many_events",
                    "DC-09 frame from account %s carries %d events (at most %d): one unknown signal",
                    frame.account,
                    len(meanings),
                    MAX_EVENTS_PER_FRAME,
                )
                meanings = (CodeMeaning(frame.data, CodeKind.UNKNOWN),)
        events = []
        for index, meaning in enumerate(meanings):
            block: dict[str, Any] = {
                "account": frame.account,
                "code": meaning.raw,
                "token": frame.token.value,
                "sequence": frame.sequence,
                "line": frame.line,
                "receiver": frame.receiver,
                "known_code": meaning.known,
                "data": frame.data,
            }
            event_type, test = meaning.event_type, meaning.test
            data: dict[str, Any]
            if meaning.kind is CodeKind.UNKNOWN:
                event_type = EventType.UNKNOWN_SIGNAL
                data = unknown_signal_data(TRANSPORT, meaning.raw, dc09=block)
            elif meaning.kind is CodeKind.RESTORE and event_type is None:
                assert meaning.clears is not None
                event_type = EventType.RESTORED
                data = restored_data(meaning.clears, dc09=block)
            else:
                data = {"dc09": block}
            assert event_type is not None
            events.append(
                DeviceEvent(
                    device_id=unit.device_id,
                    event_id=event_id_for(frame, index, now),
                    type=event_type,
                    received_at=now,
                    ts=frame.timestamp,
                    test=test,
                    data=data,
                    source=TRANSPORT,
                    unregistered_hint=None
                    if unit.registered
                    else {"dc09_account": frame.account, "code": meaning.raw},
                )
            )
        return events


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Dc09Receiver) -> None:
        self._receiver = receiver

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._receiver.datagram(data, addr)


DC09_RECEIVER: web.AppKey[Dc09Receiver] = web.AppKey("dc09_receiver", Dc09Receiver)
