"""The SCAIP codec (devices/scaip.py): every rule of parse_mrq and parse_mrs, the builders, and bodies
sent by units in the field (docs/scaip.md, "What we verified and where")."""

from __future__ import annotations

import pytest

from devices import scaip
from devices.scaip import (
    MAX_BODY_BYTES,
    MEDIA_TYPE,
    NAMESPACE,
    AlarmRequest,
    CallReply,
    MessageResponse,
    MessageType,
    ScaipRefused,
    Snu,
    VoiceMode,
    build_mrq,
    build_mrs,
    parse_mrq,
    parse_mrs,
)


def refused(body: bytes) -> ScaipRefused:
    result = parse_mrq(body)
    assert isinstance(result, ScaipRefused), result
    return result


def request(body: bytes) -> AlarmRequest:
    result = parse_mrq(body)
    assert isinstance(result, AlarmRequest), result
    return result


def test_constants() -> None:
    assert MEDIA_TYPE == "application/scaip+xml"
    assert MAX_BODY_BYTES >= 1300  # the standard's split size fits
    assert [int(s) for s in Snu] == [0, 1, 2, 3, 4, 5, 6, 7, 10, 99]
    assert [m.value for m in MessageType] == ["ME", "RE", "IN", "PI"]
    assert [v.value for v in VoiceMode] == ["0", "1", "2", "3"]
    assert [c.value for c in CallReply] == ["61", "62"]


# -- bodies from the standard's guideline and from units in the field -------------------------------

FIELD_BODIES = {
    # SS 91100:2014 9.1 / SIS-TR 91102 5.1, pretty-printed
    "standard": b"<mrq>\n  <ref>1234</ref>\n  <cid>123456</cid>\n  <dty>0001</dty>\n"
    b"  <stc>001</stc>\n</mrq>\n",
    "essence heartbeat": b"<mrq><ref>00001A85</ref><cha>0</cha><mty>PI</mty><cid>26317</cid><dty>02</dty>"
    b"<did>00</did><crd>no-voice:</crd><stc>102</stc></mrq>",
    "possum heartbeat": b"<mrq><mty>PI</mty><ref>1998218577</ref><cid>10149471</cid><dty>2</dty></mrq>",
    "telealarm heartbeat": b"<mrq><ref>v6l7eiuzBTfybE7j</ref><cid>999998</cid><dty>0002</dty><mty>PI</mty>"
    b"<stc>0009</stc><lco>002</lco><crd>gsm:</crd><cha>0</cha></mrq>",
    "essence alarm": b"<mrq><ref>00001883</ref><cha>0</cha><mty>ME</mty><cid>26317</cid><dty>02</dty>"
    b"<did>00</did><crd>gsm:+37284463906</crd><stc>010</stc></mrq>",
    "possum alarm": b"<mrq><ref>1193308443</ref><cid>10149471</cid><dty>3</dty><stc>10</stc>"
    b"<crd>gsm:</crd></mrq>",
    "telealarm alarm": b"<mrq><ref>yhexGeV5E49zglfi</ref><cid>999998</cid><dty>0004</dty><mty>ME</mty>"
    b"<stc>0010</stc><lco>002</lco><crd>gsm:</crd><cha>0</cha></mrq>",
    "doro alarm": b"<mrq><ref>803137200003</ref><mty>ME</mty><cid> 8031372</cid><dty>0004</dty>"
    b"<stc>0010</stc><crd>gsm:+</crd></mrq>",
    "guideline non-voice": b"<mrq>\n<ref>1242</ref>\n<cid>678</cid>\n<dty>27</dty>\n<stc>16</stc>\n</mrq>",
}


@pytest.mark.parametrize("name", FIELD_BODIES)
def test_field_bodies_parse(name: str) -> None:
    parsed = request(FIELD_BODIES[name])
    assert parsed.ref and parsed.cid.isdigit() and parsed.dty


def test_field_body_fields() -> None:
    parsed = request(FIELD_BODIES["telealarm heartbeat"])
    assert parsed == AlarmRequest(
        ref="v6l7eiuzBTfybE7j",
        cid="999998",
        mty="PI",
        ver=None,
        dty="0002",
        did=None,
        stc="0009",
        extra={"lco": "002", "cha": "0"},
        crd=("gsm:",),
    )
    assert parsed.message_type is MessageType.HEARTBEAT
    assert request(FIELD_BODIES["doro alarm"]).cid == "8031372"  # white space around a value is dropped
    assert request(FIELD_BODIES["possum alarm"]).message_type is MessageType.MESSAGE  # mty omitted


def test_every_known_tag_is_read() -> None:
    body = (
        b"<mrq><ref>A1</ref><ver>01.00</ver><sco>1</sco><cha>1</cha><mty>IN</mty><hbo>001</hbo>"
        b"<cid>46701445566</cid><dty>0005</dty><did>dev 7</did><dco>002</dco><dte>Fall pendant</dte>"
        b"<crd>sip:unit@example.org</crd><crd>gsm:+46701445566</crd><stc>0009</stc><stt>Fallen</stt>"
        b"<pri>9</pri><lco>021</lco><lva>2</lva><lge><geo>59.336111,18.072778</geo>"
        b"<tim>2014-04-28T12:00:00+01</tim><gga>$GPGGA,1</gga></lge><lte>Kitchen</lte><ico>100</ico>"
        b"<ite>Info \xc3\xa5\xc3\xa4\xc3\xb6</ite><ame>0</ame></mrq>"
    )
    parsed = request(body)
    assert (parsed.ref, parsed.cid, parsed.mty, parsed.ver, parsed.dty, parsed.did, parsed.stc) == (
        "A1",
        "46701445566",
        "IN",
        "01.00",
        "0005",
        "dev 7",
        "0009",
    )
    assert parsed.crd == ("sip:unit@example.org", "gsm:+46701445566")
    assert parsed.extra == {
        "sco": "1",
        "cha": "1",
        "hbo": "001",
        "dco": "002",
        "dte": "Fall pendant",
        "stt": "Fallen",
        "pri": "9",
        "lco": "021",
        "lva": "2",
        "geo": "59.336111,18.072778",
        "tim": "2014-04-28T12:00:00+01",
        "gga": "$GPGGA,1",
        "lte": "Kitchen",
        "ico": "100",
        "ite": "Info åäö",
        "ame": "0",
    }


def test_namespace_of_the_schema_and_declaration_are_read() -> None:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><mrq xmlns="{NAMESPACE}"><ref>1</ref><cid>2</cid>'
        "<dty>3</dty></mrq>"
    ).encode()
    assert request(body).dty == "3"
    prefixed = f'<s:mrq xmlns:s="{NAMESPACE}"><s:ref>1</s:ref><s:cid>2</s:cid><s:dty>3</s:dty></s:mrq>'
    assert request(prefixed.encode()).cid == "2"


def test_unknown_tags_attributes_and_comments_are_skipped() -> None:
    body = b'<mrq v="1"><!-- c --><ref>1</ref><cid>2</cid><dty>3</dty><zzz>later</zzz><?pi x?></mrq>'
    assert request(body).extra == {}


def test_empty_optional_element_counts_as_omitted() -> None:
    parsed = request(b"<mrq><ref>1</ref><cid>2</cid><dty>3</dty><stc></stc><did/><crd></crd></mrq>")
    assert parsed.stc is None and parsed.did is None and parsed.crd == ()


# -- refusals -------------------------------------------------------------------------------------


def test_too_long_body_is_refused_with_its_ref() -> None:
    body = b"<mrq><ref>R1</ref><cid>1</cid><dty>3</dty><ite>" + b"x" * MAX_BODY_BYTES + b"</ite></mrq>"
    result = refused(body)
    assert (result.snu, result.ref) == (Snu.TOO_LONG, "R1")
    assert "bytes" in result.detail


def test_body_at_the_limit_is_read() -> None:
    head = b"<mrq><ref>R1</ref><cid>1</cid><dty>3</dty><!--"
    tail = b"--></mrq>"
    body = head + b"x" * (MAX_BODY_BYTES - len(head) - len(tail)) + tail
    assert len(body) == MAX_BODY_BYTES
    assert request(body).ref == "R1"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"not xml",
        b"<mrq><ref>1</ref>",  # unclosed
        b"<mrq><ref>1</ref><cid>2</cid><dty>3</dty></mrq><mrq/>",  # two roots
        b"<mrs><ref>1</ref><snu>0</snu></mrs>",  # not a request
        b"<MRQ><ref>1</ref><cid>2</cid><dty>3</dty></MRQ>",
        b'<mrq xmlns="urn:other"><ref>1</ref><cid>2</cid><dty>3</dty></mrq>',
        b"<mrq><ref>1</ref><cid>2</cid><dty>3</dty><stc><x>1</x></stc></mrq>",  # nested
        b"<mrq><ref>1</ref><cid>2</cid><cid>3</cid><dty>3</dty></mrq>",  # twice
        b"<mrq><ref>1</ref><cid>2</cid><dty>3</dty><ite>&unknown;</ite></mrq>",
        b"<mrq><ref>1</ref><cid>2\x01</cid><dty>3</dty></mrq>",  # not an XML character
        b"\xff\xfe<\x00m\x00r\x00q\x00>\x00",  # UTF-16
        b"<mrq><ref>1</ref><cid>2</cid><dty>3</dty><lte>caf\xe9</lte></mrq>",  # Latin-1
    ],
)
def test_malformed_is_invalid_format(body: bytes) -> None:
    assert refused(body).snu is Snu.INVALID_FORMAT


def test_malformed_body_still_echoes_a_readable_ref() -> None:
    result = refused(b"<mrq><ref>abc</ref><cid>1</cid>")
    assert (result.snu, result.ref) == (Snu.INVALID_FORMAT, "abc")


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<mrq><ref>X1</ref><cid>1</cid><dty>3</dty><ite>&xxe;</ite></mrq>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<mrq><ref>L1</ref><cid>1</cid><dty>3</dty><ite>&lol9;</ite></mrq>"""
EXTERNAL_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE mrq SYSTEM "http://127.0.0.1:9/scaip.dtd"><mrq><ref>D1</ref></mrq>'
)
PARAMETER_ENTITY = (
    b"""<!DOCTYPE mrq [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]><mrq><ref>P1</ref></mrq>"""
)
INTERNAL_DTD = b"<!DOCTYPE mrq [<!ELEMENT mrq ANY>]><mrq><ref>I1</ref><cid>1</cid><dty>3</dty></mrq>"


@pytest.mark.parametrize("body", [XXE, BILLION_LAUGHS, EXTERNAL_DTD, PARAMETER_ENTITY, INTERNAL_DTD])
def test_document_type_declarations_are_refused(body: bytes) -> None:
    result = refused(body)
    assert result.snu is Snu.INVALID_FORMAT
    assert "document type" in result.detail


def test_missing_ref_is_reference_missing() -> None:
    for body in (b"<mrq><cid>1</cid><dty>3</dty></mrq>", b"<mrq><ref> </ref><cid>1</cid><dty>3</dty></mrq>"):
        result = refused(body)
        assert (result.snu, result.ref) == (Snu.REFERENCE_MISSING, None)


@pytest.mark.parametrize(
    ("body", "tags"),
    [
        (b"<mrq><ref>1</ref><dty>3</dty></mrq>", "<cid>"),
        (b"<mrq><ref>1</ref><cid>1</cid></mrq>", "<dty>"),
        (b"<mrq><ref>1</ref><cid></cid><dty/></mrq>", "<cid>, <dty>"),
        (b"<mrq><ref>1</ref></mrq>", "<cid>, <dty>"),
    ],
)
def test_missing_mandatory_tag_is_reported(body: bytes, tags: str) -> None:
    result = refused(body)
    assert (result.snu, result.ref) == (Snu.MANDATORY_MISSING, "1")
    assert tags in result.detail


BASE = {"ref": "<ref>R9</ref>", "cid": "<cid>12345</cid>", "dty": "<dty>0003</dty>"}


def with_tag(tag: str, value: str) -> bytes:
    tags = dict(BASE)
    tags[tag] = f"<{tag}>{value}</{tag}>"
    return ("<mrq>" + "".join(tags.values()) + "</mrq>").encode()


WRONG_DATA = [
    ("ref", "abc-1"),  # not alphanumeric
    ("ref", "A" * 17),
    ("cid", "12a"),
    ("cid", "+4670"),
    ("cid", "1" * 33),
    ("dty", "12345"),
    ("dty", "x"),
    ("ver", "1.0"),
    ("sco", "4"),
    ("cha", "10"),
    ("mty", "XX"),
    ("mty", "me"),
    ("hbo", "0001"),
    ("did", "d" * 17),
    ("did", "tab\tin"),
    ("dco", "1000"),
    ("dte", "d" * 33),
    ("crd", "c" * 257),
    ("stc", "00100"),
    ("stc", "1a"),
    ("stt", "s" * 33),
    ("pri", "10"),
    ("lco", "0021"),
    ("lva", "123"),
    ("lte", "l" * 33),
    ("ico", "1000"),
    ("ite", "i" * 129),
    ("ame", "12345"),
]


@pytest.mark.parametrize(("tag", "value"), WRONG_DATA)
def test_wrong_content_is_wrong_data(tag: str, value: str) -> None:
    result = refused(with_tag(tag, value))
    assert result.snu is Snu.WRONG_DATA
    assert f"<{tag}>" in result.detail
    assert result.ref == (None if tag == "ref" else "R9")


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        ("cid", "1" * 32),
        ("did", "d" * 16),
        ("ite", "i" * 128),
        ("crd", "c" * 256),
        ("ame", "1300"),
        ("stc", "9999"),
    ],
)
def test_longest_values_are_read(tag: str, value: str) -> None:
    assert isinstance(parse_mrq(with_tag(tag, value)), AlarmRequest)


@pytest.mark.parametrize(
    ("tag", "value"),
    [("geo", "59.3," + "1" * 19), ("geo", "x"), ("tim", "yesterday"), ("gga", "g" * 82)],
)
def test_wrong_location_geo_is_wrong_data(tag: str, value: str) -> None:
    body = b"<mrq><ref>1</ref><cid>1</cid><dty>3</dty><lge><" + tag.encode() + b">" + value.encode()
    body += b"</" + tag.encode() + b"></lge></mrq>"
    assert refused(body).snu is Snu.WRONG_DATA


def test_negative_coordinates_are_read() -> None:
    body = b"<mrq><ref>1</ref><cid>1</cid><dty>3</dty><lge><geo>-33.9,-70.6</geo></lge></mrq>"
    assert request(body).extra["geo"] == "-33.9,-70.6"


def test_unknown_element_inside_lge_is_invalid_format() -> None:
    body = b"<mrq><ref>1</ref><cid>1</cid><dty>3</dty><lge><alt>3</alt></lge></mrq>"
    assert refused(body).snu is Snu.INVALID_FORMAT


def test_declared_latin1_on_ascii_body_is_read_as_utf8() -> None:
    body = b'<?xml version="1.0" encoding="ISO-8859-1"?><mrq><ref>1</ref><cid>1</cid><dty>3</dty></mrq>'
    assert request(body).ref == "1"


# -- building -------------------------------------------------------------------------------------


def test_build_mrq_writes_schema_order_and_reads_back() -> None:
    body = build_mrq(
        ref="A1",
        cid="123",
        dty="0003",
        stc="0010",
        did="d1",
        lte="Hall & stairs",
        lco="042",
        geo="59.3,18.0",
        tim="2014-04-28T12:00:00+01",
        crd="gsm:+46701445566|sip:unit@example.org",
    )
    assert body == (
        b"<mrq><ref>A1</ref><mty>ME</mty><cid>123</cid><dty>0003</dty><did>d1</did>"
        b"<crd>gsm:+46701445566</crd><crd>sip:unit@example.org</crd><stc>0010</stc><lco>042</lco>"
        b"<lge><geo>59.3,18.0</geo><tim>2014-04-28T12:00:00+01</tim></lge><lte>Hall &amp; stairs</lte></mrq>"
    )
    parsed = request(body)
    assert parsed.extra["lte"] == "Hall & stairs"
    assert parsed.crd == ("gsm:+46701445566", "sip:unit@example.org")


def test_build_mrq_heartbeat() -> None:
    body = build_mrq(ref="P1", cid="678", mty=MessageType.HEARTBEAT, dty="2")
    assert body == b"<mrq><ref>P1</ref><mty>PI</mty><cid>678</cid><dty>2</dty></mrq>"


def test_build_mrq_without_dty_is_refused_by_the_receiver() -> None:
    assert refused(build_mrq(ref="1", cid="1")).snu is Snu.MANDATORY_MISSING


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ref": "bad ref", "cid": "1"},
        {"ref": "1", "cid": "abc"},
        {"ref": "1", "cid": "1", "mty": "XX"},
        {"ref": "1", "cid": "1", "stc": " 10"},
        {"ref": "1", "cid": "1", "nope": "x"},
        {"ref": "1", "cid": "1", "lge": "x"},
        {"ref": "1", "cid": "1", "ite": "i" * 129},
    ],
)
def test_build_mrq_refuses_what_the_standard_does_not_allow(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        build_mrq(**kwargs)


def test_build_mrs_ok() -> None:
    assert build_mrs("1242", Snu.OK) == b"<mrs><ref>1242</ref><snu>0</snu></mrs>"


def test_build_mrs_voice_call_to_the_predefined_receiver() -> None:
    body = build_mrs("1243", Snu.OK, mre=VoiceMode.DUPLEX, cre=CallReply.PREDEFINED_RECEIVER)
    assert body == b"<mrs><ref>1243</ref><snu>0</snu><mre>1</mre><cre>61</cre></mrs>"


def test_build_mrs_voice_call_to_a_number() -> None:
    body = build_mrs("1", Snu.OK, mre=VoiceMode.MICROPHONE_ONLY, cnb="gsm:+46701445566")
    assert body == b"<mrs><ref>1</ref><snu>0</snu><mre>2</mre><cre>62</cre><tnu>gsm:+46701445566</tnu></mrs>"


def test_build_mrs_refusal_with_text_and_heartbeat_interval() -> None:
    body = build_mrs("1", Snu.WRONG_DATA, ste="<cid> has wrong content", hbi=60)
    assert body == b"<mrs><ref>1</ref><snu>3</snu><ste>&lt;cid&gt; has wrong content</ste><hbi>60</hbi></mrs>"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cre": "62"},  # transferred number without one
        {"cre": "63"},
        {"cre": "00"},
        {"cre": "1"},
        {"hbi": 0},
        {"hbi": 1441},
        {"ste": "s" * 129},
        {"ste": "tab\t"},
    ],
)
def test_build_mrs_refuses_what_the_standard_does_not_allow(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_mrs("1", Snu.OK, **kwargs)  # type: ignore[arg-type]


def test_build_mrs_refuses_a_bad_ref() -> None:
    with pytest.raises(ValueError):
        build_mrs("not-a-ref", Snu.OK)


def test_callback_window() -> None:
    assert parse_mrs(build_mrs("1", Snu.OK, cre="05")) == MessageResponse("1", Snu.OK, cre="05")


# -- parse_mrs ------------------------------------------------------------------------------------


def test_parse_mrs_every_tag() -> None:
    body = (
        b"<mrs><ref>9</ref><snu>0</snu><ste>fine</ste><cve>01.00</cve><mre>01</mre><cre>62</cre>"
        b"<tnu>gsm:+1</tnu><tnu>sip:a@b</tnu><hbi>1440</hbi></mrs>"
    )
    assert parse_mrs(body) == MessageResponse(
        "9",
        Snu.OK,
        ste="fine",
        cve="01.00",
        mre=VoiceMode.DUPLEX,
        cre="62",
        tnu=("gsm:+1", "sip:a@b"),
        hbi=1440,
    )


@pytest.mark.parametrize(
    ("body", "snu"),
    [
        (b"<mrs><snu>0</snu></mrs>", Snu.REFERENCE_MISSING),
        (b"<mrs><ref>1</ref></mrs>", Snu.MANDATORY_MISSING),
        (b"<mrs><ref>1</ref><snu>8</snu></mrs>", Snu.WRONG_DATA),
        (b"<mrs><ref>1</ref><snu>0</snu><mre>4</mre></mrs>", Snu.WRONG_DATA),
        (b"<mrs><ref>1</ref><snu>0</snu><hbi>0</hbi></mrs>", Snu.WRONG_DATA),
        (b"<mrq><ref>1</ref><cid>1</cid><dty>1</dty></mrq>", Snu.INVALID_FORMAT),
        (b"<mrs><ref>1</ref><snu>0</snu>" + b" " * MAX_BODY_BYTES + b"</mrs>", Snu.TOO_LONG),
        (XXE.replace(b"mrq", b"mrs"), Snu.INVALID_FORMAT),
    ],
)
def test_parse_mrs_refusals(body: bytes, snu: Snu) -> None:
    result = parse_mrs(body)
    assert isinstance(result, ScaipRefused) and result.snu is snu


@pytest.mark.parametrize("snu", list(Snu))
@pytest.mark.parametrize("mre", [None, *VoiceMode])
def test_mrs_round_trip(snu: Snu, mre: VoiceMode | None) -> None:
    parsed = parse_mrs(build_mrs("Ref16charsxxxxxx", snu, mre=mre))
    assert parsed == MessageResponse("Ref16charsxxxxxx", snu, mre=mre)


def test_module_never_imports_a_third_party_xml_library() -> None:
    assert "defusedxml" not in scaip.__dict__ and "lxml" not in scaip.__dict__


def test_line_break_before_the_declaration_is_skipped() -> None:
    body = b'\r\n  <?xml version="1.0"?>\n<mrq><ref>1</ref><cid>1</cid><dty>3</dty></mrq>'
    assert request(body).ref == "1"


def test_byte_order_mark_is_read() -> None:
    assert request(b"\xef\xbb\xbf<mrq><ref>1</ref><cid>1</cid><dty>3</dty></mrq>").ref == "1"


def test_answer_refusal() -> None:
    result = refused(with_tag("ite", "\u00e5" * 129))
    answer = scaip.answer_refusal(result)
    assert answer is not None
    parsed = parse_mrs(answer)
    assert isinstance(parsed, MessageResponse)
    assert (parsed.ref, parsed.snu) == ("R9", Snu.WRONG_DATA)
    assert parsed.ste is not None and parsed.ste.startswith("<ite> has wrong content '\\xe5")
    assert len(parsed.ste) <= 128
    assert scaip.answer_refusal(refused(b"<mrq><cid>1</cid><dty>3</dty></mrq>")) is None


def test_requests_are_hashable_and_compare_by_value() -> None:
    one = request(build_mrq(ref="1", cid="2", dty="3", lte="Hall"))
    again = request(build_mrq(ref="1", cid="2", dty="3", lte="Hall"))
    assert one == again and len({one, again}) == 1
    assert one != request(build_mrq(ref="1", cid="2", dty="3", lte="Loft"))
