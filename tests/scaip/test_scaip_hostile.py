"""The SCAIP receiver under attack, on a real bridge over real UDP and TCP sockets: endless headers, huge
Content-Length, idle and surplus connections, datagram floods, malformed-but-plausible SIP, reflection to a
third party, amplification by answer MESSAGEs, digest replays, and arbitrary byte streams (Hypothesis).
After each, the receiver still answers a normal alarm promptly and /healthz stays ready."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge, eventually, make_config, running_bridge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alarm_centre.alerts.intake import IngestResult
from bridge.transports.guard import DATAGRAMS_OVERLOADED, IDLE_CONNECTION, TOO_MANY_CONNECTIONS
from bridge.transports.scaip import (
    ANSWER_MESSAGES_OVERLOADED,
    MAX_ANSWER_MESSAGES_PER_HOST,
    SCAIP_RECEIVER,
    ScaipReceiver,
)
from devices import sip_digest
from devices.events import DeviceEvent
from devices.scaip import MEDIA_TYPE, MessageResponse, Snu, build_mrq, parse_mrs
from devices.sip import (
    MAX_HEADER_BYTES,
    Request,
    Response,
    Via,
    build_request,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    response_to,
    serialise,
)

PROMPT_S = 5.0


def _config(tmp_path: Path, **extra: str) -> Any:
    return make_config(
        tmp_path,
        TELECARE_SCAIP__LISTEN="127.0.0.1:0",
        TELECARE_SCAIP__MAX_CONNECTIONS="8",
        TELECARE_SCAIP__MAX_DATAGRAMS="4",
        **extra,
    )


@pytest.fixture
async def scaip_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    async with running_bridge(_config(tmp_path)) as running:
        yield running


@pytest.fixture
async def impatient_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A receiver that closes a connection idle for half a second."""
    async with running_bridge(_config(tmp_path, TELECARE_SCAIP__IDLE_S="0.5")) as running:
        yield running


@pytest.fixture
async def message_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A receiver that sends every answer as a MESSAGE of its own."""
    async with running_bridge(_config(tmp_path, TELECARE_SCAIP__ANSWER="message")) as running:
        yield running


def receiver(b: RunningBridge) -> ScaipReceiver:
    return b.bridge.app[SCAIP_RECEIVER]


def rejected(b: RunningBridge, reason: str) -> float:
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_rejected_reasons_total", {"reason": reason, "transport": "scaip"}
    )
    return value or 0.0


def unhandled(b: RunningBridge) -> float:
    """Messages whose handling raised (a bug in our code, never the peer's fault)."""
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_unstored_total", {"transport": "scaip"}
    )
    return value or 0.0


def message(
    b: RunningBridge,
    cid: str,
    ref: str,
    *,
    via: tuple[str, str, int] = ("UDP", "127.0.0.1", 5999),
    body: bytes | None = None,
    extra: Iterable[tuple[str, str]] = (),
    stc: str = "0010",
) -> Request:
    transport, host, port = via
    return build_request(
        "MESSAGE",
        f"sip:alarm@127.0.0.1:{receiver(b).port}",
        via=Via(transport, host, port, {"branch": new_branch(), "rport": None}),
        from_address=f"<sip:{cid}@127.0.0.1>;tag={new_tag()}",
        to_address="<sip:alarm@127.0.0.1>",
        call_id=new_call_id("127.0.0.1"),
        cseq=1,
        body=build_mrq(ref=ref, cid=cid, dty="0003", stc=stc) if body is None else body,
        content_type=MEDIA_TYPE,
        extra=list(extra),
    )


class Udp(asyncio.DatagramProtocol):
    """A UDP socket of the test: what arrives is queued."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.arrived.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, b: RunningBridge, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", receiver(b).port))

    async def next(self, timeout: float = PROMPT_S) -> Request | Response:
        async with asyncio.timeout(timeout):
            return parse_message(await self.arrived.get())


async def udp_socket() -> Udp:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
    return protocol


async def still_serving(b: RunningBridge, cid: str = "4679999", ref: str = "OK1") -> None:
    """A normal alarm over UDP is answered snu 0 promptly, and /healthz is ready."""
    udp = await udp_socket()
    try:
        udp.send(b, serialise(message(b, cid, ref, via=("UDP", "127.0.0.1", udp.port))))
        answer = await udp.next()
        assert isinstance(answer, Response) and answer.status == 200
        body = answer.body
        if not body:  # answered by a MESSAGE of its own (scaip.answer: message)
            own = await udp.next()
            assert isinstance(own, Request) and own.method == "MESSAGE"
            udp.send(b, serialise(response_to(own, 200, to_tag="t")))
            body = own.body
        mrs = parse_mrs(body)
        assert isinstance(mrs, MessageResponse) and mrs.snu is Snu.OK
    finally:
        assert udp.transport is not None
        udp.transport.close()
    status, health = await b.call("GET", "/healthz", user=None)
    assert status == 200, health


async def alerts_of(b: RunningBridge, device_id: str) -> list[dict[str, Any]]:
    status, body = await b.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == device_id]


async def closed(reader: asyncio.StreamReader, timeout: float = PROMPT_S) -> bool:
    async with asyncio.timeout(timeout):
        while await reader.read(65536):
            pass
    return True


async def _at_least(b: RunningBridge, reason: str, n: float) -> bool:
    return rejected(b, reason) >= n


# --- streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(
            b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X-Pad: " + b"a" * (4 * MAX_HEADER_BYTES), id="endless_header"
        ),
        pytest.param(b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 5000, id="endless_headers"),
        pytest.param(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 999999999\r\n\r\n", id="huge_length"),
        pytest.param(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\n", id="negative_length"),
        pytest.param(b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", id="no_length_on_a_stream"),
    ],
)
async def test_a_stream_that_cannot_be_framed_is_closed_and_counted(
    scaip_bridge: RunningBridge, stream: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver(scaip_bridge).port)
    writer.write(stream)
    assert await closed(reader)
    writer.close()
    assert rejected(scaip_bridge, "sip_malformed") == 1.0
    assert unhandled(scaip_bridge) == 0.0
    await still_serving(scaip_bridge)


async def test_idle_and_slow_connections_are_closed_counted_and_logged(
    impatient_bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    b = impatient_bridge
    port = receiver(b).port
    silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
    body_r, body_w = await asyncio.open_connection("127.0.0.1", port)
    request = serialise(message(b, "4670001", "S1", via=("TCP", "127.0.0.1", 5999)))
    body_w.write(request[:-20])  # the headers and most of the body, then nothing (slowloris)
    assert await closed(silent_r) and await closed(body_r)
    silent_w.close()
    body_w.close()
    assert rejected(b, IDLE_CONNECTION) == 2.0
    assert "scaip.idle_s" in caplog.text
    assert receiver(b)._guard.connections == 0
    await still_serving(b)


async def test_at_the_connection_cap_the_one_silent_longest_makes_room(scaip_bridge: RunningBridge) -> None:
    port = receiver(scaip_bridge).port
    oldest = await asyncio.open_connection("127.0.0.1", port)

    async def count(n: int) -> bool:
        return receiver(scaip_bridge)._guard.connections == n

    await eventually(lambda: count(1))
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(7)]
    await eventually(lambda: count(8))
    # A unit arrives while an attacker holds every slot: it is served, the oldest silent one goes.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(serialise(message(scaip_bridge, "4670002", "C1", via=("TCP", "127.0.0.1", 5999))))
    async with asyncio.timeout(PROMPT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"SIP/2.0 200")
    assert await closed(oldest[0], timeout=2.0)
    assert rejected(scaip_bridge, TOO_MANY_CONNECTIONS) == 1.0
    assert receiver(scaip_bridge)._guard.connections == 8
    for _, w in [oldest, *held, (reader, writer)]:
        w.close()
    await eventually(lambda: count(0))
    await still_serving(scaip_bridge)


# --- datagrams ----------------------------------------------------------------------------------


async def test_a_flood_of_64k_garbage_datagrams_leaves_the_receiver_serving(
    scaip_bridge: RunningBridge,
) -> None:
    port = receiver(scaip_bridge).port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for i in range(300):
        try:
            sock.sendto(bytes([i % 256]) * 65_000, ("127.0.0.1", port))
        except BlockingIOError:
            await asyncio.sleep(0)
    sock.close()

    async def idle() -> bool:
        return receiver(scaip_bridge)._guard.datagrams == 0

    await eventually(idle)
    assert unhandled(scaip_bridge) == 0.0
    await still_serving(scaip_bridge)


async def test_datagrams_beyond_the_in_flight_cap_are_dropped_and_retransmissions_stored(
    scaip_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    intake = scaip_bridge.bridge.intake
    real_submit = intake.submit

    async def slow(event: DeviceEvent) -> IngestResult:  # the injected fault: a store that stalls
        await gate.wait()
        return await real_submit(event)

    monkeypatch.setattr(intake, "submit", slow)
    udp = await udp_socket()
    requests = [
        serialise(message(scaip_bridge, f"46710{n:02d}", f"F{n}", via=("UDP", "127.0.0.1", udp.port)))
        for n in range(10)
    ]
    for data in requests:
        udp.send(scaip_bridge, data)
    await eventually(lambda: _at_least(scaip_bridge, DATAGRAMS_OVERLOADED, 6))
    assert receiver(scaip_bridge)._guard.datagrams == 4
    gate.set()
    for _ in range(4):
        answer = await udp.next()
        assert isinstance(answer, Response) and answer.status == 200
    for data in requests:  # the units retransmit: every alarm is stored in the end
        udp.send(scaip_bridge, data)
        answer = await udp.next()
        assert isinstance(answer, Response) and answer.status == 200
    for n in range(10):
        assert await alerts_of(scaip_bridge, f"scaip-46710{n:02d}")


def _plausible() -> dict[str, tuple[bytes, int | None]]:
    """Malformed-but-plausible SIP over UDP, and the status each deserves (None: dropped, no answer)."""
    mrq = build_mrq(ref="P1", cid="4672000", dty="0003", stc="0010")

    def msg(*headers: str, body: bytes = mrq, start: str = "MESSAGE sip:alarm@127.0.0.1 SIP/2.0") -> bytes:
        return ("\r\n".join([start, *headers]) + "\r\n\r\n").encode() + body

    via = "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{n};rport"
    base = ["From: <sip:4672000@x>;tag=1", "To: <sip:alarm@y>", "Call-ID: c{n}", "CSeq: 1 MESSAGE"]
    ctype = f"Content-Type: {MEDIA_TYPE}"
    clen = f"Content-Length: {len(mrq)}"
    cases: dict[str, tuple[list[str], bytes, int | None]] = {
        "conflicting_content_lengths": ([via, *base, ctype, "Content-Length: 5", clen], mrq, 400),
        "two_call_ids": ([via, *base, "Call-ID: other", ctype, clen], mrq, 400),
        "two_cseqs_differing": ([via, *base, "CSeq: 2 INVITE", ctype, clen], mrq, 400),
        "no_via": ([*base, ctype, clen], mrq, None),
        "no_call_id": ([via, *base[:2], base[3], ctype, clen], mrq, 400),
        "no_cseq": ([via, *base[:3], ctype, clen], mrq, 400),
        "cseq_method_differs": ([via, *base[:3], "CSeq: 1 INVITE", ctype, clen], mrq, 400),
        "cseq_out_of_range": ([via, *base[:3], "CSeq: 99999999999 MESSAGE", ctype, clen], mrq, 400),
        "folded_header": ([via, *base, "Content-Type:", f"  {MEDIA_TYPE}", clen], mrq, 200),
        "length_shorter_than_body": ([via, *base, ctype, "Content-Length: 40"], mrq, 200),
        "length_longer_than_body": ([via, *base, ctype, "Content-Length: 4000"], mrq, None),
        "via_garbage": (["Via: SIP/2.0/UDP :::;;;", *base, ctype, clen], mrq, None),
        "via_port_out_of_range": (
            ["Via: SIP/2.0/UDP 127.0.0.1:70000;branch=z9hG4bKq", *base, ctype, clen],
            mrq,
            None,
        ),
        "control_character": ([via, *base, "Subject: a\x07b", ctype, clen], mrq, None),
        "wrong_media_type": ([via, *base, "Content-Type: text/plain", clen], mrq, 415),
        "xml_entity_bomb": (
            [via, *base, ctype],
            b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<mrq><ref>P2</ref><cid>4672000</cid><dty>0003</dty><stc>&b;</stc></mrq>",
            200,
        ),
        "unknown_method": ([via, *base[:3], "CSeq: 1 FROB", ctype, clen], mrq, 501),
    }
    out: dict[str, tuple[bytes, int | None]] = {}
    for n, (name, (headers, body, status)) in enumerate(sorted(cases.items())):
        start = "FROB sip:alarm@127.0.0.1 SIP/2.0" if name == "unknown_method" else None
        lines = [h.replace("{n}", str(n)) for h in headers]
        out[name] = (msg(*lines, body=body, **({"start": start} if start else {})), status)
    out["non_utf8_header"] = (
        msg(via.replace("{n}", "u"), *base, "Subject: MARK", ctype, clen).replace(b"MARK", b"\xff\xfe"),
        None,
    )
    out["a_response_sent_to_us"] = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKr\r\nCSeq: 1 MESSAGE\r\n"
        b"Content-Length: 0\r\n\r\n",
        None,
    )
    out["version_3"] = (
        msg(via.replace("{n}", "v"), *base, ctype, clen, start="MESSAGE sip:a@b SIP/3.0"),
        None,
    )
    return out


@pytest.mark.parametrize("name", sorted(_plausible()))
async def test_malformed_but_plausible_sip_gets_its_answer_or_none_and_never_crashes(
    scaip_bridge: RunningBridge, name: str
) -> None:
    data, status = _plausible()[name]
    udp = await udp_socket()
    udp.send(scaip_bridge, data)
    if status is None:
        with pytest.raises(TimeoutError):
            await udp.next(timeout=0.5)
    else:
        answer = await udp.next()
        assert isinstance(answer, Response) and answer.status == status, answer
    assert udp.transport is not None
    udp.transport.close()
    assert unhandled(scaip_bridge) == 0.0
    await still_serving(scaip_bridge)


async def test_answers_go_to_the_source_never_to_a_third_party_named_in_via_or_contact(
    message_bridge: RunningBridge,
) -> None:
    b = message_bridge
    victim, attacker = await udp_socket(), await udp_socket()
    for ref, body in (("R1", None), ("R2", b"<mrq><ref>R2</ref></mrq>")):  # an alarm, and a refusal
        request = message(
            b,
            "4673000",
            ref,
            via=("UDP", "127.0.0.1", victim.port),  # Via names the victim (no rport) ...
            body=body,
            extra=[("Contact", f"<sip:x@127.0.0.1:{victim.port}>")],  # ... and so does Contact
        )
        attacker.send(b, serialise(request))
        ok = await attacker.next()
        assert isinstance(ok, Response) and ok.status == 200
        answer = await attacker.next()  # the answer MESSAGE comes to the source too
        assert isinstance(answer, Request) and answer.method == "MESSAGE"
        assert answer.top_via.branch is not None
        attacker.send(b, serialise(response_to(answer, 200, to_tag="t")))
    with pytest.raises(TimeoutError):
        await victim.next(timeout=1.0)
    await still_serving(b)


async def test_answer_messages_to_one_address_are_capped_so_a_spoofed_source_is_no_amplifier(
    message_bridge: RunningBridge,
) -> None:
    b = message_bridge
    victim = await udp_socket()  # the "spoofed" source: it never answers our MESSAGEs
    n = MAX_ANSWER_MESSAGES_PER_HOST + 4
    in_body = 0
    for i in range(n):
        victim.send(b, serialise(message(b, f"46740{i:02d}", f"A{i}", via=("UDP", "127.0.0.1", victim.port))))
        while not isinstance(got := await victim.next(), Response):
            pass  # one of our answer MESSAGEs (resent until Timer F: the victim never answers)
        assert got.status == 200
        in_body += bool(got.body)
    assert in_body == n - MAX_ANSWER_MESSAGES_PER_HOST  # the rest got their answer in the 200 OK
    assert rejected(b, ANSWER_MESSAGES_OVERLOADED) == n - MAX_ANSWER_MESSAGES_PER_HOST
    assert sum(receiver(b)._answering.values()) == MAX_ANSWER_MESSAGES_PER_HOST
    await still_serving(b, ref="OK2")


async def test_responses_are_not_much_bigger_than_requests(scaip_bridge: RunningBridge) -> None:
    """Reflection: what a spoofed request makes us send is about its own size (no amplifier)."""
    udp = await udp_socket()
    for body in (None, b"<mrq><ref>Q1</ref></mrq>", b"garbage"):
        data = serialise(
            message(scaip_bridge, "4675000", "Q0", via=("UDP", "127.0.0.1", udp.port), body=body)
        )
        udp.send(scaip_bridge, data)
        answer = serialise(await udp.next())
        assert len(answer) <= 1.5 * len(data), (len(answer), len(data))


# --- digest replays -----------------------------------------------------------------------------


async def test_a_captured_authorization_cannot_be_replayed_nor_carry_another_body(
    scaip_bridge: RunningBridge,
) -> None:
    b = scaip_bridge
    status, body = await b.call(
        "POST",
        "/api/v1/devices",
        user="ian",
        role="installer",
        json={
            "id": "unit-pw",
            "kind": "ip_unit",
            "channel": "scaip",
            "scaip_cid": "4676000",
            "scaip_password": "pa55word-x",
        },
    )
    assert status == 201, body
    udp = await udp_socket()
    via = ("UDP", "127.0.0.1", udp.port)
    first = message(b, "4676000", "D1", via=via)
    udp.send(b, serialise(first))
    challenge = await udp.next()
    assert isinstance(challenge, Response) and challenge.status == 401
    authorization = sip_digest.authorization(
        challenge.header("WWW-Authenticate") or "",
        username="4676000",
        password="pa55word-x",
        method="MESSAGE",
        uri=first.uri,
    )
    signed = message(b, "4676000", "D1", via=via, extra=[("Authorization", authorization)])
    udp.send(b, serialise(signed))
    ok = await udp.next()
    assert isinstance(ok, Response) and ok.status == 200
    assert len(await alerts_of(b, "unit-pw")) == 1
    # An eavesdropper replays the Authorization in a new transaction: the same body ...
    udp.send(b, serialise(message(b, "4676000", "D1", via=via, extra=[("Authorization", authorization)])))
    replay = await udp.next()
    assert isinstance(replay, Response) and replay.status == 401
    assert "stale=true" in (replay.header("WWW-Authenticate") or "")
    # ... or another body (a fall alarm, a restoral) under it: refused, nothing stored.
    for ref, stc in (("D2", "0009"), ("D1", "0094")):
        forged = message(b, "4676000", ref, via=via, stc=stc, extra=[("Authorization", authorization)])
        udp.send(b, serialise(forged))
        refused = await udp.next()
        assert isinstance(refused, Response) and refused.status == 401
    assert len(await alerts_of(b, "unit-pw")) == 1
    await still_serving(b)


# --- any bytes ----------------------------------------------------------------------------------


async def test_arbitrary_byte_streams_never_break_the_tcp_listener(scaip_bridge: RunningBridge) -> None:
    """Property: any bytes, in any chunks, on a TCP connection: no exception escapes the handler; then a
    valid MESSAGE is answered on the same connection or, when the stream could not be framed and the
    receiver closed it, on a new one."""
    port = receiver(scaip_bridge).port
    counter = iter(range(100_000))
    pieces = [
        b"\r\n",
        b"\r\n\r\n",
        b"MESSAGE sip:a@b SIP/2.0\r\n",
        b"Content-Length: 10\r\n",
        b"l: 3\r\n",
        b"Via: SIP/2.0/TCP h;branch=z9hG4bKx\r\n",
        b"SIP/2.0 200 OK\r\n",
    ]

    def valid(n: int) -> bytes:
        return serialise(message(scaip_bridge, "4677000", f"H{n}", via=("TCP", "127.0.0.1", 5999)))

    def answered(sock: socket.socket) -> bool:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionError):
                return False
            if not data:
                return False
            buffer += data.lstrip(b"\r\n") if not buffer else data
        return buffer.startswith(b"SIP/2.0 ")

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(chunks=st.lists(st.one_of(st.binary(max_size=400), st.sampled_from(pieces)), max_size=10))
    def property_(chunks: list[bytes]) -> None:
        n = next(counter)
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            try:
                for chunk in chunks:
                    sock.sendall(chunk)
                sock.sendall(b"\r\n\r\n" + valid(n))  # ends a header section left open, if any
            except ConnectionError:
                pass
            if answered(sock):
                return
        with socket.create_connection(("127.0.0.1", port), timeout=PROMPT_S) as sock:
            sock.sendall(valid(n + 50_000))
            assert answered(sock), "a fresh connection is not answered"

    await asyncio.to_thread(property_)
    assert unhandled(scaip_bridge) == 0.0

    async def no_connections() -> bool:
        return receiver(scaip_bridge)._guard.connections == 0

    await eventually(no_connections)
    await still_serving(scaip_bridge)


def test_answers_kept_for_retransmissions_are_bounded_in_bytes() -> None:
    """Each answer copies every Via of its request (up to ~64 KiB): the cache is bounded by bytes too."""
    from devices.sip_transaction import Arrival, ServerTransactions

    transactions = ServerTransactions(max_bytes=10 * 65_000)
    big = b"x" * 65_000
    for n in range(100):
        request = parse_message(
            f"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK{n}\r\n"
            f"From: <sip:u@h>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c{n}\r\nCSeq: 1 MESSAGE\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        assert isinstance(request, Request)
        assert transactions.arrive(request, 0.0)[0] is Arrival.NEW
        transactions.complete(request, big, 0.0)
    assert transactions.answered_bytes <= 10 * 65_000
    assert len(transactions) == 10


def _costly_shapes() -> dict[str, bytes]:
    """Headers shaped to make a parser work hard (before: up to ~45 ms of the event loop per datagram)."""
    base = b"MESSAGE sip:a@b SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\n"
    base += b"Call-ID: x\r\nCSeq: 1 MESSAGE\r\n"
    via = b"Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
    return {
        "2000_vias_in_one_header": base
        + b"Via: "
        + b",".join([b"SIP/2.0/UDP h;branch=z9hG4bKx"] * 2000)
        + b"\r\n\r\n",
        "32000_via_params": base + b"Via: SIP/2.0/UDP h;branch=z9hG4bKx" + b";a" * 32_000 + b"\r\n\r\n",
        "16000_folded_lines": base + via + b"Subject: a\r\n" + b" a\r\n" * 16_000 + b"\r\n",
        "quotes_in_vias": base
        + b"Via: "
        + b",".join([b"SIP/2.0/UDP h;branch=z9hG4bK" + b'x"' * 60] * 16)
        + b"\r\n\r\n",
        "17_via_headers": base
        + b"".join(b"Via: SIP/2.0/UDP h;branch=z9hG4bK%d\r\n" % n for n in range(17))
        + b"\r\n",
    }


@pytest.mark.parametrize("name", sorted(_costly_shapes()))
def test_costly_header_shapes_are_refused_before_they_cost(name: str) -> None:
    import time

    from devices.sip import SipError

    data = _costly_shapes()[name]
    started = time.perf_counter()
    for _ in range(20):
        with pytest.raises(SipError) as refused:
            parse_message(data)
    per_message = (time.perf_counter() - started) / 20
    assert refused.value.request is None  # unanswerable: nothing echoed back
    assert per_message < 0.010, f"{per_message * 1000:.1f} ms"


async def test_a_flood_of_costly_datagrams_leaves_the_loop_responsive(scaip_bridge: RunningBridge) -> None:
    udp = await udp_socket()
    shapes = list(_costly_shapes().values())
    for n in range(200):
        udp.send(scaip_bridge, shapes[n % len(shapes)][:65_000])
    await still_serving(scaip_bridge)
    assert unhandled(scaip_bridge) == 0.0


async def test_a_request_from_elsewhere_cannot_take_over_a_units_transaction(
    scaip_bridge: RunningBridge,
) -> None:
    """A forged request naming a unit's (predictable) branch and sent-by, sent first from another
    address, neither absorbs the unit's own request as a retransmission nor hands it the forged answer."""
    b = scaip_bridge
    unit = await udp_socket()
    loop = asyncio.get_running_loop()
    _, attacker = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.2", 0))
    real = message(b, "4678000", "T1", via=("UDP", "127.0.0.1", unit.port))
    forged_via = real.header("Via") or ""
    forged = message(b, "4678001", "X9", via=("UDP", "127.0.0.1", unit.port))
    forged = Request(
        tuple(("Via", forged_via) if k == "Via" else (k, v) for k, v in forged.headers),
        forged.body,
        forged.method,
        forged.uri,
    )
    attacker.send(b, serialise(forged))
    assert isinstance(await attacker.next(), Response)
    unit.send(b, serialise(real))
    answer = await unit.next()
    assert isinstance(answer, Response) and answer.status == 200
    mrs = parse_mrs(answer.body)
    assert isinstance(mrs, MessageResponse) and mrs.ref == "T1" and mrs.snu is Snu.OK
    assert await alerts_of(b, "scaip-4678000")


async def test_a_tls_handshake_never_finished_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections still in their handshake are not counted as connections yet: they must end."""
    from cryptography.hazmat.primitives import serialization

    from bridge.transports import scaip as scaip_transport
    from simulators.alexa import TestCertificateAuthority

    ca = TestCertificateAuthority.create("Telecare Test SIPS Root")
    server = ca.issue_server_cert("127.0.0.1")
    cert, key = tmp_path / "sips.pem", tmp_path / "sips.key"
    cert.write_bytes(server.chain_pem)
    key.write_bytes(
        server.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setattr(scaip_transport, "TLS_HANDSHAKE_S", 0.5)
    config = _config(
        tmp_path,
        TELECARE_SCAIP__TLS_LISTEN="127.0.0.1:0",
        TELECARE_SCAIP__TLS_CERT=str(cert),
        TELECARE_SCAIP__TLS_KEY=str(key),
    )
    async with running_bridge(config) as b:
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver(b).tls_port)
        writer.write(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
        assert await closed(reader, timeout=3.0)
        writer.close()
        await still_serving(b)


async def test_arbitrary_datagrams_never_break_the_udp_listener(scaip_bridge: RunningBridge) -> None:
    """Property: any datagram is answered or not, never crashes; a valid MESSAGE after it is answered."""
    port = receiver(scaip_bridge).port
    counter = iter(range(100_000))
    pieces = [
        b"MESSAGE sip:a@b SIP/2.0\r\n",
        b"Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n",
        b"\r\n\r\n",
        b"l: 5\r\n",
    ]

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(parts=st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(pieces)), max_size=8))
    def property_(parts: list[bytes]) -> None:
        n = next(counter)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(PROMPT_S)
            local = sock.getsockname()
            sock.sendto(b"".join(parts), ("127.0.0.1", port))
            valid = message(scaip_bridge, "4679000", f"U{n}", via=("UDP", "127.0.0.1", local[1]))
            sock.sendto(serialise(valid), ("127.0.0.1", port))
            while True:
                got = parse_message(sock.recv(65536))
                if isinstance(got, Response) and got.call_id == valid.call_id:
                    assert got.status == 200
                    return

    await asyncio.to_thread(property_)
    assert unhandled(scaip_bridge) == 0.0
