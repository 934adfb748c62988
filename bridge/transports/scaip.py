"""The SCAIP receiver: SIP MESSAGEs carrying ``application/scaip+xml`` over UDP, TCP and TLS.

SIP is read and written by :mod:`devices.sip` (messages) and :mod:`devices.sip_transaction`
(retransmissions); the body by :mod:`devices.scaip`, its codes by :mod:`devices.scaip_codes`.

Each MESSAGE is answered once it is handled. A retransmission of a request still being handled is
absorbed; one of a request answered gets the very same response again (RFC 3261 §17.2.2). A body that is
not a valid ``<mrq>`` is answered with the ``mrs`` status number (``snu``) it deserves, counted in
``telecare_events_rejected_reasons`` and logged, and nothing is stored. An alarm goes through the intake
and ``snu`` 0 is answered only after the intake says it is stored (``accepted`` or ``duplicate``); when
the store cannot commit, ``snu`` 6 (busy) tells the unit to try again. A resent ``mrq`` (same unit, same
``ref`` and codes) maps onto the same ``event_id``, so it collapses onto the first alert and gets the
same answer. The answer to a help alarm tells the unit to open its speech call to the centre (``mre``
duplex; ``cre`` to ``scaip.call_receiver`` or the unit's own receiver): the SCAIP ``call_centre``.

The answer travels in the 200 OK's body (``in_200``) or, per unit (``scaip_answer: message``), as a
MESSAGE of its own back to the unit after an empty 200 OK, retransmitted until answered (Timer E/F).

An unknown caller id still raises its alert, from the synthetic device ``scaip-<cid>``, flagged
unregistered by the store. A unit with a SIP password must prove it with digest authentication; a
nonce is bound to the body it challenged and each answer to it is taken once (:mod:`devices.sip_digest`).

Hostile peers (docs/scaip.md, "Limits"): connections, idleness and datagrams in flight are bounded by
:mod:`bridge.transports.guard`; answer MESSAGEs are capped per address; retransmissions are matched
only to requests from the same transport and address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web

from alarm_centre.alerts.intake import Intake, StoreUnavailable
from alarm_centre.registry import store as registry_sql
from alarm_centre.store.base import AlertStore
from bridge.metrics import BridgeMetrics
from bridge.transports.guard import DEFAULT_LIMITS, NOT_HANDLED, NOT_STORED, ListenerGuard, ListenerLimits
from devices import sip_digest
from devices.cancellation import stop
from devices.events import DeviceEvent
from devices.scaip import (
    MEDIA_TYPE,
    AlarmRequest,
    CallReply,
    ScaipRefused,
    Snu,
    VoiceMode,
    answer_refusal,
    build_mrs,
    parse_mrq,
)
from devices.scaip_codes import ScaipKind, ScaipMeaning, meaning_of
from devices.sip import (
    KeepAlive,
    NeedData,
    Request,
    Response,
    SipError,
    StreamFramer,
    Via,
    build_request,
    new_branch,
    new_tag,
    parse_message,
    response_to,
    serialise,
    stamp_received,
    uri_of,
)
from devices.sip_transaction import Arrival, ClientTransaction, ServerTransactions
from devices.vocabulary import EventType, is_help, restored_data, unknown_signal_data

log = logging.getLogger(__name__)

TRANSPORT = "scaip"
#: A resend of one ``mrq`` within this long of the first is one event: the key carries a bucket of our
#: time, and a resend in the next bucket finds the first's key (:meth:`ScaipReceiver._unit`), so a
#: unit resending across a bucket's end (say over a restart) is not stored twice. Collapsing a reused
#: ``ref`` hours later would be wrong.
DEDUP_BUCKET_S = 600
#: The methods answered (anything else: 405 when SIP knows it, 501 when not).
ALLOW = "MESSAGE, OPTIONS"
SIP_METHODS = frozenset(
    {"INVITE", "BYE", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "UPDATE"}
)
SERVER = "telecare-bridge"
#: Reasons counted in ``telecare_events_rejected_reasons`` besides the snu names.
MALFORMED_SIP = "sip_malformed"
WRONG_MEDIA = "unsupported_media_type"
BAD_CREDENTIALS = "digest_failed"
#: Answers sent as MESSAGEs of their own (``scaip_answer: message``), each resent for up to 32 s on UDP,
#: at most this many at once to one address and in all; beyond, the answer goes in the 200 OK (counted
#: as ``answer_messages_overloaded``), so a spoofed source cannot be made a target of our resends (at
#: most ~6 KB/s). Per address not lower: a care home's units behind one router may all raise at once.
MAX_ANSWER_MESSAGES_PER_HOST = 32
MAX_ANSWER_MESSAGES = 1024
ANSWER_MESSAGES_OVERLOADED = "answer_messages_overloaded"
#: A TLS handshake not finished in this many seconds is dropped (asyncio's default is 60): connections
#: still in their handshake are not yet counted against ``scaip.max_connections``.
TLS_HANDSHAKE_S = 10.0
#: Why a command to a SCAIP unit is closed unsent (on the alert's timeline).
NO_COMMANDS = "a SCAIP unit takes commands only in the answer to its own alarm; call the resident back"


def device_id_for(cid: str) -> str:
    """The synthetic device id an unregistered caller id reports as (keeps the device-id rule)."""
    return f"scaip-{cid}"


def event_id_for(request: AlarmRequest, now: datetime, *, buckets_back: int = 0) -> str:
    """The idempotency key of a request: the unit's cid and ``ref`` and the codes it carries, within one
    :data:`DEDUP_BUCKET_S` bucket of our time (``buckets_back``: an earlier one). At most 47 characters
    (event ids stop at 64; a cid may have 32 digits): the ``ref`` readable, the rest hashed."""
    bucket = int(now.timestamp()) // DEDUP_BUCKET_S - buckets_back
    content = "|".join(
        str(v) for v in (request.cid, request.mty, request.dty, request.did, request.stc, bucket)
    )
    digest = hashlib.sha256(content.encode("utf-8", "replace")).hexdigest()[:24]
    return f"scaip-{request.ref}-{digest}"


@dataclass(frozen=True, slots=True)
class _Unit:
    device_id: str
    registered: bool
    answer: str | None
    password: str | None
    test_mode_until: float | None = None
    #: The key this request was stored under in the previous bucket, when it was, lately.
    stored_as: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """Where a request came from and how to answer it."""

    transport: str  # UDP, TCP or TLS (as in a Via)
    peer: tuple[str, int]
    local: tuple[str, int]
    send: Callable[[bytes], None]

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    @property
    def origin(self) -> str:
        """Where a request came from, for matching its retransmissions: the transport and the peer's
        address (not its port: a unit may resend over a new TCP connection)."""
        return f"{self.transport} {self.peer[0]}"


class ScaipReceiver:
    """An async context manager serving SCAIP over SIP on UDP and TCP (and TLS when given a context)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        store: AlertStore,
        intake: Intake,
        metrics: BridgeMetrics,
        call_receiver: str = "",
        answer: str = "in_200",
        realm: str = "telecare",
        limits: ListenerLimits = DEFAULT_LIMITS,
        tls: ssl.SSLContext | None = None,
        tls_host: str = "",
        tls_port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._port = port
        self._store = store
        self._intake = intake
        self._metrics = metrics
        self._call_receiver = call_receiver
        self._answer_mode = answer
        self._realm = realm
        self._tls = tls
        self._tls_host = tls_host
        self._tls_port = tls_port
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._nonces = sip_digest.NonceLedger()
        self._guard = ListenerGuard("SCAIP", TRANSPORT, metrics, limits, log)
        self._answering: dict[str, int] = {}
        self._to_tag = new_tag()
        self._transactions = ServerTransactions()
        self._clients: dict[str, tuple[ClientTransaction, asyncio.Event]] = {}
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.tls_port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(
            lambda r, w: self._connection(r, w, "TCP"), self._host, self._port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self._host, self.port)
        )
        if self._tls is not None:
            self._tls_server = await asyncio.start_server(
                lambda r, w: self._connection(r, w, "TLS"),
                self._tls_host,
                self._tls_port,
                ssl=self._tls,
                ssl_handshake_timeout=TLS_HANDSHAKE_S,
            )
            self.tls_port = self._tls_server.sockets[0].getsockname()[1]
        log.info(
            "SCAIP receiver on %s:%d (UDP and TCP)%s",
            self._host,
            self.port,
            f", TLS on {self._tls_host}:{self.tls_port}" if self._tls is not None else "",
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        self._server = self._tls_server = None
        for task in list(self._tasks):
            await stop(task)

    async def readiness(self) -> list[str]:
        """Problems for /healthz: every listener must be serving."""
        problems = []
        if self._server is None or not self._server.is_serving() or self._udp is None:
            problems.append("scaip: the receiver is not listening")
        if self._tls is not None and (self._tls_server is None or not self._tls_server.is_serving()):
            problems.append("scaip: the TLS listener is not listening")
        return problems

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the transports -------------------------------------------------------------------------

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peername = writer.get_extra_info("peername")
        connection = self._guard.open_connection(peername, writer)
        sockname = writer.get_extra_info("sockname")
        link = Link(
            kind, (str(peername[0]), int(peername[1])), (str(sockname[0]), int(sockname[1])), writer.write
        )
        framer = StreamFramer()
        try:
            while data := await self._guard.read(reader, 65536, connection):
                framer.feed(data)
                while not isinstance(item := framer.next_message(), NeedData):
                    connection.progressed()  # a whole message or an RFC 5626 keep-alive
                    if isinstance(item, KeepAlive):
                        writer.write(b"\r\n")  # RFC 5626 pong
                    else:
                        await self.receive(item, link)
                    if not await self._guard.drain(writer, connection):
                        return
        except SipError as exc:
            self._metrics.rejects.labels(MALFORMED_SIP, TRANSPORT).inc()
            self._guard.warn(
                MALFORMED_SIP, "SCAIP %s stream from %s cannot be framed, closed: %s", kind, link.peer, exc
            )
        except (ConnectionError, OSError) as exc:
            log.info("SCAIP %s connection from %s closed: %s", kind, link.peer, exc)
        finally:
            self._guard.close_connection(connection)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    def datagram(self, data: bytes, addr: Any) -> None:
        """One UDP datagram: one SIP message (dropped when too many are in hand: the unit resends)."""
        if self._udp is None or not self._guard.open_datagram(addr):
            return
        udp = self._udp
        sockname = udp.get_extra_info("sockname")
        peer = (str(addr[0]), int(addr[1]))
        link = Link("UDP", peer, (str(sockname[0]), int(sockname[1])), lambda out: udp.sendto(out, addr))
        self._spawn(self._datagram(data, link), "scaip-datagram")

    async def _datagram(self, data: bytes, link: Link) -> None:
        try:
            await self.receive(data, link)
        finally:
            self._guard.close_datagram()

    # --- one SIP message ------------------------------------------------------------------------

    async def receive(self, data: bytes, link: Link) -> None:
        """Handle one SIP message from ``link``, answering through it."""
        if data.strip(b"\r\n") == b"":
            return  # a UDP keep-alive
        try:
            message = parse_message(data)
        except SipError as exc:
            self._metrics.rejects.labels(MALFORMED_SIP, TRANSPORT).inc()
            if exc.request is not None and exc.status is not None and exc.request.method != "ACK":
                self._guard.warn(
                    MALFORMED_SIP,
                    "SIP %s from %s refused %d: %s",
                    link.transport,
                    link.peer,
                    exc.status,
                    exc.detail,
                )
                link.send(serialise(self._response(exc.request, exc.status)))
            else:
                self._guard.warn(
                    MALFORMED_SIP, "SIP message from %s %s dropped: %s", link.transport, link.peer, exc.detail
                )
            return
        if isinstance(message, Response):
            self._client_response(message)
            return
        if message.method == "ACK":
            return  # never answered; our final responses are not INVITE 2xx
        request = stamp_received(message, *link.peer)
        origin = link.origin
        arrival, earlier = self._transactions.arrive(request, time.monotonic(), origin)
        if arrival is Arrival.RESEND:
            assert earlier is not None
            link.send(earlier)
            return
        if arrival is Arrival.ABSORBED:
            return
        if arrival is Arrival.OVERLOADED:
            link.send(serialise(self._response(request, 503, extra=[("Retry-After", "5")])))
            return
        try:
            response, after = await self._answer(request, link)
        except Exception:
            self._transactions.abandon(request, origin)  # its retransmission is handled afresh
            self._metrics.unstored.labels(TRANSPORT).inc()
            self._guard.warn(
                NOT_HANDLED,
                "SIP %s from %s not handled, not answered (the unit resends)",
                request.method,
                link.peer,
                exc_info=True,
                level=logging.ERROR,
            )
            return
        out = serialise(response)
        self._transactions.complete(request, out, time.monotonic(), origin)
        link.send(out)
        if after is not None:
            self._spawn(after, "scaip-answer-message")

    def _response(
        self,
        request: Request,
        status: int,
        *,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> Response:
        return response_to(
            request,
            status,
            to_tag=self._to_tag,
            body=body,
            content_type=MEDIA_TYPE if body else None,
            extra=[("Server", SERVER), *(extra or [])],
        )

    async def _answer(self, request: Request, link: Link) -> tuple[Response, Awaitable[None] | None]:
        method = request.method
        if method == "MESSAGE":
            return await self._message(request, link)
        if method == "OPTIONS":  # a keep-alive or capability query
            return self._response(request, 200, extra=[("Allow", ALLOW), ("Accept", MEDIA_TYPE)]), None
        if method == "CANCEL":
            return self._response(request, 481), None  # nothing of ours is ever pending to cancel
        if method in SIP_METHODS:
            # The speech call goes to the centre's voice system, never to this receiver.
            return self._response(request, 405, extra=[("Allow", ALLOW)]), None
        return self._response(request, 501, extra=[("Allow", ALLOW)]), None

    # --- one SCAIP message ----------------------------------------------------------------------

    def _refuse(self, reason: str, detail: str, peer: tuple[str, int], cid: str | None = None) -> None:
        self._metrics.rejects.labels(reason, TRANSPORT).inc()
        self._guard.warn(
            reason, "SCAIP message from %s (cid %s) refused: %s: %s", peer, cid or "?", reason, detail
        )

    async def _unit(self, request: AlarmRequest, now: datetime) -> _Unit:
        """The unit a request comes from, and whether the same request was stored in the previous
        bucket less than :data:`DEDUP_BUCKET_S` ago (one read)."""
        earlier = event_id_for(request, now, buckets_back=1)
        async with self._store.read() as tx:
            row = await registry_sql.scaip_unit(tx, request.cid)
            device_id = device_id_for(request.cid) if row is None else str(row["id"])
            seen = await tx.fetchone(
                "SELECT received_at FROM events WHERE device_id = ? AND event_id = ?", device_id, earlier
            )
        stored_as = None
        if seen is not None and float(seen["received_at"]) > now.timestamp() - DEDUP_BUCKET_S:
            stored_as = earlier
        if row is None:
            return _Unit(device_id, registered=False, answer=None, password=None, stored_as=stored_as)
        until = row["test_mode_until"]
        return _Unit(
            device_id,
            True,
            row["scaip_answer"],
            row["scaip_password"] or None,
            float(until) if until is not None else None,
            stored_as,
        )

    async def _message(self, request: Request, link: Link) -> tuple[Response, Awaitable[None] | None]:
        started = time.monotonic()
        if request.content_type != MEDIA_TYPE:
            self._refuse(WRONG_MEDIA, f"Content-Type {request.content_type!r}", link.peer)
            return self._response(request, 415, extra=[("Accept", MEDIA_TYPE)]), None
        parsed = parse_mrq(request.body)
        if isinstance(parsed, ScaipRefused):
            self._refuse(parsed.snu.name.lower(), parsed.detail, link.peer)
            refusal = answer_refusal(parsed)
            if refusal is None:  # no ref: nothing to answer in SCAIP, only at the SIP level
                return self._response(request, 400), None
            return self._deliver(request, link, refusal, self._answer_mode)
        now = self._now()
        unit = await self._unit(parsed, now)
        if unit.password is not None:
            verdict = sip_digest.check(
                request.header("Authorization"),
                username=parsed.cid,
                password=unit.password,
                realm=self._realm,
                method=request.method,
                secret=self._secret,
                now=self._clock(),
                uri=request.uri,
                bound=request.body,
                ledger=self._nonces,
            )
            if verdict is not sip_digest.Verdict.OK:
                if verdict is sip_digest.Verdict.WRONG:
                    self._refuse(BAD_CREDENTIALS, "digest response does not match", link.peer, parsed.cid)
                challenge = sip_digest.challenge(
                    self._realm,
                    self._secret,
                    self._clock(),
                    stale=verdict is sip_digest.Verdict.STALE,
                    bound=request.body,
                )
                return self._response(request, 401, extra=[("WWW-Authenticate", challenge)]), None
        meaning = meaning_of(parsed)
        event = self._event(parsed, meaning, unit, now)
        snu = Snu.OK
        if event is not None:
            try:
                result = await self._intake.submit(event)
            except StoreUnavailable as exc:
                self._metrics.unstored.labels(TRANSPORT).inc()
                self._guard.warn(
                    NOT_STORED,
                    "SCAIP %s from %s not stored, answered busy: %s",
                    event.type,
                    unit.device_id,
                    exc,
                )
                snu = Snu.BUSY
            else:
                self._metrics.events.labels(event.type.value, result.result, TRANSPORT).inc()
                if result.result == "rejected":
                    log.warning(
                        "SCAIP %s from %s rejected by the store: %s", event.type, unit.device_id, result.error
                    )
                    snu = Snu.NOT_TREATED
        if snu is Snu.OK:
            self._metrics.ack_latency.labels(TRANSPORT).observe(time.monotonic() - started)
        mrs = self._mrs(parsed.ref, snu, event, meaning, unit)
        return self._deliver(request, link, mrs, unit.answer or self._answer_mode)

    def _handled_as_test(self, event: DeviceEvent, unit: _Unit) -> bool:
        """Whether the store takes ``event`` as a test: flagged so, from a unit in test mode (as the
        intake decides; a test from a unit not in test mode is handled as real, and so is answered)."""
        return event.test and unit.test_mode_until is not None and unit.test_mode_until > self._clock()

    def _mrs(
        self, ref: str, snu: Snu, event: DeviceEvent | None, meaning: ScaipMeaning, unit: _Unit
    ) -> bytes:
        """The answer: for a help alarm stored, the instruction to open the speech call to the centre."""
        if snu is not Snu.OK or meaning.kind is ScaipKind.HEARTBEAT:
            return build_mrs(ref, snu)
        if event is not None and is_help(event.type) and not self._handled_as_test(event, unit):
            if self._call_receiver:
                return build_mrs(ref, snu, mre=VoiceMode.DUPLEX, cnb=self._call_receiver)
            return build_mrs(ref, snu, mre=VoiceMode.DUPLEX, cre=CallReply.PREDEFINED_RECEIVER)
        return build_mrs(ref, snu, mre=VoiceMode.NONE)

    def _deliver(
        self, request: Request, link: Link, mrs: bytes, mode: Any
    ) -> tuple[Response, Awaitable[None] | None]:
        if mode == "message":
            host = link.peer[0]
            answering = self._answering.get(host, 0)
            if (
                answering < MAX_ANSWER_MESSAGES_PER_HOST
                and sum(self._answering.values()) < MAX_ANSWER_MESSAGES
            ):
                self._answering[host] = answering + 1
                return self._response(request, 200), self._send_answer(request, link, mrs)
            self._metrics.rejects.labels(ANSWER_MESSAGES_OVERLOADED, TRANSPORT).inc()
            self._guard.warn(
                ANSWER_MESSAGES_OVERLOADED,
                "SCAIP answer to %s sent in the 200 OK: %d answer MESSAGEs to it already under way",
                link.peer,
                answering,
            )
        return self._response(request, 200, body=mrs), None

    def _event(
        self, request: AlarmRequest, meaning: ScaipMeaning, unit: _Unit, now: datetime
    ) -> DeviceEvent | None:
        """The event a request carries for the intake (None: nothing to store)."""
        scaip: dict[str, Any] = {
            "cid": request.cid,
            "ref": request.ref,
            "mty": request.mty,
            "dty": request.dty,
            "did": request.did,
            "stc": request.stc,
            "codes": meaning.raw,
            "device": meaning.device,
            "status": meaning.status,
            "known_code": meaning.known,
            "extra": dict(request.extra),
            "crd": list(request.crd),
        }
        test = False
        event_type = meaning.event_type
        data: dict[str, Any] = {"scaip": scaip}
        if meaning.kind is ScaipKind.HEARTBEAT:
            if not unit.registered:
                return None  # a poll from an unknown caller id: answered, nothing to supervise
            event_type = EventType.HEARTBEAT
        elif meaning.kind is ScaipKind.RESTORE and event_type is None:
            # The vocabulary's generic restore: a technical alert resolves, a call for help gets a
            # timeline entry; one that names no type (or nothing open) is recorded only.
            event_type = EventType.RESTORED
            if meaning.clears is not None:
                data = restored_data(meaning.clears, scaip=scaip)
        elif meaning.kind is ScaipKind.TEST:
            if event_type is None:
                event_type = EventType.HEARTBEAT if unit.registered else None
                if event_type is None:
                    return None
            else:
                test = True
        elif meaning.kind is ScaipKind.UNKNOWN:
            # An alert of its own per unit and raw codes, shown to the operator; answered snu 0.
            event_type = EventType.UNKNOWN_SIGNAL
            data = unknown_signal_data(TRANSPORT, meaning.raw, scaip=scaip)
        assert event_type is not None
        return DeviceEvent(
            device_id=unit.device_id,
            event_id=unit.stored_as or event_id_for(request, now),
            type=event_type,
            received_at=now,
            test=test,
            data=data,
            source=TRANSPORT,
            unregistered_hint=None if unit.registered else {"scaip_cid": request.cid, "code": meaning.raw},
        )

    # --- the answer as a MESSAGE of its own -------------------------------------------------------

    async def _send_answer(self, request: Request, link: Link, mrs: bytes) -> None:
        try:
            await self._send_answer_message(request, link, mrs)
        finally:
            self._answer_done(link.peer[0])

    async def _send_answer_message(self, request: Request, link: Link, mrs: bytes) -> None:
        """Send ``mrs`` to the unit as a MESSAGE (to its Contact, over the link it came by, with the
        request's Call-ID so the unit can match it), resending until a final response or Timer F."""
        unit_address = request.header("From") or ""
        unit_uri = uri_of(request.header("Contact") or unit_address)
        ours = uri_of(request.header("To") or "") or f"sip:{link.local[0]}"
        host = uri_of(request.uri).partition("@")[2].split(";", 1)[0] or link.local[0]
        via_host = host.rpartition(":")[0] if host.count(":") == 1 else host
        branch = new_branch()
        out = build_request(
            "MESSAGE",
            unit_uri,
            via=Via(link.transport, via_host, link.local[1], {"branch": branch, "rport": None}),
            from_address=f"<{ours}>;tag={new_tag()}",
            to_address=f"<{uri_of(unit_address)}>",
            call_id=request.call_id,  # the unit matches the answer to its request (and so does SIPp)
            cseq=1,
            body=mrs,
            content_type=MEDIA_TYPE,
            extra=[("Contact", f"<sip:{via_host}:{link.local[1]}>"), ("User-Agent", SERVER)],
        )
        data = serialise(out)
        transaction = ClientTransaction(reliable=link.reliable, now=time.monotonic())
        answered = asyncio.Event()
        self._clients[branch] = (transaction, answered)
        try:
            while not transaction.done:
                now = time.monotonic()
                if transaction.due(now):
                    link.send(data)
                    transaction.sent(now)
                answered.clear()
                try:
                    async with asyncio.timeout(max(0.0, transaction.wake_at() - time.monotonic())):
                        await answered.wait()
                except TimeoutError:
                    pass
                transaction.tick(time.monotonic())
        except (ConnectionError, OSError) as exc:
            log.warning("SCAIP answer MESSAGE to %s not sent: %s", link.peer, exc)
            return
        finally:
            del self._clients[branch]
        if transaction.status is not None and 200 <= transaction.status < 300:
            log.debug("SCAIP answer MESSAGE to %s delivered", link.peer)
        else:
            log.warning(
                "SCAIP answer MESSAGE to %s not accepted: %s",
                link.peer,
                transaction.status or "no answer (Timer F)",
            )

    def _answer_done(self, host: str) -> None:
        left = self._answering.get(host, 1) - 1
        if left > 0:
            self._answering[host] = left
        else:
            self._answering.pop(host, None)

    def _client_response(self, response: Response) -> None:
        try:
            branch = response.top_via.branch or ""
        except SipError:
            return
        found = self._clients.get(branch)
        if found is None or response.cseq[1] != "MESSAGE":
            return  # a stray response: nothing of ours to match
        transaction, answered = found
        transaction.received(response.status)
        answered.set()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: ScaipReceiver) -> None:
        self._receiver = receiver

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._receiver.datagram(data, addr)


SCAIP_RECEIVER: web.AppKey[ScaipReceiver] = web.AppKey("scaip_receiver", ScaipReceiver)
