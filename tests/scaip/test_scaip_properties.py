"""Properties of the SCAIP codec found by Hypothesis: any bytes give a request or a refusal, never
another exception; any valid request or response survives build -> parse; every request has a meaning."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.scaip import (
    MAX_BODY_BYTES,
    AlarmRequest,
    MessageResponse,
    MessageType,
    ScaipRefused,
    Snu,
    VoiceMode,
    answer_refusal,
    build_mrq,
    build_mrs,
    parse_mrq,
    parse_mrs,
)
from devices.scaip_codes import ScaipKind, meaning_of

alnum = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
refs = st.text(alphabet=alnum, min_size=1, max_size=16)
digits = st.text(alphabet="0123456789", min_size=1, max_size=32)


def ascii_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=max_size
    ).map(str.strip)


def unicode_text(max_size: int) -> st.SearchStrategy[str]:
    """Text XML can carry (no control characters, no surrogates, no U+FFFE/FFFF)."""
    chars = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff")
    return st.text(alphabet=chars, min_size=1, max_size=max_size).map(str.strip)


@st.composite
def request_fields(draw: st.DrawFn) -> dict[str, str]:
    fields = {
        "ref": draw(refs),
        "cid": draw(digits),
        "mty": draw(st.sampled_from(list(MessageType))).value,
        "dty": draw(st.text(alphabet="0123456789", min_size=1, max_size=4)),
    }
    optional = {
        "did": ascii_text(16),
        "stc": st.text(alphabet="0123456789", min_size=1, max_size=4),
        "ver": st.from_regex(r"[0-9]{2}\.[0-9]{2}", fullmatch=True),
        "lco": st.text(alphabet="0123456789", min_size=1, max_size=3),
        "lte": unicode_text(32),
        "ite": unicode_text(128),
        "dte": unicode_text(32),
        "pri": st.text(alphabet="0123456789", min_size=1, max_size=1),
        "geo": st.from_regex(r"[-0-9.,]{1,23}", fullmatch=True),
        "crd": ascii_text(256).filter(lambda s: "|" not in s),
    }
    for tag, strategy in optional.items():
        value = draw(st.none() | strategy)
        if value:  # strip() may leave nothing: that tag is left out
            fields[tag] = value
    return fields


@settings(max_examples=300)
@given(st.binary(max_size=2 * MAX_BODY_BYTES))
def test_any_bytes_give_a_request_or_a_refusal(body: bytes) -> None:
    result = parse_mrq(body)
    assert isinstance(result, AlarmRequest | ScaipRefused)
    if isinstance(result, ScaipRefused):
        assert isinstance(result.snu, Snu) and result.snu is not Snu.OK and result.detail
    response = parse_mrs(body)
    assert isinstance(response, MessageResponse | ScaipRefused)


xml_ish = st.lists(
    st.sampled_from(
        [
            "<mrq>",
            "</mrq>",
            "<ref>",
            "</ref>",
            "<cid>",
            "</cid>",
            "<dty>",
            "</dty>",
            "<stc>",
            "</stc>",
            "<lge>",
            "</lge>",
            "<geo>",
            "</geo>",
            "<mty>",
            "</mty>",
            "PI",
            "ME",
            "12",
            "0003",
            "a",
            "&amp;",
            "&x;",
            "<!DOCTYPE mrq>",
            "<![CDATA[1]]>",
            "<!-- c -->",
            " ",
            "\n",
            "é",
        ]
    ),
    max_size=40,
).map(lambda parts: "".join(parts).encode())


@settings(max_examples=500)
@given(xml_ish)
def test_xml_like_bytes_give_a_request_or_a_refusal(body: bytes) -> None:
    result = parse_mrq(body)
    assert isinstance(result, AlarmRequest | ScaipRefused)
    if isinstance(result, AlarmRequest):
        assert meaning_of(result).kind in set(ScaipKind)


@settings(max_examples=300)
@given(request_fields())
def test_valid_requests_round_trip(fields: dict[str, str]) -> None:
    body = build_mrq(**fields)
    parsed = parse_mrq(body)
    assert isinstance(parsed, AlarmRequest), (body, parsed)
    assert (parsed.ref, parsed.cid, parsed.mty, parsed.dty) == (
        fields["ref"],
        fields["cid"],
        fields["mty"],
        fields["dty"],
    )
    assert (parsed.did, parsed.stc, parsed.ver) == (fields.get("did"), fields.get("stc"), fields.get("ver"))
    assert parsed.crd == ((fields["crd"],) if "crd" in fields else ())
    others = {
        tag: value
        for tag, value in fields.items()
        if tag not in {"ref", "cid", "mty", "dty", "did", "stc", "ver", "crd"}
    }
    assert parsed.extra == others
    assert meaning_of(parsed).kind in set(ScaipKind)


@settings(max_examples=200)
@given(
    refs,
    st.sampled_from(list(Snu)),
    st.none() | st.sampled_from(list(VoiceMode)),
    st.none() | st.sampled_from(["61", *(f"{m:02d}" for m in range(1, 61))]),
    st.none() | ascii_text(256),
    st.none() | st.integers(1, 1440),
)
def test_valid_responses_round_trip(
    ref: str, snu: Snu, mre: VoiceMode | None, cre: str | None, cnb: str | None, hbi: int | None
) -> None:
    cnb = cnb or None
    body = build_mrs(ref, snu, mre=mre, cre=cre, cnb=cnb, hbi=hbi)
    expected_cre = cre if cre is not None else ("62" if cnb is not None else None)
    assert parse_mrs(body) == MessageResponse(
        ref, snu, mre=mre, cre=expected_cre, tnu=(cnb,) if cnb else (), hbi=hbi
    )


@settings(max_examples=300)
@given(xml_ish | st.binary(max_size=200))
def test_every_refusal_with_a_ref_has_a_valid_answer(body: bytes) -> None:
    result = parse_mrq(body)
    if isinstance(result, ScaipRefused):
        answer = answer_refusal(result)
        if result.ref is None:
            assert answer is None
        else:
            assert answer is not None
            parsed = parse_mrs(answer)
            assert isinstance(parsed, MessageResponse) and (parsed.ref, parsed.snu) == (
                result.ref,
                result.snu,
            )


@settings(max_examples=300)
@given(
    xml_ish | st.binary(max_size=300) | st.text(max_size=100).map(lambda t: f"<mrq><ref>1</ref>{t}".encode())
)
def test_refusal_details_are_printable_ascii(body: bytes) -> None:
    for result in (parse_mrq(body), parse_mrs(body)):
        if isinstance(result, ScaipRefused):
            assert result.detail.isascii() and result.detail.isprintable(), result.detail
