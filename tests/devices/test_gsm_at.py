"""Byte vectors for the AT response codec (devices/gsm_at.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devices.gsm_at import (
    NEED_DATA,
    PROMPT,
    AtStream,
    FinalResult,
    InfoLine,
    NewMessage,
    Registration,
    RegistrationUpdate,
    SignalQuality,
    SmsRecord,
    Unsolicited,
    build_cmgl,
    build_cmgs,
    build_sms_text,
    decode_ucs2,
    encode_ucs2,
    parse_cmgs,
    parse_creg,
    parse_csq,
    parse_final,
    parse_scts,
    split_fields,
)


def events(data: bytes, *, charset: str = "IRA", prompt: bool = False) -> list[object]:
    stream = AtStream(charset=charset)
    if prompt:
        stream.expect_prompt()
    stream.feed(data)
    out: list[object] = []
    while (item := stream.next_event()) is not NEED_DATA:
        out.append(item)
    return out


FINALS = [
    ("OK", FinalResult("OK", True, "OK")),
    ("ERROR", FinalResult("ERROR", False, "ERROR")),
    ("+CME ERROR: 10", FinalResult("+CME ERROR: 10", False, "CME", 10)),
    ("+CMS ERROR: 500", FinalResult("+CMS ERROR: 500", False, "CMS", 500)),
    ("+CMS ERROR:321", FinalResult("+CMS ERROR:321", False, "CMS", 321)),
    ("+CME ERROR: SIM not inserted", FinalResult("+CME ERROR: SIM not inserted", False, "CME", None)),
    ("NO CARRIER", FinalResult("NO CARRIER", False, "NO CARRIER")),
]


@pytest.mark.parametrize(("line", "expected"), FINALS)
def test_final_result_codes(line: str, expected: FinalResult) -> None:
    assert parse_final(line) == expected
    assert events(f"\r\n{line}\r\n".encode()) == [expected]


def test_cms_error_description_names_the_error() -> None:
    result = parse_final("+CMS ERROR: 321")
    assert result is not None and "invalid memory index" in result.description


@pytest.mark.parametrize("line", ["OKAY", "+CMTI: x", "ERRORS", "ok"])
def test_not_final(line: str) -> None:
    assert parse_final(line) is None


def test_info_lines_then_ok() -> None:
    out = events(b"\r\n+CSQ: 17,99\r\n\r\nOK\r\n")
    assert out == [InfoLine("+CSQ: 17,99"), FinalResult("OK", True, "OK")]


def test_echo_is_an_info_line() -> None:
    assert events(b"AT\r\r\nOK\r\n") == [InfoLine("AT"), FinalResult("OK", True, "OK")]


def test_every_prefix_of_a_response_needs_data() -> None:
    data = b'\r\n+CMGR: "REC UNREAD","+447700900123",,"26/05/01,12:00:00+04"\r\nALARM FALL\r\n\r\nOK\r\n'
    for cut in range(len(data) - 2):  # until the final OK's CR arrives nothing is complete
        stream = AtStream()
        stream.feed(data[:cut])
        while (item := stream.next_event()) is not NEED_DATA:
            assert not isinstance(item, FinalResult | SmsRecord), (cut, item)


def test_unsolicited_codes() -> None:
    data = b'\r\n+CMTI: "SM",7\r\n\r\n+CREG: 5\r\n\r\n+CREG: 1,"00A1","1B2C"\r\n\r\nRING\r\n\r\nRDY\r\n'
    out = events(data)
    assert out[:3] == [NewMessage("SM", 7), RegistrationUpdate(5), RegistrationUpdate(1)]
    assert out[3] == Unsolicited("RING") and not out[3].means_restart  # type: ignore[union-attr]
    assert out[4] == Unsolicited("RDY") and out[4].means_restart  # type: ignore[union-attr]


def test_creg_query_answer_is_not_unsolicited() -> None:
    assert events(b"\r\n+CREG: 1,5\r\n\r\nOK\r\n")[0] == InfoLine("+CREG: 1,5")


def test_cmgr_text_mode_with_a_body_that_looks_like_ok() -> None:
    data = b'\r\n+CMGR: "REC UNREAD","+447700900123",,"26/05/01,12:00:00+04"\r\nOK\r\n\r\nOK\r\n'
    (record, final) = events(data)
    assert isinstance(record, SmsRecord) and record.text == "OK" and record.index is None
    assert record.sender == "+447700900123" and record.status == "REC UNREAD"
    assert record.timestamp == datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    assert final == FinalResult("OK", True, "OK")


def test_cmgr_multi_line_body() -> None:
    data = b'\r\n+CMGR: "REC READ","+44",,"26/05/01,12:00:00+00"\r\nline one\r\nline two\r\n\r\nOK\r\n'
    record = events(data)[0]
    assert isinstance(record, SmsRecord) and record.text == "line one\nline two"


def test_cmgl_lists_several_with_indexes() -> None:
    data = (
        b'\r\n+CMGL: 1,"REC UNREAD","+441",,"26/05/01,12:00:00+04"\r\nALARM PENDANT'
        b'\r\n+CMGL: 4,"REC READ","+442",,"26/05/01,12:01:00+04",145,11\r\nLOW BATTERY\r\n\r\nOK\r\n'
    )
    out = events(data)
    assert [(r.index, r.sender, r.text) for r in out[:2]] == [  # type: ignore[union-attr]
        (1, "+441", "ALARM PENDANT"),
        (4, "+442", "LOW BATTERY"),
    ]
    assert out[2] == FinalResult("OK", True, "OK") and len(out) == 3


def test_empty_cmgl() -> None:
    assert events(b"\r\nOK\r\n") == [FinalResult("OK", True, "OK")]


def test_ucs2_charset_decodes_sender_and_body() -> None:
    text = "Hilfe! Ich bin gestürzt 😢"
    data = (
        f'\r\n+CMGR: "REC UNREAD","{encode_ucs2("+447700900123")}",,"26/05/01,12:00:00+04"\r\n'
        f"{encode_ucs2(text)}\r\n\r\nOK\r\n"
    ).encode()
    record, final = events(data, charset="UCS2")
    assert isinstance(record, SmsRecord) and record.text == text and record.sender == "+447700900123"
    assert final == FinalResult("OK", True, "OK")


def test_ucs2_body_reading_ok_is_still_a_body() -> None:
    data = f'\r\n+CMGR: "REC UNREAD","{encode_ucs2("+44")}",,"26/05/01,12:00:00+04"\r\n004F004B\r\n\r\nOK\r\n'
    record, _ = events(data.encode(), charset="UCS2")
    assert isinstance(record, SmsRecord) and record.text == "OK"


def test_ucs2_empty_body() -> None:
    data = f'\r\n+CMGR: "REC UNREAD","{encode_ucs2("+44")}",,"26/05/01,12:00:00+04"\r\n\r\nOK\r\n'
    record, final = events(data.encode(), charset="UCS2")
    assert isinstance(record, SmsRecord) and record.text == "" and isinstance(final, FinalResult)


def test_ira_charset_with_ucs2_dcs_is_hex_decoded() -> None:
    body = encode_ucs2("Zoë fell — help")
    data = (
        f'\r\n+CMGR: "REC UNREAD","+44",,"26/05/01,12:00:00+04",145,4,0,8,"+44778",145,15\r\n'
        f"{body}\r\n\r\nOK\r\n"
    ).encode()
    record = events(data)[0]
    assert isinstance(record, SmsRecord) and record.dcs == 8 and record.text == "Zoë fell — help"


def test_ira_body_that_is_hex_but_gsm7_stays_text() -> None:
    data = (
        b'\r\n+CMGR: "REC UNREAD","+44",,"26/05/01,12:00:00+04",145,4,0,0,"+44778",145,4\r\n'
        b"CAFE\r\n\r\nOK\r\n"
    )
    record = events(data)[0]
    assert isinstance(record, SmsRecord) and record.text == "CAFE"


def test_non_utf8_bytes_do_not_break_the_stream() -> None:
    out = events(b"\r\n\xff\xfe junk\r\n\r\nOK\r\n")
    assert isinstance(out[0], InfoLine) and out[1] == FinalResult("OK", True, "OK")


def test_cmgs_prompt_and_reference() -> None:
    out = events(b"\r\n> ", prompt=True)
    assert out == [PROMPT]
    assert events(b"\r\n+CMGS: 42\r\n\r\nOK\r\n")[0] == InfoLine("+CMGS: 42")
    assert parse_cmgs(["+CMGS: 42"]) == 42
    assert parse_cmgs([]) is None


def test_prompt_only_when_expected() -> None:
    assert events(b"\r\n> ") == []


def test_cr_then_lf_in_separate_reads_is_one_line_end() -> None:
    stream = AtStream()
    stream.feed(b"\r\nOK\r")
    assert stream.next_event() == FinalResult("OK", True, "OK")
    stream.feed(b"\n\r\nERROR\r\n")
    assert stream.next_event() == FinalResult("ERROR", False, "ERROR")
    assert stream.next_event() is NEED_DATA


def test_csq_and_creg_parsing() -> None:
    assert parse_csq(["+CSQ: 21,99"]) == SignalQuality(21, 99)
    assert SignalQuality(21, 99).dbm == -71
    assert SignalQuality(99, 99).dbm is None
    assert parse_creg(["+CREG: 0,1"]) == Registration(1)
    assert parse_creg(['+CREG: 2,5,"00A1","1B2C"']) == Registration(5, "00A1", "1B2C")
    assert parse_creg(["+CREG: 0,3"]).registered is False
    roaming = parse_creg(["+CREG: 0,5"])
    assert roaming.registered and roaming.description.endswith("roaming")
    with pytest.raises(ValueError):
        parse_csq(["garbage"])


def test_scts() -> None:
    assert parse_scts("26/05/01,12:00:00+04") == datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    assert parse_scts("26/05/01,12:00:00-08") == datetime(2026, 5, 1, 14, 0, tzinfo=UTC)
    assert parse_scts("nonsense") is None
    assert parse_scts("26/13/01,12:00:00+00") is None


def test_split_fields_respects_quotes() -> None:
    assert split_fields(' "REC READ","+44",,"26/05/01,12:00:00+04"') == [
        "REC READ",
        "+44",
        "",
        "26/05/01,12:00:00+04",
    ]


def test_command_builders() -> None:
    assert build_cmgl("ALL") == b'AT+CMGL="ALL"\r'
    assert build_cmgl("ALL", "UCS2") == b'AT+CMGL="0041004C004C"\r'
    assert build_cmgs("+44770", "UCS2") == b'AT+CMGS="002B00340034003700370030"\r'
    assert build_sms_text("hi ü", "UCS2") == b"0068006900200" + b"0FC\x1a"
    assert build_sms_text("hi ü\x1a") == b"hi ??\x1a"
    assert decode_ucs2(encode_ucs2("😢")) == "😢"
    with pytest.raises(ValueError):
        decode_ucs2("XYZ1")
