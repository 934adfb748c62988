"""GSM modem AT command responses (3GPP TS 27.007 / 27.005, SMS text mode), sans-I/O.

:class:`AtStream` takes the modem's bytes and hands out one thing at a time: an :class:`InfoLine`
(part of the answer to the command in progress), a :class:`FinalResult` (``OK``, ``ERROR``,
``+CME ERROR: n``, ``+CMS ERROR: n`` ...), an :class:`SmsRecord` (a ``+CMGR``/``+CMGL`` header with
its body), an unsolicited :class:`NewMessage` (``+CMTI``), :class:`RegistrationUpdate` (``+CREG: n``),
another :class:`Unsolicited` line (``RING``, ``RDY`` ...), the ``> `` :data:`PROMPT` of ``AT+CMGS``,
or :data:`NEED_DATA`.

Message bodies: with ``AT+CSCS="UCS2"`` every string (bodies and numbers) is UCS2 in hex, which is
unambiguous: any character survives, and a body such as ``OK`` cannot be mistaken for a result code.
In ``IRA``/``GSM`` mode a body ends at the next header, or at a result code that follows an empty
line (the modem frames its final result as ``\\r\\n\\r\\nOK\\r\\n`` after a body); a message whose
``dcs`` (``AT+CSDH=1``) says UCS2 is hex-decoded.

The ``build_*`` helpers make command lines; ``parse_*`` read the info lines of one answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from devices.numbers import whole_number

CTRL_Z = b"\x1a"
ESC = b"\x1b"
MAX_LINE = 2048

# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedData:
    """No complete line yet."""


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class Prompt:
    """The ``> `` prompt: send the message text, then Ctrl-Z."""


PROMPT = Prompt()


@dataclass(frozen=True, slots=True)
class FinalResult:
    """The end of a command's answer. ``code`` carries the number of ``+CME/+CMS ERROR: n``."""

    text: str
    ok: bool
    kind: str  # OK, ERROR, CME, CMS, NO CARRIER, BUSY, NO ANSWER, NO DIALTONE
    code: int | None = None

    @property
    def description(self) -> str:
        if self.kind == "CMS" and self.code is not None:
            return f"+CMS ERROR {self.code} ({CMS_ERRORS.get(self.code, 'unknown')})"
        if self.kind == "CME" and self.code is not None:
            return f"+CME ERROR {self.code} ({CME_ERRORS.get(self.code, 'unknown')})"
        return self.text


@dataclass(frozen=True, slots=True)
class InfoLine:
    text: str


@dataclass(frozen=True, slots=True)
class Unsolicited:
    """A result code the modem sent on its own (RING, RDY, +CPIN: READY, SMS Ready, ...)."""

    text: str

    @property
    def means_restart(self) -> bool:
        """True for the banners modems print after a power-up or reset."""
        return self.text in RESTART_BANNERS


@dataclass(frozen=True, slots=True)
class NewMessage:
    """``+CMTI: "<mem>",<index>``: an SMS was stored."""

    storage: str
    index: int


@dataclass(frozen=True, slots=True)
class RegistrationUpdate:
    """Unsolicited ``+CREG: <stat>[,<lac>,<ci>]``."""

    stat: int


@dataclass(frozen=True, slots=True)
class SmsRecord:
    """One stored SMS from ``+CMGR`` (``index`` None) or ``+CMGL``."""

    index: int | None
    status: str
    sender: str
    raw_timestamp: str
    text: str
    dcs: int | None = None

    @property
    def timestamp(self) -> datetime | None:
        return parse_scts(self.raw_timestamp)


AtEvent = (
    NeedData | Prompt | FinalResult | InfoLine | Unsolicited | NewMessage | RegistrationUpdate | SmsRecord
)

RESTART_BANNERS = frozenset(
    {"RDY", "SMS Ready", "Call Ready", "+CFUN: 1", "+CPIN: READY", "START", "+QIND: SMS DONE", "PB DONE"}
)
CMS_ERRORS = {
    300: "ME failure",
    302: "operation not allowed",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    320: "memory failure",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}
CME_ERRORS = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    13: "SIM failure",
    14: "SIM busy",
    30: "no network service",
    100: "unknown",
}

_FINAL_WORDS = {
    "OK": True,
    "ERROR": False,
    "NO CARRIER": False,
    "BUSY": False,
    "NO ANSWER": False,
    "NO DIALTONE": False,
}
_ERR_RE = re.compile(r"\+(CME|CMS) ERROR: *(.*)")
_CMTI_RE = re.compile(r'\+CMTI: *"([^"]*)", *(\d+)')
_CREG_URC_RE = re.compile(r"\+CREG: *(\d+)(?:, *\"?[0-9A-Fa-f]*\"?, *\"?[0-9A-Fa-f]*\"?.*)?")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{4})*")


def parse_final(line: str) -> FinalResult | None:
    """The final result code on ``line``, or None when it is not one."""
    if line in _FINAL_WORDS:
        kind = line
        return FinalResult(line, _FINAL_WORDS[line], kind)
    m = _ERR_RE.fullmatch(line)
    if m:
        code = whole_number(m.group(2))
        return FinalResult(line, False, m.group(1), code)
    return None


def split_fields(text: str) -> list[str]:
    """Split ``a,"b,c",d`` into fields, unquoting quoted ones."""
    fields: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            fields.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    fields.append("".join(cur).strip())
    return fields


# --- text coding ----------------------------------------------------------------------------------


def encode_ucs2(text: str) -> str:
    """Text as UCS2 (UTF-16BE) hex, the form ``AT+CSCS="UCS2"`` expects."""
    return text.encode("utf-16-be").hex().upper()


def decode_ucs2(hex_text: str) -> str:
    """UCS2/UTF-16BE hex to text; raises ValueError when it is not that."""
    if not _HEX_RE.fullmatch(hex_text):
        raise ValueError("not UCS2 hex")
    return bytes.fromhex(hex_text).decode("utf-16-be")


def _is_ucs2_dcs(dcs: int | None) -> bool:
    # General data coding groups 00xx and the message-class group 1111 (TS 23.038).
    if dcs is None:
        return False
    if dcs & 0xC0 == 0x00:
        return dcs & 0x0C == 0x08
    return False


def decode_field(value: str, charset: str, dcs: int | None = None) -> str:
    """A string field or body as text: hex-decoded under UCS2 (charset or dcs), else as sent."""
    if charset == "UCS2" or _is_ucs2_dcs(dcs):
        try:
            return decode_ucs2(value)
        except (ValueError, UnicodeDecodeError):
            return value
    return value


def parse_scts(value: str) -> datetime | None:
    """``yy/MM/dd,hh:mm:ss±zz`` (zz in quarter hours) to an aware datetime; None if unreadable."""
    m = re.fullmatch(r"(\d\d)/(\d\d)/(\d\d),(\d\d):(\d\d):(\d\d)(?:([+-])(\d\d?))?", value.strip())
    if not m:
        return None
    yy, mo, dd, hh, mi, ss = (int(g) for g in m.groups()[:6])
    offset = timedelta(minutes=15 * int(m.group(8) or 0)) * (-1 if m.group(7) == "-" else 1)
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError:
        return None


# --- the stream -----------------------------------------------------------------------------------


class AtStream:
    """Turn modem output into events. Set ``charset`` to what ``AT+CSCS`` was set to."""

    def __init__(self, *, charset: str = "IRA") -> None:
        self.charset = charset
        self._buf = bytearray()
        self._skip_lf = False
        self._expect_prompt = False
        self._header: tuple[int | None, list[str], str] | None = None  # (index, fields, kind)
        self._body: list[str] = []
        self._blank_after_body = False
        self._pending: list[AtEvent] = []

    def feed(self, data: bytes) -> None:
        self._buf += data

    def expect_prompt(self) -> None:
        """The next ``> `` at the start of a line is the AT+CMGS prompt."""
        self._expect_prompt = True

    def reset(self) -> None:
        """Forget any partial answer (after a timeout or a modem reset)."""
        self._buf.clear()
        self._header, self._body, self._pending = None, [], []
        self._expect_prompt = False

    def next_event(self) -> AtEvent:
        while True:
            if self._pending:
                return self._pending.pop(0)
            line = self._next_line()
            if line is None:
                if self._expect_prompt and self._buf.startswith(b">"):
                    del self._buf[: 2 if self._buf.startswith(b"> ") else 1]
                    self._expect_prompt = False
                    return PROMPT
                return NEED_DATA
            event = self._classify(line)
            if event is not None:
                return event

    def _next_line(self) -> str | None:
        buf = self._buf
        if self._skip_lf and buf[:1] == b"\n":
            del buf[:1]
        self._skip_lf = False
        m = re.search(rb"[\r\n]", buf)
        if m is None:
            if len(buf) > MAX_LINE:
                line = bytes(buf)
                buf.clear()
                return line.decode("latin-1")
            return None
        i = m.start()
        line = bytes(buf[:i])
        if buf[i : i + 2] == b"\r\n":
            del buf[: i + 2]
        else:
            self._skip_lf = buf[i] == 0x0D
            del buf[: i + 1]
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            return line.decode("latin-1")

    def _classify(self, line: str) -> AtEvent | None:
        if self._header is not None:
            return self._in_message(line)
        if not line:
            return None
        final = parse_final(line)
        if final is not None:
            return final
        if line.startswith(("+CMGR:", "+CMGL:")):
            self._start_message(line)
            return None
        m = _CMTI_RE.fullmatch(line)
        if m:
            return NewMessage(m.group(1), int(m.group(2)))
        m = _CREG_URC_RE.fullmatch(line)
        if m and len(split_fields(line.split(":", 1)[1])) in (1, 3):
            return RegistrationUpdate(int(m.group(1)))
        if line in RESTART_BANNERS or line in ("RING",) or line.startswith(("+CLIP:", "+CDS:", "+CUSD:")):
            return Unsolicited(line)
        return InfoLine(line)

    def _start_message(self, line: str) -> None:
        kind, _, rest = line.partition(":")
        fields = split_fields(rest)
        index = None
        if kind == "+CMGL":
            index = whole_number(fields[0])
            fields = fields[1:]
        self._header = (index, fields, kind)
        self._body = []
        self._blank_after_body = False

    def _finish_message(self) -> SmsRecord:
        assert self._header is not None
        index, f, kind = self._header
        self._header = None
        # +CMGR: stat,oa,alpha,scts[,tooa,fo,pid,dcs,...]   +CMGL: (index,)stat,oa,alpha,scts[,tooa,len]
        dcs = None
        if kind == "+CMGR" and len(f) >= 8:
            dcs = whole_number(f[7])
        body = "\n".join(self._body)
        sender = f[1] if len(f) > 1 else ""
        return SmsRecord(
            index=index,
            status=decode_field(f[0], self.charset) if f else "",
            sender=decode_field(sender, self.charset),
            raw_timestamp=f[3] if len(f) > 3 else "",
            text=decode_field(body, self.charset, dcs),
            dcs=dcs,
        )

    def _in_message(self, line: str) -> AtEvent | None:
        final = parse_final(line)
        if self.charset == "UCS2":
            # One hex line is the body; an empty body is followed directly by the final result.
            if not line:
                return None
            if final is not None and not _HEX_RE.fullmatch(line):
                self._pending.append(final)
                return self._finish_message()
            if line.startswith("+CMGL:"):
                record = self._finish_message()
                self._start_message(line)
                return record
            self._body.append(line)
            return self._finish_message()
        if not line:
            self._blank_after_body = True
            return None
        if line.startswith("+CMGL:"):
            record = self._finish_message()
            self._start_message(line)
            return record
        if final is not None and self._blank_after_body:
            self._pending.append(final)
            return self._finish_message()
        if self._blank_after_body:
            self._body.append("")
            self._blank_after_body = False
        self._body.append(line)
        return None


# --- commands and answers -------------------------------------------------------------------------


def build(command: str) -> bytes:
    """One command line as bytes (``AT...`` and CR)."""
    return command.encode("ascii") + b"\r"


def _string_arg(value: str, charset: str) -> str:
    return encode_ucs2(value) if charset == "UCS2" else value.replace('"', "")


def build_cmgr(index: int) -> bytes:
    return build(f"AT+CMGR={index}")


def build_cmgd(index: int) -> bytes:
    return build(f"AT+CMGD={index}")


def build_cmgl(status: str = "ALL", charset: str = "IRA") -> bytes:
    """List messages; ``status`` is REC UNREAD, REC READ or ALL (encoded in the TE charset)."""
    return build(f'AT+CMGL="{_string_arg(status, charset)}"')


def build_cmgs(number: str, charset: str = "IRA") -> bytes:
    """Start sending an SMS: wait for the prompt, then send :func:`build_sms_text`."""
    return build(f'AT+CMGS="{_string_arg(number, charset)}"')


def build_sms_text(text: str, charset: str = "IRA") -> bytes:
    """The message text after the prompt, ended with Ctrl-Z."""
    if charset == "UCS2":
        return encode_ucs2(text).encode("ascii") + CTRL_Z
    safe = "".join(c if c.isascii() and c not in "\x1a\x1b" else "?" for c in text)
    return safe.encode("ascii") + CTRL_Z


@dataclass(frozen=True, slots=True)
class SignalQuality:
    """``+CSQ: <rssi>,<ber>``; rssi 99 means unknown."""

    rssi: int
    ber: int

    @property
    def dbm(self) -> int | None:
        if self.rssi == 99 or not 0 <= self.rssi <= 31:
            return None
        return -113 + 2 * self.rssi


REG_STATES = {
    0: "not registered",
    1: "registered, home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "registered, roaming",
}


@dataclass(frozen=True, slots=True)
class Registration:
    """``+CREG: <n>,<stat>[,<lac>,<ci>]``."""

    stat: int
    lac: str | None = None
    ci: str | None = None

    @property
    def registered(self) -> bool:
        return self.stat in (1, 5)

    @property
    def description(self) -> str:
        return REG_STATES.get(self.stat, f"state {self.stat}")


def _info(lines: list[str], prefix: str) -> list[str]:
    for line in lines:
        if line.startswith(prefix):
            return split_fields(line[len(prefix) :])
    raise ValueError(f"no {prefix} line in the answer")


def parse_csq(lines: list[str]) -> SignalQuality:
    f = _info(lines, "+CSQ:")
    rssi = whole_number(f[0])
    if rssi is None:
        raise ValueError(f"+CSQ: {f[0][:20]!r} is not a number")
    ber = whole_number(f[1]) if len(f) > 1 else None
    return SignalQuality(rssi, 99 if ber is None else ber)


def parse_creg(lines: list[str]) -> Registration:
    f = _info(lines, "+CREG:")
    if len(f) in (2, 4):
        f = f[1:]  # drop <n>
    return Registration(int(f[0]), f[1] if len(f) > 1 else None, f[2] if len(f) > 2 else None)


def parse_cmgs(lines: list[str]) -> int | None:
    """The message reference of a sent SMS."""
    try:
        f = _info(lines, "+CMGS:")
    except ValueError:
        return None
    return whole_number(f[0])
