"""Properties of the DC-09 codec found by Hypothesis: any bytes give a Frame or a refusal, never another
exception; any valid fields survive build -> parse; any cut of a stream of frames splits the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from devices import dc09
from devices.dc09 import NEED_DATA, ExtendedData, Frame, FrameSplitter, Refused, Token

NOW = datetime(2026, 11, 30, 5, 50, 0, tzinfo=UTC)
KEY = {16: b"k" * 16, 24: b"k" * 24, 32: b"k" * 32}

hex_text = st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=6)
printable_no_brackets = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(lambda s: s.replace("[", "").replace("]", ""))


@st.composite
def frame_fields(draw: st.DrawFn) -> dict[str, object]:
    token = draw(st.sampled_from([Token.SIA_DCS, Token.ADM_CID, Token.NULL, Token.ACK, Token.DUH]))
    account = draw(st.text(alphabet="0123456789ABCDEF", min_size=3, max_size=16))
    data = draw(printable_no_brackets)
    if data:  # the data block reads back from "#acct|" or "|" when encrypted; give it that shape
        data = f"#{account}|{data.replace('|', '')}"
    extended = draw(
        st.lists(
            st.builds(ExtendedData, st.sampled_from("AHIKLMRSVXYZ"), printable_no_brackets), max_size=3
        ).map(tuple)
    )
    return {
        "token": token,
        "sequence": draw(st.integers(0, 9999)),
        "account": account,
        "line": draw(hex_text),
        "receiver": draw(st.none() | hex_text),
        "data": data,
        "extended": extended,
        "timestamp": NOW - timedelta(seconds=draw(st.integers(-20, 40))),
    }


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_frame_or_a_refusal(raw: bytes) -> None:
    result = dc09.parse_frame(raw, now=NOW, keys={"1234": KEY[16]}.get)
    assert isinstance(result, Frame | Refused)


@settings(max_examples=300, deadline=None)
@given(frame_fields(), st.data())
def test_mutated_frames_give_a_frame_or_a_refusal(fields: dict[str, object], data: st.DataObject) -> None:
    raw = bytearray(dc09.build_frame(**fields, key=KEY[16]))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    result = dc09.parse_frame(bytes(raw), now=NOW, keys=lambda _a: KEY[16])
    assert isinstance(result, Frame | Refused)


@settings(max_examples=300, deadline=None)
@given(frame_fields(), st.sampled_from([None, 16, 24, 32]))
def test_build_then_parse_gives_the_fields_back(fields: dict[str, object], size: int | None) -> None:
    key = KEY[size] if size else None
    raw = dc09.build_frame(**fields, key=key)  # type: ignore[arg-type]
    body = raw[9:-1]
    assert int(raw[5:9], 16) == len(body) and int(raw[1:5], 16) == dc09.crc16(body)
    got = dc09.parse_frame(raw, now=NOW, keys=lambda _a: key)
    assert isinstance(got, Frame), got
    assert got.encrypted is (key is not None)
    assert (got.token, got.sequence, got.account, got.line, got.receiver) == (
        fields["token"],
        fields["sequence"],
        fields["account"],
        fields["line"],
        fields["receiver"],
    )
    assert (got.data, got.extended) == (fields["data"], fields["extended"])
    assert got.timestamp == fields["timestamp"]


@settings(max_examples=100, deadline=None)
@given(st.lists(frame_fields(), min_size=1, max_size=5), st.data())
def test_any_cut_of_a_stream_gives_the_same_frames(
    frames: list[dict[str, object]], data: st.DataObject
) -> None:
    sent = [dc09.build_frame(**f) for f in frames]  # type: ignore[arg-type]
    stream = b"".join(raw + b"\x00" * data.draw(st.integers(0, 3)) for raw in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    splitter = FrameSplitter()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        splitter.feed(stream[start:end])
        while (item := splitter.next_frame()) is not NEED_DATA:
            assert isinstance(item, bytes)
            out.append(item)
    assert out == [raw.strip(b"\n\r") for raw in sent]
