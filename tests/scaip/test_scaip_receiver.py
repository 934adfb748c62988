"""The SCAIP receiver on a real bridge: MESSAGEs from a simulated unit over real UDP and TCP sockets,
stored before snu 0, retransmissions and resends collapsing, refusals answered with their snu and
counted, unknown callers never dropped, the answer in the 200 OK or as a MESSAGE of its own."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest
from harness import RunningBridge, eventually, make_config, running_bridge

from alarm_centre.alerts.intake import IngestResult, StoreUnavailable
from bridge.transports.scaip import SCAIP_RECEIVER, ScaipReceiver
from devices.events import DeviceEvent
from devices.scaip import MessageResponse, Snu, VoiceMode, build_mrq
from devices.sip import serialise
from simulators.scaip_unit import ScaipUnit, UnitAnswer

CALL_RECEIVER = "sip:arc@centre.example.org"


@pytest.fixture
async def scaip_bridge(tmp_path: Path, store_url: str) -> AsyncIterator[RunningBridge]:
    config = make_config(
        tmp_path,
        TELECARE_STORE__URL=store_url,
        TELECARE_SCAIP__LISTEN="127.0.0.1:0",
        TELECARE_SCAIP__CALL_RECEIVER=CALL_RECEIVER,
    )
    async with running_bridge(config) as running:
        yield running


def receiver(b: RunningBridge) -> ScaipReceiver:
    return b.bridge.app[SCAIP_RECEIVER]


def unit(b: RunningBridge, cid: str, transport: Literal["udp", "tcp"] = "udp", **kw: Any) -> ScaipUnit:
    return ScaipUnit("127.0.0.1", receiver(b).port, cid=cid, transport=transport, **kw)


async def register(b: RunningBridge, device_id: str, cid: str, **extra: Any) -> dict[str, Any]:
    body = {"id": device_id, "kind": "ip_unit", "channel": "scaip", "scaip_cid": cid, **extra}
    status, answer = await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=body)
    assert status == 201, answer
    return dict(answer)


async def alerts_of(b: RunningBridge, device_id: str) -> list[dict[str, Any]]:
    status, body = await b.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == device_id]


def rejected(b: RunningBridge, reason: str) -> float:
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_rejected_reasons_total", {"reason": reason, "transport": "scaip"}
    )
    return value or 0.0


def mrs(answer: UnitAnswer) -> MessageResponse:
    assert isinstance(answer.mrs, MessageResponse), answer
    return answer.mrs


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_alarm_is_stored_before_snu_0_which_tells_the_unit_to_call_the_centre(
    scaip_bridge: RunningBridge, transport: Literal["udp", "tcp"]
) -> None:
    await register(scaip_bridge, "unit-ada", "4670001")
    async with unit(scaip_bridge, "4670001", transport) as u:
        answer = await u.alarm(dty="0003", stc="0010", ref="A1")
    assert answer.status == 200 and not answer.by_message
    got = mrs(answer)
    assert (got.ref, got.snu, got.mre, got.cre, got.tnu) == (
        "A1",
        Snu.OK,
        VoiceMode.DUPLEX,
        "62",
        (CALL_RECEIVER,),
    )
    # snu 0 came: the alert is already there (stored before the answer, no waiting).
    alerts = await alerts_of(scaip_bridge, "unit-ada")
    assert [(a["type"], a["unregistered"]) for a in alerts] == [("pendant", False)]
    # The timeline records that the unit was told to call (the SCAIP call_centre).
    alert_id = alerts[0]["id"]

    async def told() -> bool:
        status, body = await scaip_bridge.call("GET", f"/api/v1/alerts/{alert_id}")
        actions = [(e["action"], (e.get("detail") or {}).get("cmd")) for e in body["timeline"]]
        return status == 200 and ("command_sent", "call_centre") in actions

    await eventually(told)


async def test_a_retransmission_gets_the_same_answer_and_a_resent_mrq_collapses(
    scaip_bridge: RunningBridge,
) -> None:
    await register(scaip_bridge, "unit-bo", "4670002")
    async with unit(scaip_bridge, "4670002") as u:
        request = u.request(build_mrq(ref="R7", cid="4670002", dty="0005"))
        branch = request.top_via.branch or ""
        u.send(serialise(request))
        first = await u.next_response(branch)
        u.send(serialise(request))  # the SIP retransmission: same Via branch, Call-ID and CSeq
        again = await u.next_response(branch)
        assert serialise(again) == serialise(first)
        # The same mrq sent again in a new transaction (new Call-ID): the same alert, snu 0 again.
        resent = await u.message(build_mrq(ref="R7", cid="4670002", dty="0005"))
    assert mrs(resent).snu is Snu.OK
    alerts = await alerts_of(scaip_bridge, "unit-bo")
    assert [(a["type"], a["repeat_count"]) for a in alerts] == [("fall", 0)]
    duplicates = scaip_bridge.bridge.metrics.registry.get_sample_value(
        "telecare_events_received_total", {"type": "fall", "result": "duplicate", "transport": "scaip"}
    )
    assert duplicates == 1.0


@pytest.mark.parametrize(
    ("body", "snu", "reason"),
    [
        (b"<mrq><ref>B1</ref><cid>123</cid><dty>0003", Snu.INVALID_FORMAT, "invalid_format"),
        (b"<mrq><ref>B2</ref><cid>123</cid></mrq>", Snu.MANDATORY_MISSING, "mandatory_missing"),
        (b"<mrq><ref>B3</ref><cid>12x</cid><dty>3</dty></mrq>", Snu.WRONG_DATA, "wrong_data"),
        (b"<mrq><ref>B4</ref>" + b"<ite>x</ite>" * 400 + b"</mrq>", Snu.TOO_LONG, "too_long"),
    ],
)
async def test_bad_bodies_get_their_snu_are_counted_and_store_nothing(
    scaip_bridge: RunningBridge, body: bytes, snu: Snu, reason: str
) -> None:
    async with unit(scaip_bridge, "123") as u:
        answer = await u.message(body)
    assert answer.status == 200 and mrs(answer).snu is snu
    assert rejected(scaip_bridge, reason) == 1.0
    status, listed = await scaip_bridge.call("GET", "/api/v1/alerts?state=open")
    assert status == 200 and listed["alerts"] == []


async def test_a_body_without_ref_wrong_media_and_broken_sip_are_refused_at_the_sip_level(
    scaip_bridge: RunningBridge,
) -> None:
    async with unit(scaip_bridge, "123") as u:
        no_ref = await u.message(b"<mrq><cid>123</cid><dty>3</dty></mrq>")
        assert no_ref.status == 400
        text = await u.message(b"hello", content_type="text/plain")
        assert text.status == 415 and text.response.header("Accept") == "application/scaip+xml"
        u.send(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")  # no Via: nothing to answer to
        # A Via but no Call-ID: answered 400 (to the Via), counted.
        broken = u.request(b"<mrq/>")
        u.send(serialise(replace(broken, headers=tuple(h for h in broken.headers if h[0] != "Call-ID"))))
        assert (await u.next_response(broken.top_via.branch or "")).status == 400
        ping = await u.transact(u.request(b"", method="OPTIONS", content_type=""))
        assert ping.status == 200 and "MESSAGE" in (ping.header("Allow") or "")
        invite = await u.transact(u.request(b"", method="INVITE", content_type=""))
        assert invite.status == 405
        odd = await u.transact(u.request(b"", method="FROBNICATE", content_type=""))
        assert odd.status == 501
    assert rejected(scaip_bridge, "sip_malformed") == 2.0
    assert rejected(scaip_bridge, "unsupported_media_type") == 1.0


@pytest.mark.parametrize("cid", ["999000", "9" * 32])  # up to 32 digits, the longest a unit may send
async def test_unknown_caller_still_raises_an_alert_flagged_unregistered(
    scaip_bridge: RunningBridge, cid: str
) -> None:
    async with unit(scaip_bridge, cid) as u:
        answer = await u.alarm(dty="0003", stc="0010", ref="F" * 16)
    assert mrs(answer).snu is Snu.OK and mrs(answer).mre is VoiceMode.DUPLEX
    alerts = await alerts_of(scaip_bridge, f"scaip-{cid}")
    assert [(a["type"], a["unregistered"]) for a in alerts] == [("pendant", True)]


async def test_unknown_code_raises_an_alert_showing_the_raw_codes(scaip_bridge: RunningBridge) -> None:
    await register(scaip_bridge, "unit-cy", "4670003")
    async with unit(scaip_bridge, "4670003") as u:
        answer = await u.alarm(dty="0003", stc="0777")
        assert mrs(answer).snu is Snu.OK and mrs(answer).mre is VoiceMode.NONE
        assert mrs(await u.alarm(dty="0003", stc="0778")).snu is Snu.OK  # another code: its own alert
        assert mrs(await u.alarm(dty="0003", stc="0777")).snu is Snu.OK  # the first again: joins it
    alerts = await alerts_of(scaip_bridge, "unit-cy")
    shown = sorted(
        (a["type"], a["priority"], a["data"]["event_data"]["protocol"], a["data"]["event_data"]["code"])
        for a in alerts
    )
    assert shown == [
        ("unknown_signal", 2, "scaip", "dty 0003 stc 0777 mty ME"),
        ("unknown_signal", 2, "scaip", "dty 0003 stc 0778 mty ME"),
    ]


async def test_restores_clear_a_technical_alert_and_never_a_call_for_help(
    scaip_bridge: RunningBridge,
) -> None:
    await register(scaip_bridge, "unit-rs", "4670010")
    async with unit(scaip_bridge, "4670010") as u:
        assert mrs(await u.alarm(dty="0003", stc="0016")).snu is Snu.OK  # battery low
        assert mrs(await u.alarm(dty="0023", stc="0009")).snu is Snu.OK  # smoke
        assert mrs(await u.alarm(dty="0003", stc="0015")).snu is Snu.OK  # battery recharged: restore
        assert mrs(await u.alarm(dty="0023", stc="0094")).snu is Snu.OK  # smoke detector: restoral
    assert [a["type"] for a in await alerts_of(scaip_bridge, "unit-rs")] == ["smoke"]
    status, body = await scaip_bridge.call("GET", "/api/v1/alerts?state=resolved")
    assert status == 200
    resolved = [(a["type"], a["outcome"]) for a in body["alerts"] if a["device_id"] == "unit-rs"]
    assert resolved == [("low_battery", "cleared_by_device")]
    [smoke] = await alerts_of(scaip_bridge, "unit-rs")
    status, full = await scaip_bridge.call("GET", f"/api/v1/alerts/{smoke['id']}")
    assert status == 200
    assert "unit_restored" in [e["action"] for e in full["timeline"]]


async def test_heartbeats_feed_supervision(scaip_bridge: RunningBridge) -> None:
    await register(scaip_bridge, "unit-hb", "4670004", heartbeat_interval_s=600)
    async with unit(scaip_bridge, "4670004") as u:
        answer = await u.heartbeat()
    assert mrs(answer).snu is Snu.OK and mrs(answer).mre is None
    status, device = await scaip_bridge.call("GET", "/api/v1/devices/unit-hb")
    assert status == 200 and device["last_seen_at"] is not None and device["heartbeat_due_at"] is not None
    assert await alerts_of(scaip_bridge, "unit-hb") == []


async def test_answer_as_a_message_of_its_own_per_unit(scaip_bridge: RunningBridge) -> None:
    await register(scaip_bridge, "unit-msg", "4670005", scaip_answer="message")
    for transport in ("udp", "tcp"):
        async with unit(scaip_bridge, "4670005", transport) as u:  # type: ignore[arg-type]
            answer = await u.alarm(dty="0005", stc="0009")
        assert answer.status == 200 and answer.by_message and not answer.response.body
        assert mrs(answer).snu is Snu.OK and mrs(answer).mre is VoiceMode.DUPLEX


async def test_store_unavailable_answers_busy_and_the_resend_is_stored(
    scaip_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await register(scaip_bridge, "unit-busy", "4670006")
    intake = scaip_bridge.bridge.intake
    real_submit = intake.submit
    failures = iter([True])

    async def flaky(event: DeviceEvent) -> IngestResult:
        if next(failures, False):
            raise StoreUnavailable("injected: the store is down")
        return await real_submit(event)

    monkeypatch.setattr(intake, "submit", flaky)
    caplog.set_level(logging.WARNING, "bridge.transports.scaip")
    async with unit(scaip_bridge, "4670006") as u:
        busy = await u.alarm(ref="Z1")
        assert mrs(busy).snu is Snu.BUSY
        assert await alerts_of(scaip_bridge, "unit-busy") == []
        stored = await u.alarm(ref="Z1")  # the unit tries again later, same ref
    assert mrs(stored).snu is Snu.OK
    assert len(await alerts_of(scaip_bridge, "unit-busy")) == 1
    assert "answered busy" in caplog.text


async def test_digest_authentication_for_a_unit_with_a_password(scaip_bridge: RunningBridge) -> None:
    await register(scaip_bridge, "unit-auth", "4670007", scaip_password="s3cret-pass")
    async with unit(scaip_bridge, "4670007") as u:
        refused = await u.alarm()
        assert refused.status == 401  # no password given to the simulator: challenged, nothing stored
    assert await alerts_of(scaip_bridge, "unit-auth") == []
    async with unit(scaip_bridge, "4670007", password="wrong-password") as u:
        wrong = await u.alarm()
        assert wrong.status == 401
    assert rejected(scaip_bridge, "digest_failed") == 1.0
    async with unit(scaip_bridge, "4670007", password="s3cret-pass") as u:
        good = await u.alarm()
    assert good.status == 200 and mrs(good).snu is Snu.OK
    assert len(await alerts_of(scaip_bridge, "unit-auth")) == 1


async def test_readiness_and_a_crlf_keepalive_on_tcp(scaip_bridge: RunningBridge) -> None:
    assert await receiver(scaip_bridge).readiness() == []
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver(scaip_bridge).port)
    writer.write(b"\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.readexactly(2) == b"\r\n"
    writer.close()


async def test_tls_listener_takes_an_alarm_when_a_certificate_is_configured(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

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
    config = make_config(
        tmp_path,
        TELECARE_SCAIP__LISTEN="127.0.0.1:0",
        TELECARE_SCAIP__TLS_LISTEN="127.0.0.1:0",
        TELECARE_SCAIP__TLS_CERT=str(cert),
        TELECARE_SCAIP__TLS_KEY=str(key),
    )
    trust = ssl.create_default_context(cadata=ca.root_pem.decode())
    async with running_bridge(config) as b:
        r = receiver(b)
        assert r.tls_port and await r.readiness() == []
        async with ScaipUnit("127.0.0.1", r.tls_port, cid="4670099", transport="tls", tls=trust) as u:
            answer = await u.alarm(dty="0003", stc="0010")
        assert mrs(answer).snu is Snu.OK
        assert [a["type"] for a in await alerts_of(b, "scaip-4670099")] == ["pendant"]
        # A client that does not trust the certificate gets no further than the handshake.
        with pytest.raises(ssl.SSLError):
            async with ScaipUnit("127.0.0.1", r.tls_port, cid="4670098", transport="tls"):
                pass


async def test_a_unit_that_stops_polling_raises_no_heartbeat_and_polling_again_clears_it(
    tmp_path: Path,
) -> None:
    from clock import SteppedClock

    # The bridge's clock (the receiver's and the supervisor's) moves only when the test says so: 100 s
    # after its poll the unit is past its interval and grace, without anyone waiting.
    clock = SteppedClock()
    config = make_config(
        tmp_path, TELECARE_SCAIP__LISTEN="127.0.0.1:0", TELECARE_HEARTBEATS__CHECK_EVERY_S="0.1"
    )
    async with running_bridge(config, clock=clock) as b:
        await register(b, "unit-quiet", "4670050", heartbeat_interval_s=60, heartbeat_grace_s=30)
        async with unit(b, "4670050") as u:
            assert mrs(await u.heartbeat()).snu is Snu.OK
            clock.advance(100)

            async def raised() -> bool:
                return [a["type"] for a in await alerts_of(b, "unit-quiet")] == ["no_heartbeat"]

            await eventually(raised)
            assert mrs(await u.heartbeat()).snu is Snu.OK  # heard again: the core resolves the alert
        assert await alerts_of(b, "unit-quiet") == []


async def test_a_test_press_is_a_test_only_in_test_mode_and_the_answer_says_so(
    scaip_bridge: RunningBridge,
) -> None:
    b = scaip_bridge
    await register(b, "unit-test", "4670060")
    async with unit(b, "4670060") as u:
        # Not in test mode: a "test" is handled as real (as on every path), so the unit is told to call.
        real = await u.alarm(dty="0003", stc="0102")
        assert mrs(real).mre is VoiceMode.DUPLEX
        assert [(a["type"], a["test"]) for a in await alerts_of(b, "unit-test")] == [("pendant", False)]
        first = (await alerts_of(b, "unit-test"))[0]["id"]
        assert (await b.call("POST", f"/api/v1/alerts/{first}/acknowledge", user="alice"))[0] == 200
        status, _ = await b.call(
            "POST", f"/api/v1/alerts/{first}/resolve", user="alice", json={"outcome": "resident_ok"}
        )
        assert status == 200
        status, _ = await b.call(
            "POST", "/api/v1/commissioning/unit-test", user="ian", role="installer", json={"minutes": 10}
        )
        assert status in (200, 201)
        test = await u.alarm(dty="0003", stc="0102")
        assert mrs(test).snu is Snu.OK and mrs(test).mre is VoiceMode.NONE  # a test: no speech call
    status, body = await b.call("GET", "/api/v1/alerts?state=open")
    tests = [a for a in body["alerts"] if a["device_id"] == "unit-test" and a["test"]]
    assert status == 200 and [a["type"] for a in tests] == ["pendant"]


async def test_commands_other_than_the_alarms_call_are_closed_as_not_supported(
    scaip_bridge: RunningBridge,
) -> None:
    b = scaip_bridge
    await register(b, "unit-cfg", "4670061")
    status, _ = await b.call(
        "POST",
        "/api/v1/devices/unit-cfg/config",
        user="ian",
        role="installer",
        json={"settings": {"volume": 5}},
    )
    assert status == 202

    async def closed() -> bool:
        async with b.store.read() as tx:
            row = await tx.fetchone(
                "SELECT result FROM outbox WHERE target = ? AND done_at IS NOT NULL", "unit-cfg"
            )
        return row is not None and "not_supported" in str(row["result"])

    await eventually(closed)


class LossyLink(asyncio.DatagramProtocol):
    """A UDP relay between a unit and the receiver that loses the first requests and the first answers
    it is given, as a bad mobile link does."""

    def __init__(self, target: tuple[str, int], *, lose_requests: int, lose_answers: int) -> None:
        self.target = target
        self.lose_requests, self.lose_answers = lose_requests, lose_answers
        self.unit_addr: Any = None
        self.relayed_requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # On Python 3.11 the selector's datagram transport is not an asyncio.DatagramTransport subclass.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        if addr[1] == self.target[1]:  # from the receiver
            if self.lose_answers > 0:
                self.lose_answers -= 1
            else:
                self.transport.sendto(data, self.unit_addr)
            return
        self.unit_addr = addr
        if self.lose_requests > 0:
            self.lose_requests -= 1
            return
        self.relayed_requests += 1
        self.transport.sendto(data, self.target)


async def test_a_lossy_link_the_unit_retransmits_until_answered_and_there_is_one_alert(
    scaip_bridge: RunningBridge,
) -> None:
    b = scaip_bridge
    await register(b, "unit-lossy", "4670070")
    loop = asyncio.get_running_loop()
    relay = LossyLink(("127.0.0.1", receiver(b).port), lose_requests=2, lose_answers=1)
    transport, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        async with ScaipUnit("127.0.0.1", port, cid="4670070") as u:
            answer = await u.alarm(ref="L1")
            assert mrs(answer).snu is Snu.OK
            # 2 requests lost, 1 reached the receiver but its answer was lost, 1 more got the answer.
            assert u.sent_count == 4 and relay.relayed_requests == 2
    finally:
        transport.close()
    assert [(a["type"], a["repeat_count"]) for a in await alerts_of(b, "unit-lossy")] == [("pendant", 0)]
    # The retransmission was answered by the SIP transaction, not handled again.
    duplicates = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_received_total", {"type": "pendant", "result": "duplicate", "transport": "scaip"}
    )
    assert duplicates is None


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"TELECARE_SCAIP__LISTEN": "127.0.0.1:5060", "TELECARE_SCAIP__TLS_LISTEN": "127.0.0.1:5061"},
            "tls_cert",
        ),
        (
            {
                "TELECARE_SCAIP__TLS_LISTEN": "127.0.0.1:5061",
                "TELECARE_SCAIP__TLS_CERT": "c",
                "TELECARE_SCAIP__TLS_KEY": "k",
            },
            "listen",
        ),
        ({"TELECARE_SCAIP__LISTEN": "5060"}, "listen"),
        ({"TELECARE_SCAIP__ANSWER": "sms"}, "answer"),
    ],
)
def test_bad_scaip_config_is_refused_naming_the_key(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    from bridge.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        make_config(tmp_path, **env)
    assert "scaip" in str(refused.value) and problem in str(refused.value)


async def test_readiness_fails_once_the_receiver_has_stopped(tmp_path: Path) -> None:
    config = make_config(tmp_path, TELECARE_SCAIP__LISTEN="127.0.0.1:0")
    async with running_bridge(config) as b:
        r = receiver(b)
        assert await r.readiness() == []
    assert await r.readiness() == ["scaip: the receiver is not listening"]


async def test_a_resend_across_the_end_of_a_dedup_bucket_is_not_stored_twice(tmp_path: Path) -> None:
    import time

    from clock import SteppedClock

    from bridge.transports.scaip import DEDUP_BUCKET_S

    # The first send is stored a second before its bucket ends; the resend (a new transaction, the same
    # mrq) comes two seconds later, in the next bucket. A reused ref a whole bucket later is new.
    bucket_end = (int(time.time()) // DEDUP_BUCKET_S + 1) * DEDUP_BUCKET_S
    clock = SteppedClock(bucket_end - 1)
    config = make_config(tmp_path, TELECARE_SCAIP__LISTEN="127.0.0.1:0")
    async with running_bridge(config, clock=clock) as b:
        await register(b, "unit-edge", "4670070")
        body = build_mrq(ref="E1", cid="4670070", dty="0014", stc="0014")
        async with unit(b, "4670070") as u:
            assert mrs(await u.message(body)).snu is Snu.OK
            clock.advance(2)
            assert mrs(await u.message(body)).snu is Snu.OK
            async with b.store.read() as tx:
                rows = await tx.fetchall("SELECT event_id FROM events WHERE device_id = 'unit-edge'")
            assert len(rows) == 1
            clock.advance(DEDUP_BUCKET_S)
            assert mrs(await u.message(body)).snu is Snu.OK
            async with b.store.read() as tx:
                rows = await tx.fetchall("SELECT event_id FROM events WHERE device_id = 'unit-edge'")
            assert len(rows) == 2


async def test_the_call_centre_of_a_help_alarm_is_closed_with_the_alarm_not_sent_by_the_outbox(
    scaip_bridge: RunningBridge,
) -> None:
    b = scaip_bridge
    await register(b, "unit-inband", "4670080")
    async with unit(b, "4670080") as u:
        assert mrs(await u.alarm(dty="0005", stc="0009", ref="IB1")).mre is VoiceMode.DUPLEX
    # Committed with the alarm, before its snu 0: nothing left for the outbox to claim or send.
    async with b.store.read() as tx:
        rows = await tx.fetchall(
            "SELECT attempts, done_at, result FROM outbox WHERE target = ?", "unit-inband"
        )
    assert [(r["attempts"], r["done_at"] is not None) for r in rows] == [(1, True)]
    assert "told in the SCAIP answer" in str(rows[0]["result"])
    alert_id = (await alerts_of(b, "unit-inband"))[0]["id"]
    status, body = await b.call("GET", f"/api/v1/alerts/{alert_id}")
    sent = [e for e in body["timeline"] if e["action"] == "command_sent"]
    assert status == 200 and [e["detail"]["cmd"] for e in sent] == ["call_centre"]
