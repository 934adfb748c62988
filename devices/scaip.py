"""SCAIP message bodies (SS 91100:2014, CLC/TS 50134-9), sans-I/O: the ``<mrq>`` a social alarm sends
and the ``<mrs>`` the alarm receiver answers, both ways.

A body is a small flat XML document carried in a SIP MESSAGE as ``application/scaip+xml``::

    <mrq><ref>1234</ref><mty>ME</mty><cid>123456</cid><dty>0003</dty><stc>0010</stc></mrq>
    <mrs><ref>1234</ref><snu>0</snu><mre>1</mre></mrs>

What this module gives (no I/O; docs/scaip.md has the formats and where each rule was verified):

- :func:`parse_mrq` -- body bytes to an :class:`AlarmRequest` or a :class:`ScaipRefused` whose
  :class:`Snu` is the status number to answer with. It never raises on any input.
- :func:`build_mrs` -- the answer, with the voice-call instructions (``mre``, ``cre``, ``tnu``);
  :func:`answer_refusal` -- the answer to a refused request.
- :func:`build_mrq`, :func:`parse_mrs` -- the unit's side, for simulators and tests.

XML is read with the standard library's expat, with any document type declaration refused: no DTD
means no entity can be declared, so no external entity (XXE) and no entity expansion (billion laughs)
can reach the parser (docs/design-notes.md, "SCAIP XML"). The meaning of the codes is in
:mod:`devices.scaip_codes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from xml.parsers import expat
from xml.sax.saxutils import escape

#: The IANA-registered media type of a SCAIP body (SS 91100:2014, 9.1).
MEDIA_TYPE = "application/scaip+xml"
#: The namespace of the schema in SS 91100:2014 Annex F. Units in the field send no namespace; both are read.
NAMESPACE = "http://www.hi.se/2012/XScaipXML"
#: A body longer than this is refused with :attr:`Snu.TOO_LONG`. The standard asks senders to split a
#: request above 1300 bytes (``ame``) and its guideline says units never need to; the margin is for
#: XML declarations and pretty-printing.
MAX_BODY_BYTES = 4096
#: The protocol version assumed when ``ver`` is omitted.
DEFAULT_VERSION = "01.00"


class Snu(IntEnum):
    """The status number of a Message Response (SS 91100:2014, table 2)."""

    OK = 0  # handled; no further action
    TOO_LONG = 1  # message too long
    INVALID_FORMAT = 2
    WRONG_DATA = 3  # wrong data content
    HOLD = 4  # being processed: resend the request for an update (every 5-20 s)
    NOT_TREATED = 5  # could not be handled: try the next alarm action
    BUSY = 6  # cannot be handled now: try again later or the next alarm action
    MANDATORY_MISSING = 7  # a mandatory tag is missing
    REFERENCE_MISSING = 10
    UNDEFINED_ERROR = 99


class MessageType(StrEnum):
    """``mty``: what a Message Request is (omitted means MESSAGE)."""

    MESSAGE = "ME"  # an event: an alarm or a status message
    RESET = "RE"  # the unit withdraws the message session of ``ref`` (it gave up waiting for snu 0)
    INFORMATION = "IN"  # new information on the event of ``ref`` (same mandatory data)
    HEARTBEAT = "PI"  # the unit's periodic poll


class VoiceMode(StrEnum):
    """``mre``: the voice call the unit opens after snu 0 (omitted means NONE)."""

    NONE = "0"
    DUPLEX = "1"
    MICROPHONE_ONLY = "2"  # simplex: the centre hears the room, the unit's speaker is muted
    SPEAKER_ONLY = "3"  # simplex: the room hears the centre, the unit's microphone is muted


class CallReply(StrEnum):
    """``cre``: where the unit places the voice call ("01"-"60": callback window in minutes)."""

    PREDEFINED_RECEIVER = "61"  # the receiver configured in the unit (the default when omitted)
    TRANSFERRED_NUMBER = "62"  # the URI or number in ``tnu``


@dataclass(frozen=True, slots=True)
class AlarmRequest:
    """A parsed ``<mrq>``. Texts are as sent, stripped of surrounding white space; codes are not
    padded (``dty`` may be ``3``, ``03`` or ``0003``: :func:`devices.scaip_codes.code4` reads them)."""

    ref: str  # 1-16 of [0-9a-zA-Z], echoed in the answer
    cid: str  # controller id: the unit's account, digits
    mty: str | None  # message type as sent; None means MESSAGE
    ver: str | None
    dty: str | None  # device type code (mandatory, so always set on a parsed request)
    did: str | None  # device id
    stc: str | None  # status code; None means alarm
    #: every other known tag (lge's as geo, tim, gga); left out of the hash, so requests can be set members
    extra: dict[str, str] = field(default_factory=dict, hash=False)
    crd: tuple[str, ...] = ()  # every caller-id (one per media: "gsm:+46...", "sip:...", "no-voice:")

    @property
    def message_type(self) -> MessageType:
        """The message type, MESSAGE when omitted."""
        return MessageType(self.mty) if self.mty else MessageType.MESSAGE


@dataclass(frozen=True, slots=True)
class MessageResponse:
    """A parsed ``<mrs>`` (the unit's side)."""

    ref: str
    snu: Snu
    ste: str | None = None  # status text
    cve: str | None = None  # common version
    mre: VoiceMode | None = None
    cre: str | None = None  # two digits: "61", "62" or a callback window "01"-"60"
    tnu: tuple[str, ...] = ()  # transferred numbers/URIs for cre 62
    hbi: int | None = None  # heartbeat interval, minutes


@dataclass(frozen=True, slots=True)
class ScaipRefused:
    """A body that is not a valid message: answer with ``snu`` (echoing ``ref`` when it could be read;
    without a ref there is nothing to answer in SCAIP, only at the SIP level)."""

    snu: Snu
    detail: str  # human-readable reason, for logs and metrics: printable US-ASCII (values escaped)
    ref: str | None


# -- field rules ------------------------------------------------------------------------------------

_REF = re.compile(r"[0-9a-zA-Z]{1,16}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _digits(low: int, high: int) -> Callable[[str], bool]:
    pattern = re.compile(rf"[0-9]{{{low},{high}}}")
    return lambda text: pattern.fullmatch(text) is not None


def _matches(regex: str) -> Callable[[str], bool]:
    pattern = re.compile(regex)
    return lambda text: pattern.fullmatch(text) is not None


def _text(high: int, *, ascii_only: bool = False) -> Callable[[str], bool]:
    """Free text of 1 to ``high`` characters: printable US-ASCII where the standard says so, else any
    character XML allows (the parser has checked those)."""

    def check(text: str) -> bool:
        if not 1 <= len(text) <= high:
            return False
        return _PRINTABLE.fullmatch(text) is not None if ascii_only else True

    return check


#: Each known ``<mrq>`` tag and its rule (SS 91100:2014 table 1; lengths are the normative table's
#: where the informative schema differs -- docs/scaip.md). In schema order, the order we write.
MRQ_RULES: dict[str, Callable[[str], bool]] = {
    "ref": lambda text: _REF.fullmatch(text) is not None,
    "ver": _matches(r"[0-9]{2}\.[0-9]{2}"),
    "sco": _matches(r"[0-3]"),
    "cha": _digits(1, 1),
    "mty": lambda text: text in MessageType.__members__.values(),
    "hbo": _digits(1, 3),
    "cid": _digits(1, 32),
    "dty": _digits(1, 4),
    "did": _text(16, ascii_only=True),
    "dco": _digits(1, 3),
    "dte": _text(32),
    "crd": _text(256, ascii_only=True),
    "stc": _digits(1, 4),
    "stt": _text(32),
    "pri": _digits(1, 1),
    "lco": _digits(1, 3),
    "lva": _text(2, ascii_only=True),
    "geo": _matches(r"[-0-9.,]{1,23}"),
    "tim": _matches(r"[0-9:+T-]{19,25}"),
    "gga": _text(81, ascii_only=True),
    "lte": _text(32),
    "ico": _digits(1, 3),
    "ite": _text(128),
    "ame": _digits(1, 4),
}
#: Tags a request must carry (an asterisk in table 1).
MRQ_MANDATORY = ("ref", "cid", "dty")
#: Tags that may repeat: one caller-id per media.
_MRQ_REPEATED = frozenset({"crd"})
#: The sub-elements of ``<lge>`` (location-geo).
_LGE_TAGS = ("geo", "tim", "gga")
#: The fields of :class:`AlarmRequest` that are not in ``extra``.
_MRQ_FIELDS = frozenset({"ref", "cid", "mty", "ver", "dty", "did", "stc", "crd"})

MRS_RULES: dict[str, Callable[[str], bool]] = {
    "ref": lambda text: _REF.fullmatch(text) is not None,
    "snu": lambda text: text.isascii() and text.isdigit() and len(text) <= 5 and int(text) in set(Snu),
    "ste": _text(128, ascii_only=True),
    "cve": _matches(r"[0-9]{2}\.[0-9]{2}"),
    "mre": lambda text: (
        text.isascii() and text.isdigit() and len(text) <= 2 and str(int(text)) in set(VoiceMode)
    ),
    "cre": lambda text: re.fullmatch(r"[0-9]{2}", text) is not None and 1 <= int(text) <= 62,
    "tnu": _text(256, ascii_only=True),
    "hbi": lambda text: text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= 1440,
}
_MRS_REPEATED = frozenset({"tnu"})


# -- reading XML ----------------------------------------------------------------------------------


class _Malformed(Exception):
    """The body is not a document we read: INVALID_FORMAT."""


@dataclass(slots=True)
class _Flat:
    """The root's children's texts, in document order (one level, plus lge's children)."""

    children: list[tuple[str, str]] = field(default_factory=list)


def _local(name: str) -> str:
    """An element name without the SCAIP namespace; any other namespace is malformed."""
    if " " in name:  # expat's "namespace-uri localname" with namespace_separator=" "
        uri, local = name.split(" ", 1)
        if uri != NAMESPACE:
            raise _Malformed(f"element in foreign namespace {uri[:60]!a}")
        return local
    return name


def _read(body: bytes, root: str) -> _Flat:
    """Parse ``body`` as a flat SCAIP document with root element ``root``."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"not UTF-8 at byte {exc.start}") from None
    body = body.lstrip(b" \t\r\n")  # some SIP stacks put a line break before an XML declaration
    parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    flat = _Flat()
    path: list[str] = []
    text: list[str] = []

    def refuse_doctype(*_: object) -> None:
        raise _Malformed("document type declaration refused (DTD, entities)")

    def refuse_external(*_: object) -> int:
        raise _Malformed("external entity refused")

    def start(name: str, _attributes: object) -> None:
        local = _local(name)
        if not path and local != root:
            raise _Malformed(f"root element is {local[:20]!a}, not <{root}>")
        if len(path) >= 2 and not (path[1] == "lge" and len(path) == 2 and local in _LGE_TAGS):
            raise _Malformed(f"element {local[:20]!a} nested in {path[-1][:20]!a}")
        path.append(local)
        text.clear()

    def end(name: str) -> None:
        local = path.pop()
        if path and local != "lge":
            flat.children.append((local, "".join(text).strip()))
        text.clear()

    def data(chunk: str) -> None:
        text.append(chunk)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise _Malformed(f"not well-formed XML: {expat.ErrorString(exc.code)} at line {exc.lineno}") from None
    return flat


_REF_SCAN = re.compile(rb"<(?:[A-Za-z0-9_]+:)?ref>\s*([0-9a-zA-Z]{1,16})\s*</(?:[A-Za-z0-9_]+:)?ref>")


def _scan_ref(body: bytes) -> str | None:
    """The ref of a body we could not parse, found without parsing (bounded), to echo in the answer."""
    found = _REF_SCAN.search(body[:MAX_BODY_BYTES])
    return found.group(1).decode("ascii") if found else None


def _fields(
    flat: _Flat, rules: Mapping[str, Callable[[str], bool]], repeated: frozenset[str]
) -> tuple[dict[str, str], dict[str, list[str]], str | None]:
    """The known children of ``flat`` checked against ``rules``: single values, repeated values, and the
    first complaint (None when all are valid). Unknown tags are skipped (later versions may add tags);
    an empty optional element counts as omitted."""
    single: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    complaint: str | None = None
    for tag, value in flat.children:
        if tag not in rules:
            continue
        if tag in repeated:
            if value:
                many.setdefault(tag, []).append(value)
        elif tag in single:
            raise _Malformed(f"<{tag}> given twice")
        else:
            single[tag] = value
        if value and complaint is None and not rules[tag](value):
            complaint = f"<{tag}> has wrong content {value[:40]!a}"
    return single, many, complaint


def parse_mrq(body: bytes) -> AlarmRequest | ScaipRefused:
    """Read a Message Request. Never raises: anything that is not a valid ``<mrq>`` is a
    :class:`ScaipRefused` carrying the status number to answer with."""
    if len(body) > MAX_BODY_BYTES:
        return ScaipRefused(
            Snu.TOO_LONG, f"body of {len(body)} bytes, over {MAX_BODY_BYTES}", _scan_ref(body)
        )
    try:
        flat = _read(body, "mrq")
        single, many, complaint = _fields(flat, MRQ_RULES, _MRQ_REPEATED)
    except _Malformed as exc:
        return ScaipRefused(Snu.INVALID_FORMAT, str(exc), _scan_ref(body))
    ref_text = single.get("ref", "")
    ref = ref_text if _REF.fullmatch(ref_text) else None
    if not ref_text:
        return ScaipRefused(Snu.REFERENCE_MISSING, "mandatory tag <ref> missing", None)
    missing = [tag for tag in MRQ_MANDATORY if not single.get(tag)]
    if missing:
        tags = ", ".join(f"<{tag}>" for tag in missing)
        return ScaipRefused(Snu.MANDATORY_MISSING, f"mandatory tag {tags} missing", ref)
    if complaint is not None:
        return ScaipRefused(Snu.WRONG_DATA, complaint, ref)
    assert ref is not None  # the rule for <ref> passed
    values = {tag: value for tag, value in single.items() if value}
    return AlarmRequest(
        ref=ref,
        cid=values["cid"],
        mty=values.get("mty"),
        ver=values.get("ver"),
        dty=values.get("dty"),
        did=values.get("did"),
        stc=values.get("stc"),
        extra={tag: value for tag, value in values.items() if tag not in _MRQ_FIELDS},
        crd=tuple(many.get("crd", ())),
    )


def parse_mrs(body: bytes) -> MessageResponse | ScaipRefused:
    """Read a Message Response (the unit's side). Never raises."""
    if len(body) > MAX_BODY_BYTES:
        return ScaipRefused(
            Snu.TOO_LONG, f"body of {len(body)} bytes, over {MAX_BODY_BYTES}", _scan_ref(body)
        )
    try:
        flat = _read(body, "mrs")
        single, many, complaint = _fields(flat, MRS_RULES, _MRS_REPEATED)
    except _Malformed as exc:
        return ScaipRefused(Snu.INVALID_FORMAT, str(exc), _scan_ref(body))
    ref_text = single.get("ref", "")
    ref = ref_text if _REF.fullmatch(ref_text) else None
    if not ref_text:
        return ScaipRefused(Snu.REFERENCE_MISSING, "mandatory tag <ref> missing", None)
    if not single.get("snu"):
        return ScaipRefused(Snu.MANDATORY_MISSING, "mandatory tag <snu> missing", ref)
    if complaint is not None:
        return ScaipRefused(Snu.WRONG_DATA, complaint, ref)
    assert ref is not None
    mre = single.get("mre")
    hbi = single.get("hbi")
    return MessageResponse(
        ref=ref,
        snu=Snu(int(single["snu"])),
        ste=single.get("ste") or None,
        cve=single.get("cve") or None,
        mre=VoiceMode(str(int(mre))) if mre else None,
        cre=single.get("cre") or None,
        tnu=tuple(many.get("tnu", ())),
        hbi=int(hbi) if hbi else None,
    )


# -- writing --------------------------------------------------------------------------------------


def _element(tag: str, value: str) -> str:
    return f"<{tag}>{escape(value)}</{tag}>"


def _check(rules: Mapping[str, Callable[[str], bool]], tag: str, value: str) -> str:
    if value != value.strip() or not rules[tag](value):
        raise ValueError(f"<{tag}> cannot be {value[:40]!a}")
    return value


def build_mrs(
    ref: str,
    snu: Snu,
    *,
    mre: VoiceMode | None = None,
    cre: str | None = None,
    cnb: str | None = None,
    ste: str | None = None,
    hbi: int | None = None,
) -> bytes:
    """A Message Response to the request ``ref``.

    ``mre`` asks the unit to open a voice call of that kind (after snu 0); ``cre`` says where to:
    :attr:`CallReply.PREDEFINED_RECEIVER` (``61``, also the meaning when omitted) or
    :attr:`CallReply.TRANSFERRED_NUMBER` (``62``) to ``cnb``, written as ``<tnu>`` (a media-prefixed
    number or URI: ``gsm:+4670...``, ``sip:arc@example.org``). ``cnb`` without ``cre`` implies ``62``.
    ``ste`` is a status text, ``hbi`` a new heartbeat interval in minutes (for units that offered
    ``hbo`` 001). Raises ValueError for a value the standard does not allow.
    """
    if cnb is not None and cre is None:
        cre = CallReply.TRANSFERRED_NUMBER
    if cre == CallReply.TRANSFERRED_NUMBER and cnb is None:
        raise ValueError("cre 62 (transferred number) needs cnb")
    parts = [_element("ref", _check(MRS_RULES, "ref", ref)), _element("snu", str(int(Snu(snu))))]
    if ste is not None:
        parts.append(_element("ste", _check(MRS_RULES, "ste", ste)))
    if mre is not None:
        parts.append(_element("mre", VoiceMode(mre).value))
    if cre is not None:
        parts.append(_element("cre", _check(MRS_RULES, "cre", str(cre))))
    if cnb is not None:
        parts.append(_element("tnu", _check(MRS_RULES, "tnu", cnb)))
    if hbi is not None:
        parts.append(_element("hbi", _check(MRS_RULES, "hbi", str(hbi))))
    return ("<mrs>" + "".join(parts) + "</mrs>").encode()


def answer_refusal(refused: ScaipRefused) -> bytes | None:
    """The ``<mrs>`` that answers a refused request: its status number, and the reason as status text
    (US-ASCII, at most 128 characters); None when no ref could be read (answer at the SIP level)."""
    if refused.ref is None:
        return None
    text = "".join(c if " " <= c <= "~" else "?" for c in refused.detail)[:128].strip()
    return build_mrs(refused.ref, refused.snu, ste=text or None)


def build_mrq(
    *,
    ref: str,
    cid: str,
    mty: str = MessageType.MESSAGE,
    dty: str | None = None,
    did: str | None = None,
    stc: str | None = None,
    **extra: str,
) -> bytes:
    """A Message Request, for simulators and tests. ``dty`` is mandatory in the standard; leaving it out
    builds a request the receiver refuses (MANDATORY_MISSING). ``extra`` takes the other tags by name
    (``ver="01.00"``, ``lco="021"``, ``lte="Kitchen"``, ``crd="gsm:+46701445566"``, ``geo=...`` inside
    ``<lge>``); several caller-ids go as one ``crd`` with ``|`` between them. Raises ValueError for an
    unknown tag or a value the standard does not allow."""
    for tag in extra:
        if tag not in MRQ_RULES or tag in {"ref", "cid", "mty", "dty", "did", "stc"}:
            raise ValueError(f"unknown <mrq> tag {tag!r}")
    given: dict[str, str | None] = {"ref": ref, "mty": mty, "cid": cid, "dty": dty, "did": did, "stc": stc}
    given.update(extra)
    parts: list[str] = []
    geo: list[str] = []
    for tag in MRQ_RULES:
        if tag == "lte" and geo:  # <lge> goes between <lva> and <lte>
            parts.append("<lge>" + "".join(geo) + "</lge>")
        value = given.get(tag)
        if value is None:
            continue
        for one in value.split("|") if tag == "crd" else [value]:
            element = _element(tag, _check(MRQ_RULES, tag, one))
            (geo if tag in _LGE_TAGS else parts).append(element)
    return ("<mrq>" + "".join(parts) + "</mrq>").encode()
