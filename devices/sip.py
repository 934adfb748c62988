"""SIP messages, sans-I/O: parse, serialise, answer, frame a stream (RFC 3261 §7, §8.2.6, §18, §20).

Only what a receiver of SIP ``MESSAGE`` requests needs (SCAIP, docs/scaip.md) and what it sends back:

- :func:`parse_message` -- one message's bytes (a UDP datagram, or one framed out of a stream) to a
  :class:`Request` or :class:`Response`; raises :class:`SipError` (never anything else) on bad input.
  Header names are case-insensitive and compact forms (``v``, ``f``, ``i`` ...) are expanded; folded
  header lines are unfolded; ``Content-Length`` bounds the body.
- :func:`serialise` -- a message to bytes, with ``Content-Length`` always written.
- :func:`response_to` -- the answer to a request (§8.2.6.2): Via, From, Call-ID and CSeq copied, To
  copied with our tag added when it has none.
- :func:`stamp_received` -- ``received``/``rport`` on the top Via (§18.2.1, RFC 3581).
- :func:`build_request` -- a request of our own (the SCAIP answer as a separate ``MESSAGE``).
- :class:`StreamFramer` -- bytes from a TCP/TLS stream in, one message at a time out (Content-Length
  framing, §18.3; CRLF keep-alives of RFC 5626 skipped and reported).

Transactions (retransmissions) are in :mod:`devices.sip_transaction`, digest authentication in
:mod:`devices.sip_digest`. Why this is not a SIP library from PyPI: docs/design-notes.md, "SIP".
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

#: The largest message accepted (headers and body); a UDP datagram cannot carry more.
MAX_MESSAGE_BYTES = 65_535
#: The largest header section accepted (a unit's are well under 2 KiB); on a stream, the connection is
#: dropped. It bounds the work spent on one message: parsing is linear in it, but with a Python-level
#: constant (lists split character by character), so 64 KiB of Via values cost ~45 ms of the event loop.
MAX_HEADER_BYTES = 8_192
#: The most header lines accepted in one message, continuation lines of folded headers included.
MAX_HEADERS = 100
#: The most Via values in a request (a unit, and a proxy or two): each is parsed, stamped and echoed.
MAX_VIAS = 16
#: The longest Via value read, and the most bytes of Via headers in a request (a real Via is under 200
#: bytes; they are split and parsed several times per message): beyond, the request is dropped.
MAX_VIA_BYTES = 1024
MAX_VIA_SECTION = 2048
#: The magic cookie every RFC 3261 branch starts with.
BRANCH_COOKIE = "z9hG4bK"

#: Compact header forms (RFC 3261 §7.3.3 and §20) and the names we write.
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Allow",
        "Authorization",
        "Call-ID",
        "Contact",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Expires",
        "From",
        "Max-Forwards",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Route",
        "Server",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "User-Agent",
        "Via",
        "WWW-Authenticate",
    )
}
#: Headers a request must carry (§8.1.1); without them no response can be built.
REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
#: Headers a request carries at most once: a second one (even with the same value) is a 400, so no two
#: readers (the stream framer, a proxy, the unit) can take different ones (§7.3.1, §20).
SINGLE = ("Call-ID", "CSeq", "From", "To", "Content-Length", "Content-Type", "Max-Forwards")
#: A Via sent-by host: a DNS name or an IPv4 address (IPv6 is checked by :mod:`ipaddress`).
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$")
#: Headers whose comma-separated values are separate header values (§7.3.1).
_LIST_HEADERS = frozenset({"via", "contact", "route", "record-route", "allow", "supported", "accept"})
REASONS = {
    100: "Trying",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    481: "Call/Transaction Does Not Exist",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
}
_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_REQUEST_LINE = re.compile(rf"^({_TOKEN}) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) ?(.*)$")
_HEADER_NAME = re.compile(rf"^{_TOKEN}$")
_CSEQ = re.compile(rf"^([0-9]{{1,10}})\s+({_TOKEN})$")
_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^\s;]+)\s*((?:;.*)?)$")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class SipError(ValueError):
    """A message that cannot be read; ``status`` is the answer it deserves (400 Bad Request, 413 too
    large, 505 ...), else None (drop it). ``request`` is the request as far as it was read, when an answer
    can be built from it (its top Via is readable): answer it with ``response_to(request, status)``."""

    def __init__(self, detail: str, status: int | None = None, request: Request | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.request = request


def canonical_name(name: str) -> str:
    """A header name as we write it (compact forms expanded)."""
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _CANONICAL.get(lower, name)


@dataclass(frozen=True, slots=True)
class _Message:
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive; compact forms too), or None."""
        wanted = canonical_name(name).lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, list headers (Via, Contact ...) split at their commas."""
        wanted = canonical_name(name).lower()
        out: list[str] = []
        for key, value in self.headers:
            if key.lower() == wanted:
                out.extend(split_list(value) if wanted in _LIST_HEADERS else [value])
        return out

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """``(number, method)`` of the CSeq header (the parser checked it is there and well formed)."""
        match = _CSEQ.match(self.header("CSeq") or "")
        return (int(match[1]), match[2]) if match else (0, "")

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ('' when absent)."""
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()

    @property
    def top_via(self) -> Via:
        values = self.header_values("Via")
        if not values:
            raise SipError("no Via header")
        return parse_via(values[0])


@dataclass(frozen=True, slots=True)
class Request(_Message):
    method: str = ""
    uri: str = ""


@dataclass(frozen=True, slots=True)
class Response(_Message):
    status: int = 200
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> <host>[:<port>];<params>``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        sent_by = host if self.port is None else f"{host}:{self.port}"
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"SIP/2.0/{self.transport.upper()} {sent_by}{params}"


def split_list(value: str) -> list[str]:
    """A header value split at the commas that are not inside quotes or ``<...>``."""
    if '"' not in value and "<" not in value:  # the usual case (every Via), at C speed
        return [p for p in (part.strip() for part in value.split(",")) if p]
    parts: list[str] = []
    current: list[str] = []
    quoted = angle = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=1;b`` to ``{"a": "1", "b": None}`` (names lower case; quotes kept as written)."""
    out: dict[str, str | None] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        out[name.strip().lower()] = value.strip() if eq else None
    return out


def parse_via(value: str) -> Via:
    """One Via value; raises :class:`SipError` when it is not one."""
    if len(value) > MAX_VIA_BYTES:
        raise SipError(f"Via value of {len(value)} bytes", 400)
    match = _VIA.match(value.strip())
    if not match:
        raise SipError(f"bad Via: {value[:80]!r}", 400)
    transport, sent_by, params = match[1].upper(), match[2], match[3]
    if sent_by.startswith("["):
        host, _, rest = sent_by[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif sent_by.count(":") == 1:
        host, _, port_text = sent_by.partition(":")
    else:
        host, port_text = sent_by, ""
    if not host or (port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536)):
        raise SipError(f"bad Via sent-by: {sent_by[:80]!r}", 400)
    if not _HOSTNAME.match(host):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SipError(f"bad Via host: {host[:80]!r}", 400) from None
    return Via(transport, host, int(port_text) if port_text else None, parse_params(params))


def tag_of(address: str) -> str | None:
    """The ``tag`` parameter of a From/To value (outside its ``<...>``)."""
    tail = address.rsplit(">", 1)[1] if ">" in address else address.split(";", 1)[1] if ";" in address else ""
    return parse_params(tail).get("tag")


def uri_of(address: str) -> str:
    """The URI inside a From/To/Contact value (``"Name" <sip:x@y>;tag=1`` -> ``sip:x@y``)."""
    if "<" in address and ">" in address:
        return address.split("<", 1)[1].split(">", 1)[0].strip()
    return address.split(";", 1)[0].strip()


def user_of(uri: str) -> str | None:
    """The user part of a ``sip:``/``sips:``/``tel:`` URI, or None."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips", "tel"):
        return None
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0] or None
    user, at, _ = rest.partition("@")
    if not at:
        return None
    return user.split(";", 1)[0] or None


def _unfold(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def parse_message(data: bytes) -> Request | Response:
    """One SIP message; raises :class:`SipError` on anything malformed (see its ``status``)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipError(f"message of {len(data)} bytes is too large", 413)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")  # bare LF line ends: tolerated (§7.5)
        if not sep:
            raise SipError("no empty line after the headers")
    if len(head) > MAX_HEADER_BYTES:
        raise SipError(f"header section of {len(head)} bytes is too large", 413)
    if head.count(b"\n") > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} header lines", 400)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("headers are not UTF-8") from None
    lines = _unfold(text.replace("\r\n", "\n").split("\n"))
    start = lines[0].strip()
    request = _REQUEST_LINE.match(start)
    status_line = None if request else _STATUS_LINE.match(start)
    if request is None and status_line is None:
        if start.startswith(("SIP/", "sip/")) or " SIP/" in start:
            raise SipError(f"unsupported version: {start[:80]!r}", 505 if " SIP/" in start else None)
        raise SipError(f"not a SIP start line: {start[:80]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} header lines", 400)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.match(name):
            raise SipError(f"bad header line: {line[:80]!r}", 400)
        value = value.strip()
        if _CTL.search(value):
            raise SipError(f"control character in {name}", 400)
        headers.append((canonical_name(name), value))
    length_text = next((v for k, v in headers if k == "Content-Length"), None)
    if length_text is not None:
        if not length_text.isdigit() or len(length_text) > 10:
            raise SipError(f"bad Content-Length: {length_text[:20]!r}", 400)
        length = int(length_text)
        if length > len(body):
            raise SipError(f"Content-Length {length} but {len(body)} body bytes", 400)
        body = body[:length]  # a datagram may carry padding after the body (§18.3)
    msg: Request | Response
    if request is not None:
        msg = Request(tuple(headers), body, request[1].upper(), request[2])
        try:
            _check_request(msg)
        except SipError as exc:
            answerable = exc.status is not None and _has_readable_via(msg)
            raise SipError(exc.detail, exc.status, msg if answerable else None) from None
    else:
        assert status_line is not None
        msg = Response(tuple(headers), body, int(status_line[1]), status_line[2])
        if msg.header("Via") is None or msg.header("CSeq") is None:
            raise SipError("response without Via or CSeq")
    return msg


def _has_readable_via(msg: Request) -> bool:
    try:
        msg.top_via  # noqa: B018
    except SipError:
        return False
    return True


def _check_request(msg: Request) -> None:
    if sum(len(value) for name, value in msg.headers if name == "Via") > MAX_VIA_SECTION:
        raise SipError(f"more than {MAX_VIA_SECTION} bytes of Via")  # dropped: too costly to answer
    missing = [name for name in REQUIRED if msg.header(name) is None]
    if missing:
        # Without a Via no answer can be routed (§18.2.2): drop it (status None).
        raise SipError(f"missing {', '.join(missing)}", None if "Via" in missing else 400)
    msg.top_via  # noqa: B018 -- raises SipError(400) on a bad top Via
    if len(msg.header_values("Via")) > MAX_VIAS:
        raise SipError(f"more than {MAX_VIAS} Via values")  # dropped: an answer would echo them all
    names = [name.lower() for name, _ in msg.headers]
    repeated = [name for name in SINGLE if names.count(name.lower()) > 1]
    if repeated:
        raise SipError(f"{', '.join(repeated)} more than once", 400)
    number, method = msg.cseq
    if not method:
        raise SipError(f"bad CSeq: {msg.header('CSeq')!r}", 400)
    if method.upper() != msg.method:
        raise SipError(f"CSeq method {method} differs from {msg.method}", 400)
    if number >= 2**31:
        raise SipError("CSeq number out of range", 400)


def serialise(msg: Request | Response) -> bytes:
    """The wire form of a message; ``Content-Length`` is written (and any given one replaced)."""
    if isinstance(msg, Request):
        lines = [f"{msg.method} {msg.uri} SIP/2.0"]
    else:
        lines = [f"SIP/2.0 {msg.status} {msg.reason or REASONS.get(msg.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in msg.headers if name != "Content-Length"]
    lines.append(f"Content-Length: {len(msg.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + msg.body


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


def response_to(
    request: Request,
    status: int,
    *,
    to_tag: str,
    reason: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> Response:
    """The response to ``request`` (§8.2.6.2): every Via, From, Call-ID and CSeq copied; To copied, with
    ``to_tag`` added when it has no tag (a 100 gets no tag)."""
    headers: list[tuple[str, str]] = [("Via", v) for v in request.header_values("Via")]
    headers.append(("From", request.header("From") or ""))
    to = request.header("To") or ""
    if status > 100 and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    headers += [("To", to), ("Call-ID", request.call_id), ("CSeq", request.header("CSeq") or "")]
    headers += list(extra)
    if body and content_type:
        headers.append(("Content-Type", content_type))
    return Response(tuple(headers), body, status, reason or REASONS.get(status, "Unknown"))


def stamp_received(request: Request, host: str, port: int) -> Request:
    """The request with ``received`` (when the top Via's host is not the source address) and a filled
    ``rport`` (when the client asked for it) on its top Via (§18.2.1, RFC 3581)."""
    values = request.header_values("Via")
    top = parse_via(values[0])
    params = dict(top.params)
    if top.host != host or "rport" in params:
        params["received"] = host
    if "rport" in params:
        params["rport"] = str(port)
    if params == top.params:
        return request
    vias = [replace(top, params=params).text(), *values[1:]]
    others = [(k, v) for k, v in request.headers if k != "Via"]
    first = next(i for i, (k, _) in enumerate(request.headers) if k == "Via")
    headers = others[:first] + [("Via", v) for v in vias] + others[first:]
    return replace(request, headers=tuple(headers))


def build_request(
    method: str,
    uri: str,
    *,
    via: Via,
    from_address: str,
    to_address: str,
    call_id: str,
    cseq: int,
    body: bytes = b"",
    content_type: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Request:
    """A request of our own, ``via`` carrying its (new) branch."""
    headers: list[tuple[str, str]] = [
        ("Via", via.text()),
        ("Max-Forwards", "70"),
        ("From", from_address),
        ("To", to_address),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        *extra,
    ]
    if body and content_type:
        headers.append(("Content-Type", content_type))
    return Request(tuple(headers), body, method, uri)


@dataclass(frozen=True, slots=True)
class NeedData:
    """The framer needs more bytes."""


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLF CRLF ping (RFC 5626 §3.5.1): answer it with one CRLF."""


class StreamFramer:
    """Splits a TCP/TLS byte stream into SIP messages by Content-Length (§18.3).

    :meth:`next_message` returns a message's bytes, :class:`KeepAlive`, or :class:`NeedData`; it
    raises :class:`SipError` when the stream cannot be framed (no or bad Content-Length, headers or
    body too large): the connection must then be closed, as the next message's start is unknown.
    """

    def __init__(self, *, max_body: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_body = max_body

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> bytes | KeepAlive | NeedData:
        if self._buffer.startswith(b"\r\n\r\n"):
            del self._buffer[:4]
            return KeepAlive()
        while self._buffer.startswith(b"\r\n"):
            if len(self._buffer) < 4 and b"\r\n\r\n".startswith(bytes(self._buffer)):
                return NeedData()  # maybe half a ping
            del self._buffer[:2]  # stray CRLF between messages (§7.5)
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise SipError(f"no end of headers in {len(self._buffer)} bytes")
            return NeedData()
        if end > MAX_HEADER_BYTES:
            raise SipError(f"header section of {end} bytes")
        length = _content_length(bytes(self._buffer[:end]))
        if length > self._max_body:
            raise SipError(f"body of {length} bytes is too large")
        total = end + 4 + length
        if len(self._buffer) < total:
            return NeedData()
        message = bytes(self._buffer[:total])
        del self._buffer[:total]
        return message


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit() or len(text) > 10:
                raise SipError(f"bad Content-Length: {text[:20]!r}")
            return int(text)
    raise SipError("a message on a stream must carry Content-Length")
