"""The DC-09 receiver under attack, on a real bridge over real TCP and UDP sockets: endless lines, idle
and surplus connections, floods of large datagrams, frames whose CRC and length are right but whose
content is hostile, replays, and arbitrary byte streams (Hypothesis). After each, the receiver still ACKs
a normal alarm promptly and /healthz stays ready; each limit hit is counted with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge, eventually, make_config, postgres_database, running_bridge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alarm_centre.alerts.intake import IngestResult
from bridge.transports.dc09 import DC09_RECEIVER, MAX_EVENTS_PER_FRAME, Dc09Receiver
from bridge.transports.guard import DATAGRAMS_OVERLOADED, IDLE_CONNECTION, TOO_MANY_CONNECTIONS
from devices.dc09 import (
    MAX_FRAME,
    ContactId,
    Frame,
    FrameSplitter,
    NeedData,
    Qualifier,
    Token,
    build_frame,
    contact_id_data,
    parse_frame,
    parse_key,
)
from devices.events import DeviceEvent
from devices.serial_frame import crc16

KEY = parse_key("000102030405060708090A0B0C0D0E0F")
#: How long a normal alarm may take to be ACKed after an attack (generous for 2 shared cores).
PROMPT_S = 5.0


@pytest.fixture
async def dc09_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    config = make_config(
        tmp_path,
        TELECARE_DC09__LISTEN="127.0.0.1:0",
        TELECARE_DC09__MAX_CONNECTIONS="8",
        TELECARE_DC09__MAX_DATAGRAMS="4",
    )
    async with running_bridge(config) as running:
        yield running


@pytest.fixture
async def impatient_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A receiver that closes a connection idle for half a second."""
    config = make_config(tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0", TELECARE_DC09__IDLE_S="0.5")
    async with running_bridge(config) as running:
        yield running


def receiver(b: RunningBridge) -> Dc09Receiver:
    return b.bridge.app[DC09_RECEIVER]


def rejected(b: RunningBridge, reason: str) -> float:
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_rejected_reasons_total", {"reason": reason, "transport": "dc09"}
    )
    return value or 0.0


def unhandled(b: RunningBridge) -> float:
    """Frames whose handling raised (a bug in our code, never the peer's fault)."""
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_unstored_total", {"transport": "dc09"}
    )
    return value or 0.0


def seal(body: bytes) -> bytes:
    """LF, CRC, length, ``body``, CR: a frame whose CRC and length are right, whatever ``body`` holds."""
    return b"\n" + f"{crc16(body):04X}{len(body):04X}".encode() + body + b"\r"


def pendant(account: str, sequence: int, **kw: Any) -> bytes:
    data = contact_id_data(account, ContactId(Qualifier.NEW, 101, "01", "001"))
    return build_frame(token=Token.ADM_CID, sequence=sequence, account=account, data=data, **kw)


class Link:
    """One raw TCP connection to the receiver; answers read frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._splitter = FrameSplitter()

    @classmethod
    async def open(cls, b: RunningBridge) -> Link:
        return cls(*await asyncio.open_connection("127.0.0.1", receiver(b).port))

    async def answer(self, timeout: float = PROMPT_S) -> bytes:
        async with asyncio.timeout(timeout):
            while isinstance(item := self._splitter.next_frame(), NeedData):
                data = await self.reader.read(4096)
                if not data:
                    raise ConnectionError("closed by the receiver")
                self._splitter.feed(data)
        assert isinstance(item, bytes)
        return item

    async def closed(self, timeout: float = PROMPT_S) -> bool:
        """Whether the receiver closes the connection (reading what it still sends)."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(4096):
                pass
        return True

    def close(self) -> None:
        self.writer.close()


def token_of(answer: bytes, key: bytes | None = None) -> Token | None:
    frame = parse_frame(answer, now=datetime.now(UTC), keys=lambda _a: key, window=None)
    return frame.token if isinstance(frame, Frame) else None


async def alerts_of(b: RunningBridge, device_id: str) -> list[dict[str, Any]]:
    status, body = await b.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == device_id]


async def still_serving(b: RunningBridge, account: str = "FEED", sequence: int = 1) -> None:
    """A normal alarm on a fresh connection is ACKed promptly, and /healthz is ready."""
    link = await Link.open(b)
    try:
        link.writer.write(pendant(account, sequence))
        assert token_of(await link.answer()) is Token.ACK
    finally:
        link.close()
    assert await alerts_of(b, f"dc09-{account}")
    status, health = await b.call("GET", "/healthz", user=None)
    assert status == 200, health


async def test_an_endless_line_is_refused_once_dropped_and_the_connection_serves_on(
    dc09_bridge: RunningBridge,
) -> None:
    link = await Link.open(dc09_bridge)
    for _ in range(25):  # 100 KiB, never a CR: held at most MAX_FRAME bytes at a time
        link.writer.write(b"A" * 4096)
    await link.writer.drain()
    assert token_of(await link.answer()) is Token.NAK  # one NAK for the whole run, not one per 4 KiB
    link.writer.write(b"\r" + pendant("ABC", 7))
    assert token_of(await link.answer()) is Token.ACK
    link.close()
    assert rejected(dc09_bridge, "malformed") == 1.0
    await still_serving(dc09_bridge)


async def test_an_idle_connection_is_closed_counted_and_logged(
    impatient_bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    dc09_bridge = impatient_bridge
    silent = await Link.open(dc09_bridge)
    slow = await Link.open(dc09_bridge)
    slow.writer.write(pendant("ABC", 1)[:20])  # half a frame, then nothing (slowloris)
    assert await silent.closed() and await slow.closed()
    assert rejected(dc09_bridge, IDLE_CONNECTION) == 2.0
    assert "dc09.idle_s" in caplog.text
    assert receiver(dc09_bridge)._guard.connections == 0
    await still_serving(dc09_bridge)


async def test_at_the_connection_cap_the_one_silent_longest_makes_room(dc09_bridge: RunningBridge) -> None:
    oldest = await Link.open(dc09_bridge)
    await eventually(lambda: _connections(dc09_bridge, 1))
    busy = await Link.open(dc09_bridge)
    busy.writer.write(pendant("ABC", 1))  # this one has made progress: kept
    assert token_of(await busy.answer()) is Token.ACK
    held = [await Link.open(dc09_bridge) for _ in range(6)]
    await eventually(lambda: _connections(dc09_bridge, 8))
    # A panel arrives while every slot is taken: it is served, the oldest silent connection goes.
    newcomer = await Link.open(dc09_bridge)
    newcomer.writer.write(pendant("ABD", 1))
    assert token_of(await newcomer.answer()) is Token.ACK
    assert await oldest.closed(timeout=2.0)
    assert rejected(dc09_bridge, TOO_MANY_CONNECTIONS) == 1.0
    busy.writer.write(pendant("ABC", 2))
    assert token_of(await busy.answer()) is Token.ACK
    for link in [oldest, busy, newcomer, *held]:
        link.close()
    await eventually(lambda: _connections(dc09_bridge, 0))
    await still_serving(dc09_bridge)


async def test_a_peer_dribbling_bytes_without_a_whole_frame_is_closed(
    impatient_bridge: RunningBridge,
) -> None:
    link = await Link.open(impatient_bridge)
    frame = pendant("ABC", 1)
    with contextlib.suppress(ConnectionError):
        for byte in frame[:-1] * 4:  # one byte every 0.1 s, never the CR: the attack's own pace
            link.writer.write(bytes([byte]))
            await link.writer.drain()
            if link.reader.at_eof():
                break
            await asyncio.sleep(0.1)
    assert await link.closed()
    assert rejected(impatient_bridge, IDLE_CONNECTION) == 1.0
    link.close()
    await still_serving(impatient_bridge)


async def _connections(b: RunningBridge, n: int) -> bool:
    return receiver(b)._guard.connections == n


async def test_a_peer_that_never_reads_its_naks_is_closed(impatient_bridge: RunningBridge) -> None:
    dc09_bridge = impatient_bridge
    sock = socket.create_connection(("127.0.0.1", receiver(dc09_bridge).port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    garbage = b"\nnot a frame\r" * 20_000  # 260 KB of refusals, each answered by a 50-byte NAK
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):  # closed by the receiver mid-send: what this test wants
        await loop.sock_sendall(sock, garbage)
    await eventually(lambda: _rejected_at_least(dc09_bridge, IDLE_CONNECTION, 1), timeout=20)
    sock.close()
    await still_serving(dc09_bridge)


async def _rejected_at_least(b: RunningBridge, reason: str, n: float) -> bool:
    return rejected(b, reason) >= n


async def test_a_flood_of_64k_garbage_datagrams_is_refused_and_the_receiver_serves_on(
    dc09_bridge: RunningBridge,
) -> None:
    port = receiver(dc09_bridge).port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = 0
    for i in range(300):
        try:
            sock.sendto(bytes([i % 256]) * 65_000, ("127.0.0.1", port))
            sent += 1
        except BlockingIOError:
            await asyncio.sleep(0)
    sock.close()
    assert sent > 0
    await eventually(lambda: _handled_none(dc09_bridge))
    assert unhandled(dc09_bridge) == 0.0
    await still_serving(dc09_bridge)


async def _handled_none(b: RunningBridge) -> bool:
    return receiver(b)._guard.datagrams == 0


async def test_datagrams_beyond_the_in_flight_cap_are_dropped_counted_and_resent_ones_stored(
    dc09_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    intake = dc09_bridge.bridge.intake
    real_submit = intake.submit

    async def slow(event: DeviceEvent) -> IngestResult:  # the injected fault: a store that stalls
        await gate.wait()
        return await real_submit(event)

    monkeypatch.setattr(intake, "submit", slow)
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Panel(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        Panel, remote_addr=("127.0.0.1", receiver(dc09_bridge).port)
    )
    frames = [pendant(f"{100 + n}", n + 1) for n in range(10)]
    for frame in frames:
        transport.sendto(frame)
    await eventually(lambda: _rejected_at_least(dc09_bridge, DATAGRAMS_OVERLOADED, 6))
    assert receiver(dc09_bridge)._guard.datagrams == 4
    gate.set()
    got = [await _next(answers) for _ in range(4)]
    assert all(token_of(a) is Token.ACK for a in got)
    for frame in frames:  # the panels resend the ones not ACKed: all stored in the end
        transport.sendto(frame)
        assert token_of(await _next(answers)) is Token.ACK
    transport.close()
    for n in range(10):
        assert await alerts_of(dc09_bridge, f"dc09-{100 + n}")


async def _next(answers: asyncio.Queue[bytes]) -> bytes:
    async with asyncio.timeout(PROMPT_S):
        return await answers.get()


def _hostile_bodies() -> dict[str, bytes]:
    head = b'"ADM-CID"0001L0#ABC['
    many_blocks = b"".join(b"[A%d]" % (i % 10) for i in range((MAX_FRAME - 60) // 4))
    return {
        "nul_in_data": head + b"#ABC|1101 01\x00001]",
        "non_ascii_in_data": head + b"#ABC|1101 01 \xff\xfe1]",
        "control_characters": head + b"#ABC|1101\x1b[2J 01 001]",
        "nested_brackets": head + b"#ABC|[[[1101]]] 01 001]",
        "unbalanced_brackets": head + b"#ABC|1101 01 001]]]]][[[[",
        "thousand_extended_blocks": head + b"#ABC|1101 01 001]" + many_blocks,
        "account_of_17_digits": b'"ADM-CID"0001L0#0123456789ABCDEF0[#0123456789ABCDEF0|1101 01 001]',
        "sequence_of_5_digits": b'"ADM-CID"99999L0#ABC[#ABC|1101 01 001]',
        "receiver_of_7_digits": b'"ADM-CID"0001R1234567L0#ABC[#ABC|1101 01 001]',
        "long_id": b'"' + b"X" * 200 + b'"0001L0#ABC[]',
        "a_thousand_bars": head + b"|" * 3000 + b"]",
        "bad_timestamp": head + b"#ABC|1101 01 001]_99:99:99,13-45-0000",
        "timestamp_only_punctuation": head + b"#ABC|1101 01 001]_::,,--",
        "encrypted_odd_hex": b'"*ADM-CID"0001L0#ABC[' + b"0" * 31,
        "encrypted_non_hex": b'"*ADM-CID"0001L0#ABC[' + b"Z" * 32,
        "answer_sent_to_us": b'"ACK"0001L0#ABC[]',
        "nak_sent_to_us": b'"NAK"0000R0L0A0[]_00:00:00,01-01-2000',
        "empty_body": b"",
        "max_length_garbage": b"#" * MAX_FRAME,
    }


@pytest.mark.parametrize("name", sorted(_hostile_bodies()))
async def test_hostile_content_with_right_crc_and_length_is_answered_and_never_crashes(
    dc09_bridge: RunningBridge, name: str
) -> None:
    link = await Link.open(dc09_bridge)
    link.writer.write(seal(_hostile_bodies()[name]))
    answer = await link.answer()
    assert token_of(answer) in (Token.ACK, Token.NAK)  # an answer, whatever the content
    link.writer.write(pendant("ABC", 2))  # and the same connection serves on
    assert token_of(await link.answer()) is Token.ACK
    link.close()
    assert unhandled(dc09_bridge) == 0.0
    await still_serving(dc09_bridge)


async def test_a_frame_of_a_thousand_sia_events_is_one_unknown_signal_not_a_thousand_writes(
    dc09_bridge: RunningBridge,
) -> None:
    data = "#ABC|Nri1/" + "/".join(["MA001"] * 600)
    frame = build_frame(token=Token.SIA_DCS, sequence=3, account="ABC", data=data)
    link = await Link.open(dc09_bridge)
    link.writer.write(frame)
    assert token_of(await link.answer()) is Token.ACK
    link.close()
    alerts = await alerts_of(dc09_bridge, "dc09-ABC")
    assert [a["type"] for a in alerts] == ["unknown_signal"]
    writes = dc09_bridge.bridge.metrics.registry.get_sample_value(
        "telecare_events_received_total",
        {"type": "unknown_signal", "result": "accepted", "transport": "dc09"},
    )
    assert writes == 1.0
    # At the limit, every event is still its own.
    few = "#ABD|Nri1/" + "/".join(["MA001"] * MAX_EVENTS_PER_FRAME)
    link = await Link.open(dc09_bridge)
    link.writer.write(build_frame(token=Token.SIA_DCS, sequence=4, account="ABD", data=few))
    assert token_of(await link.answer()) is Token.ACK
    link.close()
    assert [a["type"] for a in await alerts_of(dc09_bridge, "dc09-ABD")] == ["pendant"]


async def test_garbage_is_refused_before_any_registry_read(
    dc09_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_unit = receiver(dc09_bridge)._unit

    async def counted(account: str) -> Any:
        reads.append(account)
        return await real_unit(account)

    monkeypatch.setattr(receiver(dc09_bridge), "_unit", counted)
    link = await Link.open(dc09_bridge)
    good = pendant("ABC", 5)
    bad_crc = good[:1] + b"0000" + good[5:]
    for _ in range(20):
        link.writer.write(bad_crc)
        assert token_of(await link.answer()) is Token.NAK
    assert reads == []
    link.writer.write(good)
    assert token_of(await link.answer()) is Token.ACK
    link.close()
    assert reads == ["ABC"]


async def test_a_replayed_encrypted_frame_collapses_inside_the_window_and_is_refused_outside(
    dc09_bridge: RunningBridge,
) -> None:
    status, body = await dc09_bridge.call(
        "POST",
        "/api/v1/devices",
        user="ian",
        role="installer",
        json={
            "id": "panel-key",
            "kind": "ip_unit",
            "channel": "dc09",
            "dc09_account": "5678",
            "dc09_key": KEY.hex(),
        },
    )
    assert status == 201, body
    now = datetime.now(UTC)
    captured = pendant("5678", 42, timestamp=now, key=KEY)
    for _ in range(3):  # the original, then an eavesdropper's replays inside the time window
        link = await Link.open(dc09_bridge)
        link.writer.write(captured)
        assert token_of(await link.answer(), KEY) is Token.ACK
        link.close()
    alerts = await alerts_of(dc09_bridge, "panel-key")
    assert [(a["type"], a["repeat_count"]) for a in alerts] == [("pendant", 0)]
    # Captured a minute ago: outside the 40 s window, NAKed as stale (and nothing new stored).
    old = pendant("5678", 43, timestamp=now - timedelta(seconds=60), key=KEY)
    link = await Link.open(dc09_bridge)
    link.writer.write(old)
    assert token_of(await link.answer()) is Token.NAK
    link.close()
    assert rejected(dc09_bridge, "stale_timestamp") == 1.0
    assert len(await alerts_of(dc09_bridge, "panel-key")) == 1


async def test_arbitrary_byte_streams_never_break_the_tcp_listener(dc09_bridge: RunningBridge) -> None:
    """Property: any bytes, in any chunks, on a TCP connection: no exception escapes the handler, and
    after a CR a valid frame on the same connection is ACKed."""
    port = receiver(dc09_bridge).port
    sequence = iter(range(1, 10_000))

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        chunks=st.lists(
            st.one_of(
                st.binary(max_size=600),
                st.sampled_from([b"\r", b"\n", b"\x00", b'"ADM-CID"', b"[", b"]", b"#ABC|", b"*"]),
                st.builds(seal, st.binary(max_size=200)),
            ),
            max_size=12,
        )
    )
    def property_(chunks: list[bytes]) -> None:
        seq = next(sequence)
        with socket.create_connection(("127.0.0.1", port), timeout=PROMPT_S) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.sendall(b"\r" + pendant("ABC", seq))
            splitter = FrameSplitter()
            while True:
                item = splitter.next_frame()
                if isinstance(item, NeedData):
                    data = sock.recv(4096)
                    assert data, "the receiver closed the connection"
                    splitter.feed(data)
                    continue
                assert isinstance(item, bytes)
                parsed = parse_frame(item, now=datetime.now(UTC), window=None)
                if isinstance(parsed, Frame) and parsed.token is Token.ACK and parsed.sequence == seq:
                    return

    await asyncio.to_thread(property_)
    assert unhandled(dc09_bridge) == 0.0
    await still_serving(dc09_bridge)


async def test_no_nak_bigger_than_a_udp_datagram_so_a_spoofed_source_gets_no_amplification(
    dc09_bridge: RunningBridge,
) -> None:
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        Peer, remote_addr=("127.0.0.1", receiver(dc09_bridge).port)
    )
    for tiny in (b"\n", b"x", b"\n0000", b"\n00000000\r"):  # each would get a 47-byte NAK
        transport.sendto(tiny)
    await eventually(lambda: _rejected_at_least(dc09_bridge, "malformed", 4))
    # An honest panel's refused frame (bad CRC, stale time) is longer than the NAK: it is still NAKed.
    good = pendant("ABC", 9, timestamp=datetime.now(UTC) - timedelta(minutes=5))
    transport.sendto(good)
    answer = await _next(answers)
    assert token_of(answer) is Token.NAK and len(answer) <= len(good)
    assert answers.empty()  # nothing came back for the tiny ones
    transport.close()
    await still_serving(dc09_bridge)


async def test_hostile_content_on_postgresql_too(tmp_path: Path) -> None:
    """The largest and oddest data blocks reach the store as unknown signals: PostgreSQL takes them too
    (index row limits, NULs and encodings are where the two stores differ)."""
    async with postgres_database() as url:
        config = make_config(tmp_path, TELECARE_DC09__LISTEN="127.0.0.1:0", TELECARE_STORE__URL=url)
        async with running_bridge(config) as b:
            link = await Link.open(b)
            bodies = [
                *_hostile_bodies().values(),
                b'"SIA-DCS"0005L0#ABC[#ABC|Nri1/' + b"/".join([b"MA001"] * 600) + b"]",
            ]
            for body in bodies:
                link.writer.write(seal(body))
                assert token_of(await link.answer()) in (Token.ACK, Token.NAK), body[:40]
            link.close()
            assert unhandled(b) == 0.0
            await still_serving(b)


def test_the_open_files_limit_is_raised_to_fit_the_connections() -> None:
    """systemd's soft limit of 1024 open files is below max_connections plus the rest: past it, accept
    fails with EMFILE and the store and API run out of descriptors too."""
    import logging
    import resource

    from bridge.transports.guard import HEADROOM_FDS, make_room_for

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1000 + HEADROOM_FDS:
        pytest.skip(f"the hard limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        raised = make_room_for(1000, logging.getLogger("test"))
        assert raised >= 1000 + HEADROOM_FDS
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_frame_full_of_extended_blocks_reads_only_the_first_few() -> None:
    """~1300 ``[A]`` blocks fit in one frame; each read costs an object (4 ms a frame before)."""
    from devices.dc09 import MAX_EXTENDED

    body = (b'"ADM-CID"0001L0#ABC[#ABC|1101 01 001]' + b"[A1]" * 1000)[:MAX_FRAME]
    frame = parse_frame(seal(body), now=datetime.now(UTC), window=None)
    assert isinstance(frame, Frame) and len(frame.extended) == MAX_EXTENDED


async def test_a_flood_of_refusals_is_counted_in_full_and_logged_in_part(
    dc09_bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    from bridge.transports.guard import LOG_BURST

    link = await Link.open(dc09_bridge)
    good = pendant("ABC", 5)
    bad_crc = good[:1] + b"0000" + good[5:]
    for _ in range(100):
        link.writer.write(bad_crc)
        assert token_of(await link.answer()) is Token.NAK
    link.close()
    assert rejected(dc09_bridge, "bad_crc") == 100.0
    logged = [r for r in caplog.records if "refused: bad_crc" in r.getMessage()]
    assert len(logged) == LOG_BURST


def test_the_log_limiter_says_how_many_lines_it_left_out() -> None:
    from bridge.transports.guard import LogLimiter

    now = [0.0]
    limiter = LogLimiter(burst=2, window_s=60.0, clock=lambda: now[0])
    assert [limiter.allow("x") for _ in range(5)] == [
        (True, 0),
        (True, 0),
        (False, 0),
        (False, 0),
        (False, 0),
    ]
    assert limiter.allow("y") == (True, 0)  # per reason
    now[0] = 61.0
    assert limiter.allow("x") == (True, 3)


async def test_a_store_outage_under_load_does_not_flood_the_log(
    dc09_bridge: RunningBridge, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alarm_centre.alerts.intake import StoreUnavailable
    from bridge.transports.guard import LOG_BURST

    async def down(event: DeviceEvent) -> IngestResult:  # the injected fault: the store cannot commit
        raise StoreUnavailable("the database is down")

    monkeypatch.setattr(dc09_bridge.bridge.intake, "submit", down)
    link = await Link.open(dc09_bridge)
    for n in range(60):
        link.writer.write(pendant("ABC", n + 1))

    async def all_tried() -> bool:
        value = dc09_bridge.bridge.metrics.registry.get_sample_value(
            "telecare_events_unstored_total", {"transport": "dc09"}
        )
        return value == 60.0

    await eventually(all_tried)
    link.close()
    assert len([r for r in caplog.records if "not stored, not ACKed" in r.getMessage()]) == LOG_BURST
    monkeypatch.undo()
    await still_serving(dc09_bridge)


async def test_arbitrary_datagrams_never_break_the_udp_listener(dc09_bridge: RunningBridge) -> None:
    """Property: any datagram is answered or not, never crashes; a valid frame after it is ACKed."""
    port = receiver(dc09_bridge).port
    sequence = iter(range(1, 10_000))

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(datagram=st.one_of(st.binary(max_size=5000), st.builds(seal, st.binary(max_size=300))))
    def property_(datagram: bytes) -> None:
        seq = next(sequence)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(PROMPT_S)
            sock.sendto(datagram, ("127.0.0.1", port))
            sock.sendto(pendant("ABC", seq), ("127.0.0.1", port))
            while True:
                answer = sock.recv(65536)
                parsed = parse_frame(answer, now=datetime.now(UTC), window=None)
                if isinstance(parsed, Frame) and parsed.token is Token.ACK and parsed.sequence == seq:
                    return

    await asyncio.to_thread(property_)
    assert unhandled(dc09_bridge) == 0.0
