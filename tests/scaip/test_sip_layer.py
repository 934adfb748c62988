"""The sans-I/O SIP layer (devices/sip.py, sip_transaction.py, sip_digest.py): properties with
Hypothesis, and the RFC 3261 rules the receiver leans on."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import sip_digest
from devices.sip import (
    KeepAlive,
    NeedData,
    Request,
    Response,
    SipError,
    StreamFramer,
    Via,
    build_request,
    parse_message,
    parse_via,
    response_to,
    serialise,
    split_list,
    stamp_received,
    tag_of,
    uri_of,
    user_of,
)
from devices.sip_transaction import (
    T1,
    T2,
    TIMER_F,
    TIMER_J,
    Arrival,
    ClientState,
    ClientTransaction,
    ServerTransactions,
)

MESSAGE = (
    b"MESSAGE sip:alarm@10.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/UDP proxy.example.org;branch=z9hG4bKproxy\r\n"
    b'f: "Unit 7" <sip:4670001@192.168.1.20>;tag=1928301774\r\n'
    b"t: <sip:alarm@10.0.0.1>\r\n"
    b"i: a84b4c76e66710@192.168.1.20\r\n"
    b"CSeq: 314159 MESSAGE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: a folded\r\n header\r\n"
    b"c: application/scaip+xml;charset=utf-8\r\n"
    b"l: 20\r\n"
    b"\r\n"
    b"<mrq><ref>1</ref>..."
)

tokens = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=10)
safe_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=","),
    min_size=1,
    max_size=40,
)


tags = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(tokens)
    via = Via(
        draw(st.sampled_from(["UDP", "TCP", "TLS"])),
        draw(st.sampled_from(["10.0.0.1", "unit.example.org", "2001:db8::1"])),
        draw(st.none() | st.integers(1, 65535)),
        {"branch": "z9hG4bK" + draw(st.text(alphabet="abcdef0123456789", min_size=1, max_size=16))},
    )
    extra = draw(
        st.lists(st.tuples(st.sampled_from(["X-Unit", "Subject", "User-Agent"]), safe_text), max_size=4)
    )
    return build_request(
        method,
        "sip:alarm@" + draw(st.sampled_from(["10.0.0.2", "centre.example.org"])),
        via=via,
        from_address=f"<sip:{draw(st.integers(0, 10**16))}@unit>;tag={draw(tags)}",
        to_address="<sip:alarm@centre>",
        call_id=draw(safe_text),
        cseq=draw(st.integers(0, 2**31 - 1)),
        body=draw(st.binary(max_size=300)),
        content_type="application/scaip+xml",
        extra=extra,
    )


def test_a_real_looking_message_with_compact_folded_headers_is_read() -> None:
    msg = parse_message(MESSAGE)
    assert isinstance(msg, Request)
    assert msg.method == "MESSAGE" and msg.uri == "sip:alarm@10.0.0.1:5060"
    assert msg.call_id == "a84b4c76e66710@192.168.1.20" and msg.cseq == (314159, "MESSAGE")
    assert msg.content_type == "application/scaip+xml"
    assert [parse_via(v).host for v in msg.header_values("via")] == ["192.168.1.20", "proxy.example.org"]
    assert msg.top_via.branch == "z9hG4bK776asdhds" and msg.top_via.port == 5070
    assert msg.header("Subject") == "a folded header"
    assert msg.body == b"<mrq><ref>1</ref>..."
    assert tag_of(msg.header("From") or "") == "1928301774" and tag_of(msg.header("To") or "") is None
    assert user_of(uri_of(msg.header("From") or "")) == "4670001"


@given(requests())
def test_serialise_then_parse_gives_the_request_back(request: Request) -> None:
    again = parse_message(serialise(request))
    assert isinstance(again, Request)
    assert (again.method, again.uri, again.body) == (request.method, request.uri, request.body)
    assert [h for h in again.headers if h[0] != "Content-Length"] == list(request.headers)


@given(st.binary(max_size=600))
def test_any_bytes_are_read_or_refused_with_sip_error(data: bytes) -> None:
    with contextlib.suppress(SipError):
        parse_message(data)


@given(st.integers(0, len(MESSAGE) - 1), st.binary(min_size=1, max_size=3))
def test_a_damaged_message_is_read_or_refused_with_sip_error(at: int, junk: bytes) -> None:
    with contextlib.suppress(SipError):
        parse_message(MESSAGE[:at] + junk + MESSAGE[at + len(junk) :])


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (MESSAGE.replace(b"l: 20", b"l: 99"), 400),  # body shorter than Content-Length
        (MESSAGE.replace(b"l: 20", b"l: -1"), 400),
        (MESSAGE.replace(b"CSeq: 314159 MESSAGE", b"CSeq: 1 OPTIONS"), 400),
        (MESSAGE.replace(b"i: a84b4c76e66710@192.168.1.20\r\n", b""), 400),  # no Call-ID
        (MESSAGE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), 505),
        (b"MESSAGE sip:x SIP/2.0\r\nCSeq: 1 MESSAGE\r\n\r\n", None),  # no Via: nowhere to answer
        (b"hello\r\n\r\n", None),
        (MESSAGE.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\x000"), 400),
    ],
)
def test_malformed_requests_are_refused_with_the_status_they_deserve(data: bytes, status: int | None) -> None:
    with pytest.raises(SipError) as refused:
        parse_message(data)
    assert refused.value.status == status
    if refused.value.request is not None:  # readable enough to answer: the answer routes by its Via
        answer = response_to(refused.value.request, 400, to_tag="t")
        assert answer.header_values("Via") == refused.value.request.header_values("Via")


def test_a_response_echoes_via_from_call_id_cseq_and_adds_one_to_tag() -> None:
    request = parse_message(MESSAGE)
    assert isinstance(request, Request)
    response = response_to(request, 200, to_tag="abc", body=b"<mrs/>", content_type="application/scaip+xml")
    again = parse_message(serialise(response))
    assert isinstance(again, Response) and again.status == 200 and again.reason == "OK"
    assert again.header_values("Via") == request.header_values("Via")
    for name in ("From", "Call-ID", "CSeq"):
        assert again.header(name) == request.header(name)
    assert tag_of(again.header("To") or "") == "abc"
    tagged = response_to(parse_message(serialise(response_to(request, 200, to_tag="x"))), 200, to_tag="y")  # type: ignore[arg-type]
    assert tag_of(tagged.header("To") or "") == "x"  # an existing tag is kept


def test_received_and_rport_are_stamped_on_the_top_via() -> None:
    request = parse_message(MESSAGE)
    assert isinstance(request, Request)
    stamped = stamp_received(request, "203.0.113.9", 40000)
    top = stamped.top_via
    assert (top.params["received"], top.params["rport"]) == ("203.0.113.9", "40000")
    assert stamped.header_values("Via")[1:] == request.header_values("Via")[1:]


def test_list_headers_split_only_outside_quotes_and_angle_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == ['"a, b" <sip:x@y;p=1,2>', "<sip:z@w>"]


@given(st.lists(requests(), min_size=1, max_size=4), st.data())
@settings(max_examples=60)
def test_stream_framing_finds_each_message_whatever_the_reads(
    batch: list[Request], data: st.DataObject
) -> None:
    wire = b"\r\n\r\n".join(serialise(r) for r in batch)  # keep-alive pings between them
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    framer = StreamFramer()
    found: list[bytes] = []
    pings = 0
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        framer.feed(wire[start:end])
        while not isinstance(item := framer.next_message(), NeedData):
            if isinstance(item, KeepAlive):
                pings += 1
            else:
                found.append(item)
    assert found == [serialise(r) for r in batch] and pings == len(batch) - 1


def test_a_stream_without_content_length_cannot_be_framed() -> None:
    framer = StreamFramer()
    framer.feed(b"MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n\r\n")
    with pytest.raises(SipError):
        framer.next_message()


@given(requests(), st.lists(st.floats(0, 1.0), min_size=1, max_size=5))
def test_retransmissions_get_the_same_answer_until_timer_j(request: Request, gaps: list[float]) -> None:
    table = ServerTransactions()
    now = 100.0
    assert table.arrive(request, now) == (Arrival.NEW, None)
    assert table.arrive(request, now + 0.1) == (Arrival.ABSORBED, None)  # still being handled
    table.complete(request, b"the answer", now + 0.2)
    for gap in gaps:
        now += gap
        assert table.arrive(request, now) == (Arrival.RESEND, b"the answer")
    assert table.arrive(request, 100.2 + TIMER_J + 0.01)[0] is Arrival.NEW


def test_an_abandoned_transaction_is_handled_afresh_and_a_full_table_refuses() -> None:
    first = parse_message(MESSAGE)
    assert isinstance(first, Request)
    table = ServerTransactions(max_open=1)
    assert table.arrive(first, 0)[0] is Arrival.NEW
    other = stamp_received(first, "198.51.100.1", 1)  # same branch and sent-by: the same transaction
    assert table.arrive(other, 0)[0] is Arrival.ABSORBED
    second = parse_message(MESSAGE.replace(b"z9hG4bK776asdhds", b"z9hG4bKother"))
    assert isinstance(second, Request)
    assert table.arrive(second, 0)[0] is Arrival.OVERLOADED
    table.abandon(first)
    assert table.arrive(first, 0)[0] is Arrival.NEW


def test_rfc2543_requests_without_a_cookie_branch_match_on_their_fields() -> None:
    old = parse_message(MESSAGE.replace(b"branch=z9hG4bK776asdhds;", b""))
    assert isinstance(old, Request)
    table = ServerTransactions()
    assert table.arrive(old, 0)[0] is Arrival.NEW
    table.complete(old, b"x", 0)
    assert table.arrive(old, 1) == (Arrival.RESEND, b"x")
    new_cseq = parse_message(serialise(old).replace(b"CSeq: 314159", b"CSeq: 314160"))
    assert isinstance(new_cseq, Request)
    assert table.arrive(new_cseq, 1)[0] is Arrival.NEW


def send_times(client: ClientTransaction, start: float) -> list[float]:
    times = []
    now = start
    while not client.done:
        if client.due(now):
            times.append(round(now - start, 3))
            client.sent(now)
        now = client.wake_at()
        client.tick(now)
    return times


def test_client_retransmits_t1_doubling_to_t2_on_udp_and_gives_up_at_timer_f() -> None:
    client = ClientTransaction(reliable=False, now=10.0)
    times = send_times(client, 10.0)
    assert times[:6] == [0, T1, 3 * T1, 7 * T1, 7 * T1 + T2, 7 * T1 + 2 * T2]
    assert all(b - a <= T2 for a, b in itertools.pairwise(times))
    assert times[-1] < TIMER_F and client.state is ClientState.TIMED_OUT


def test_client_sends_once_on_tcp_and_a_final_response_ends_it() -> None:
    assert send_times(ClientTransaction(reliable=True, now=0), 0) == [0]
    client = ClientTransaction(reliable=False, now=0)
    client.sent(0)
    client.received(100)
    assert client.state is ClientState.PROCEEDING
    client.received(200)
    assert client.done and client.status == 200


SECRET = b"k" * 32


@given(st.text(alphabet="0123456789", min_size=1, max_size=16), st.text(min_size=8, max_size=30))
@settings(max_examples=40)
def test_digest_answer_to_our_challenge_is_accepted_and_a_wrong_password_is_not(
    user: str, password: str
) -> None:
    challenge = sip_digest.challenge("telecare", SECRET, 1000.0)
    auth = sip_digest.authorization(
        challenge, username=user, password=password, method="MESSAGE", uri="sip:a@b"
    )
    common = {"username": user, "realm": "telecare", "method": "MESSAGE", "secret": SECRET}
    assert sip_digest.check(auth, password=password, now=1010.0, **common) is sip_digest.Verdict.OK
    assert sip_digest.check(auth, password=password + "x", now=1010.0, **common) is sip_digest.Verdict.WRONG
    assert sip_digest.check(auth, password=password, now=2000.0, **common) is sip_digest.Verdict.STALE
    assert sip_digest.check(None, password=password, now=1010.0, **common) is sip_digest.Verdict.MISSING
    forged = sip_digest.authorization(
        sip_digest.challenge("telecare", b"other" * 8, 1000.0),
        username=user,
        password=password,
        method="MESSAGE",
        uri="sip:a@b",
    )
    assert sip_digest.check(forged, password=password, now=1010.0, **common) is sip_digest.Verdict.WRONG


def test_digest_sha256_and_the_rfc2617_example_response() -> None:
    # RFC 2617 §3.5's example (qop=auth, MD5): the response our arithmetic must give.
    example = sip_digest.Digest(
        {
            "username": "Mufasa",
            "realm": "testrealm@host.com",
            "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "uri": "/dir/index.html",
            "qop": "auth",
            "nc": "00000001",
            "cnonce": "0a4f113b",
        }
    )
    assert (
        sip_digest.expected_response(example, "Circle Of Life", "GET") == "6629fae49393a05397450978507c4ef1"
    )
    challenge = sip_digest.challenge("telecare", SECRET, 5.0, algorithm="SHA-256")
    auth = sip_digest.authorization(challenge, username="1", password="p" * 8, method="MESSAGE", uri="sip:a")
    assert "algorithm=SHA-256" in auth
    verdict = sip_digest.check(
        auth, username="1", password="p" * 8, realm="telecare", method="MESSAGE", secret=SECRET, now=6.0
    )
    assert verdict is sip_digest.Verdict.OK
