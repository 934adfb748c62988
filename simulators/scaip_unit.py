"""A simulated SCAIP social alarm: sends alarms and heartbeats as SIP MESSAGEs over UDP, TCP or TLS and
retransmits each one per RFC 3261 (T1 doubling up to T2 on UDP, Timer F 32 s) until it is answered, as
real units do; TCP and TLS send once, as RFC 3261 says for reliable transports. It answers the
receiver's own MESSAGEs (the ``mrs`` sent back in ``message`` answer mode) with 200 OK, and answers a
digest challenge when it has a password.

:meth:`ScaipUnit.deliver` is the unit's whole alarm: when a transaction times out (Timer F), the
connection drops, or the answer is snu 6 (busy) or 4 (hold), it sends the same ``mrq`` (same ``ref``)
again in a new transaction, reconnecting over TCP/TLS, until it is answered -- as real units do.

    async with ScaipUnit("127.0.0.1", port, cid="4670123") as unit:
        answer = await unit.alarm(dty="0003", stc="0010")    # a pendant press
        answer.mrs.snu, answer.mrs.mre                        # 0, duplex: call the centre
        answer = await unit.deliver(build_mrq(...), attempts=60)  # resent until answered
        await unit.heartbeat()
        unit.send(raw_message_bytes)                          # any SIP bytes (for refusal tests)
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal, Self

from devices import sip_digest
from devices.scaip import MEDIA_TYPE, MessageResponse, MessageType, ScaipRefused, Snu, build_mrq, parse_mrs
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
    new_call_id,
    new_tag,
    parse_message,
    response_to,
    serialise,
)
from devices.sip_transaction import TIMER_F, ClientTransaction

#: Answers after which a unit sends the same request again later (SS 91100 table 2).
TRY_AGAIN = frozenset({Snu.BUSY, Snu.HOLD})


@dataclass(frozen=True, slots=True)
class UnitAnswer:
    """What came back for one request: the SIP final response and the ``mrs`` (from the response's body,
    or from the MESSAGE the receiver sent back), or None when there was none."""

    response: Response
    mrs: MessageResponse | ScaipRefused | None
    by_message: bool = False

    @property
    def status(self) -> int:
        return self.response.status


class ScaipUnit:
    """One unit on one UDP socket or one TCP or TLS connection (opened on entry)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cid: str,
        transport: Literal["udp", "tcp", "tls"] = "udp",
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        wait_s: float = 40.0,
        timer_f_s: float = TIMER_F,
    ) -> None:
        self.host, self.port, self.cid, self.transport = host, port, cid, transport
        self.tls = tls
        self.password = password
        self.wait_s = wait_s
        self.timer_f_s = timer_f_s
        self.sent_count = 0  # every datagram/message written, retransmissions included
        self.connections = 0  # TCP/TLS connections opened
        self.resends = 0  # requests sent again in a new transaction by deliver()
        self.messages: asyncio.Queue[Request] = asyncio.Queue()  # MESSAGEs the receiver sent us
        self._refs = itertools.count(secrets.randbelow(10**6))
        self._cseq = itertools.count(1)
        self._waiting: dict[str, tuple[ClientTransaction, asyncio.Future[Response]]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), remote_addr=(self.host, self.port)
            )
            sockname = self._udp.get_extra_info("sockname")
            self.local = (str(sockname[0]), int(sockname[1]))
        else:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._udp is not None:
            self._udp.close()
        await self._close_stream()

    @property
    def connected(self) -> bool:
        """UDP always; TCP/TLS while the connection is open."""
        if self.transport == "udp":
            return self._udp is not None
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open (or open again) the TCP/TLS connection (ConnectionError/OSError when refused)."""
        await self._close_stream()
        tls = (self.tls or ssl.create_default_context()) if self.transport == "tls" else None
        reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=tls)
        self.connections += 1
        self._reader_task = asyncio.create_task(self._read_stream(reader), name="scaip-unit-reader")
        sockname = self._writer.get_extra_info("sockname")
        self.local = (str(sockname[0]), int(sockname[1]))

    async def _close_stream(self) -> None:
        writer, self._writer = self._writer, None
        reader_task, self._reader_task = self._reader_task, None
        if writer is not None:
            writer.close()
        if reader_task is not None:
            reader_task.cancel()
            await asyncio.gather(reader_task, return_exceptions=True)

    # --- what a unit sends ------------------------------------------------------------------------

    def next_ref(self) -> str:
        return str(next(self._refs))

    async def alarm(
        self, *, dty: str = "0003", stc: str | None = "0010", ref: str | None = None, **extra: str
    ) -> UnitAnswer:
        """An alarm (default: a personal trigger, manual alarm)."""
        body = build_mrq(ref=ref or self.next_ref(), cid=self.cid, dty=dty, stc=stc, **extra)
        return await self.message(body)

    async def heartbeat(self, *, ref: str | None = None) -> UnitAnswer:
        """The unit's periodic poll."""
        body = build_mrq(ref=ref or self.next_ref(), cid=self.cid, mty=MessageType.HEARTBEAT, dty="0002")
        return await self.message(body)

    def request(
        self,
        body: bytes,
        *,
        call_id: str | None = None,
        branch: str | None = None,
        cseq: int | None = None,
        content_type: str = MEDIA_TYPE,
        method: str = "MESSAGE",
        authorization: str | None = None,
    ) -> Request:
        """A request as this unit would send it (tests vary one part at a time)."""
        transport = self.transport.upper()
        extra = [("Contact", f"<sip:{self.cid}@{self.local[0]}:{self.local[1]};transport={self.transport}>")]
        if authorization is not None:
            extra.append(("Authorization", authorization))
        return build_request(
            method,
            f"sip:alarm@{self.host}:{self.port}",
            via=Via(
                transport, self.local[0], self.local[1], {"branch": branch or new_branch(), "rport": None}
            ),
            from_address=f"<sip:{self.cid}@{self.local[0]}>;tag={new_tag()}",
            to_address=f"<sip:alarm@{self.host}>",
            call_id=call_id or new_call_id(self.local[0]),
            cseq=cseq if cseq is not None else next(self._cseq),
            body=body,
            content_type=content_type,
            extra=extra,
        )

    async def message(self, body: bytes, **kw: Any) -> UnitAnswer:
        """Send a MESSAGE with ``body`` until answered; answer a digest challenge once."""
        request = self.request(body, **kw)
        response = await self.transact(request)
        if response.status == 401 and self.password is not None:
            challenge = response.header("WWW-Authenticate") or ""
            authorization = sip_digest.authorization(
                challenge, username=self.cid, password=self.password, method="MESSAGE", uri=request.uri
            )
            response = await self.transact(self.request(body, authorization=authorization))
        return await self._mrs_of(response)

    async def deliver(self, body: bytes, *, attempts: int = 10, pause_s: float = 1.0) -> UnitAnswer:
        """Send ``body`` until it is answered with something other than snu 6 or 4: each attempt a new
        transaction (the same ``mrq``, so the same ``ref``) after Timer F, a lost connection (opened
        again first) or a busy/hold answer, ``pause_s`` apart. TimeoutError after ``attempts``."""
        for attempt in range(attempts):
            if attempt:
                self.resends += 1
                await asyncio.sleep(pause_s)  # the unit's own resend pacing
            try:
                if not self.connected:
                    await self.connect()
                answer = await self.message(body)
            except (TimeoutError, ConnectionError, OSError):
                continue
            if not (isinstance(answer.mrs, MessageResponse) and answer.mrs.snu in TRY_AGAIN):
                return answer
        raise TimeoutError(f"not answered after {attempts} attempts")

    async def _mrs_of(self, response: Response) -> UnitAnswer:
        if response.status != 200:
            return UnitAnswer(response, None)
        if response.body:
            return UnitAnswer(response, parse_mrs(response.body))
        async with asyncio.timeout(self.wait_s):
            back = await self.messages.get()
        return UnitAnswer(response, parse_mrs(back.body), by_message=True)

    async def transact(self, request: Request) -> Response:
        """Send ``request``, retransmitting per RFC 3261 until its final response (TimeoutError at
        Timer F)."""
        data = serialise(request)
        branch = request.top_via.branch or ""
        transaction = ClientTransaction(
            reliable=self.transport != "udp", now=time.monotonic(), timeout_s=self.timer_f_s
        )
        final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[branch] = (transaction, final)
        try:
            while not transaction.done:
                if not self.connected:
                    raise ConnectionError("the connection to the receiver is closed")
                now = time.monotonic()
                if transaction.due(now):
                    self.send(data)
                    transaction.sent(now)
                try:
                    async with asyncio.timeout(max(0.0, transaction.wake_at() - time.monotonic())):
                        return await asyncio.shield(final)
                except TimeoutError:
                    transaction.tick(time.monotonic())
            raise TimeoutError("no final response (Timer F)")
        finally:
            del self._waiting[branch]

    def send(self, data: bytes) -> None:
        """Write raw bytes (a whole SIP message, or anything) to the receiver."""
        self.sent_count += 1
        if self._udp is not None:
            self._udp.sendto(data)
        elif self._writer is not None:
            self._writer.write(data)

    async def next_response(self, branch: str, timeout: float = 10.0) -> Response:
        """Wait for the next final response to a request sent with :meth:`send` (no retransmission)."""
        transaction = ClientTransaction(reliable=True, now=time.monotonic())
        final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[branch] = (transaction, final)
        try:
            async with asyncio.timeout(timeout):
                return await final
        finally:
            del self._waiting[branch]

    # --- what a unit receives ---------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        try:
            message = parse_message(data)
        except SipError:
            return
        if isinstance(message, Response):
            found = self._waiting.get(message.top_via.branch or "")
            if found is not None:
                transaction, final = found
                transaction.received(message.status)
                if message.status >= 200 and not final.done():
                    final.set_result(message)
            return
        if message.method == "MESSAGE":
            self.send(serialise(response_to(message, 200, to_tag=new_tag())))
            self.messages.put_nowait(message)

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                framer.feed(data)
                while not isinstance(item := framer.next_message(), NeedData):
                    if not isinstance(item, KeepAlive):
                        self.received(item)
        except (ConnectionError, OSError):
            pass
        finally:
            # RFC 3261 §17.1.4: a transport error ends the transactions waiting on this connection.
            if self._writer is not None:
                self._writer.close()
            for _, final in self._waiting.values():
                if not final.done():
                    final.set_exception(ConnectionError("the receiver closed the connection"))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, unit: ScaipUnit) -> None:
        self._unit = unit

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._unit.received(data)
