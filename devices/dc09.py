"""SIA DC-09 frames, sans-I/O: parse, answer, build, split a TCP stream, encrypt.

A frame on the wire (ANSI/SIA DC-09; the receiver's and the transmitter's side alike)::

    LF <crc:4 hex> <len:4 hex "0LLL"> "<id>" <seq:4 digits> [R<1-6 hex>] L<1-6 hex> #<account 3-16 hex>
       [<data>] [<extended data>]... [_HH:MM:SS,MM-DD-YYYY] CR

``crc`` is CRC-16/ARC (:func:`devices.serial_frame.crc16`) and ``len`` the byte count, both over everything
from the first ``"`` to just before CR. Hex digits may be lower case. Ids: ``SIA-DCS``, ``ADM-CID``,
``NULL`` (link test) and the answers ``ACK``, ``NAK``, ``DUH``; a ``*`` before the id means the part after
``[`` is AES-CBC (zero IV, 128/192/256-bit key) of ``<pad><data>]<extended data>..._<timestamp>``, written
as hex. Pad characters are never ``[``, ``]`` or ``|``. A timestamp is mandatory when encrypted.

What this module gives (no I/O, no clock: ``now`` is always a parameter):

- :func:`parse_frame` -- one frame's bytes to a :class:`Frame` or a :class:`Refused` with a
  :class:`Refusal` reason (bad CRC, bad length, unknown id, missing or stale timestamp, undecryptable,
  in clear from an account that has a key, malformed). It never raises on any input.
  :func:`check_envelope` checks only the CRC, length and characters.
  :attr:`Frame.resend_key` is the same for a panel's resends of one message.
- :class:`FrameSplitter` -- bytes from a TCP stream in, one frame's bytes at a time out (several frames
  per read, frames split across reads, NUL bytes after CR).
- :func:`build_ack`, :func:`build_duh`, :func:`build_nak` -- the answers. An encrypted request gets an
  encrypted ACK or DUH; a NAK is never encrypted and carries the receiver's time.
- :func:`build_frame` -- an outgoing frame (for forwarding), optionally encrypted.
- :func:`contact_id_data`, :func:`sia_dcs_data`, :func:`read_payload` -- the Contact ID
  (``#acct|QEEE GG ZZZ``) and SIA DCS (``#acct|Nri1/MA001``) data blocks, both ways.
- :func:`check_timestamp` -- the time window (default 40 s old to 20 s ahead).

The meaning of the codes (our event types) is in :mod:`devices.dc09_codes`.
``cryptography`` is the one import here beyond the standard library: AES is part of the frame format
(docs/design-notes.md, "Layout").
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.serial_frame import crc16

#: A frame longer than this (bytes, without LF and CR) is refused; the length field allows 0x0FFF.
MAX_FRAME = 0x0FFF
#: Extended data blocks read from one frame; more (a 4 KiB frame holds ~1300 ``[A]``) are ignored: a
#: panel sends a handful, and reading each costs an object.
MAX_EXTENDED = 32
#: Key sizes in bytes: AES-128, AES-192, AES-256.
KEY_SIZES = (16, 24, 32)
#: Characters a pad is drawn from when none is given: printable ASCII without ``[``, ``]``, ``|``
#: and ``#`` (``#`` could be read as the start of the account in the data block).
PAD_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "[]|#")
_ZERO_IV = bytes(16)


class Token(StrEnum):
    """The id between the quotes (without the ``*`` of encryption)."""

    SIA_DCS = "SIA-DCS"
    ADM_CID = "ADM-CID"
    NULL = "NULL"
    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"


#: Ids a transmitter sends; the others are answers.
MESSAGE_TOKENS = frozenset({Token.SIA_DCS, Token.ADM_CID, Token.NULL})
#: Answer ids.
ANSWER_TOKENS = frozenset({Token.ACK, Token.NAK, Token.DUH})


class Refusal(StrEnum):
    """Why a frame was refused: each is answered with a NAK, counted and logged by the receiver."""

    BAD_CRC = "bad_crc"
    BAD_LENGTH = "bad_length"
    UNKNOWN_TOKEN = "unknown_token"
    NO_TIMESTAMP = "no_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    UNDECRYPTABLE = "undecryptable"
    NOT_ENCRYPTED = "not_encrypted"  # the account has a key: a frame in clear could be anyone's
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class ExtendedData:
    """One extended data block ``[<kind><value>]``: ``kind`` is one letter (``A`` program, ``H`` time of
    event, ``I`` alarm text, ``K`` new key, ``L`` location, ``M`` MAC, ``R`` building, ``S`` site,
    ``V`` verification, ``X``/``Y`` longitude/latitude, ``Z`` altitude ...)."""

    kind: str
    value: str

    def __repr__(self) -> str:  # a [K...] block carries a key: never print it
        shown = "<hidden>" if self.kind == "K" else repr(self.value)
        return f"ExtendedData(kind={self.kind!r}, value={shown})"

    def encode(self) -> str:
        """The block as written on the wire."""
        return f"[{self.kind}{self.value}]"


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame whose CRC, length, id, structure and time passed every check.

    ``account`` is upper-case hex (from the header, else from the data block; ``""`` only in a NAK,
    which names no account). ``data`` is the data block between ``[`` and ``]`` with the pad of an
    encrypted frame removed (so ``#1234|1101 01 001``, ``|Nri1/MA001``, or ``""``). ``timestamp`` is
    UTC. ``receiver`` and ``line`` are the hex digits after ``R`` and ``L``, as sent.
    """

    token: Token
    encrypted: bool
    sequence: int
    receiver: str | None
    line: str
    account: str
    data: str
    extended: tuple[ExtendedData, ...] = ()
    timestamp: datetime | None = None
    raw: bytes = field(default=b"", repr=False)

    @property
    def is_answer(self) -> bool:
        """Whether this is an ACK, NAK or DUH."""
        return self.token in ANSWER_TOKENS

    @property
    def resend_key(self) -> str:
        """The same for a panel's resends of one message: account, id, sequence, data and extended data,
        but not the timestamp (a panel may restamp a resend) nor the pad or cipher text (random per
        send). Sequences wrap at 9999, so a receiver collapses resends on this key only within a bounded
        time, never forever. 64 hex digits (a SHA-256), so it fits an event id."""
        parts = [self.account, self.token.value, f"{self.sequence:04d}", self.data]
        parts += [block.encode() for block in self.extended]
        return hashlib.sha256("\x00".join(parts).encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class Refused:
    """A frame that failed a check. What could be read of its header before the failure is kept (for
    the log and the counters); ``detail`` says what was wrong, without any key material."""

    reason: Refusal
    detail: str
    token: str | None = None
    account: str | None = None
    sequence: int | None = None
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class NeedData:
    """The stream holds no complete frame yet."""


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """How far a frame's timestamp may be from the receiver's clock: ``max_age_s`` behind, ``max_ahead_s``
    ahead (DC-09's recommended defaults: 40 s and 20 s)."""

    max_age_s: float = 40.0
    max_ahead_s: float = 20.0


DEFAULT_WINDOW = TimeWindow()

#: A function giving the AES key of an account (upper-case hex), or None when it has none.
KeyLookup = Callable[[str], bytes | None]


def _no_keys(_account: str) -> bytes | None:
    return None


# --- timestamps -----------------------------------------------------------------------------------

_TS_FORMAT = "%H:%M:%S,%m-%d-%Y"


def format_timestamp(moment: datetime) -> str:
    """``_HH:MM:SS,MM-DD-YYYY`` in UTC, as DC-09 writes it."""
    return moment.astimezone(UTC).strftime("_" + _TS_FORMAT)


def check_timestamp(
    timestamp: datetime | None, now: datetime, window: TimeWindow = DEFAULT_WINDOW
) -> str | None:
    """None when ``timestamp`` lies within ``window`` of ``now``; otherwise why not. A frame without a
    timestamp passes here (whether one is mandatory is :func:`parse_frame`'s rule)."""
    if timestamp is None:
        return None
    offset = (timestamp - now).total_seconds()
    if offset < -window.max_age_s:
        return f"timestamp {-offset:.0f} s old (at most {window.max_age_s:g} s)"
    if offset > window.max_ahead_s:
        return f"timestamp {offset:.0f} s ahead (at most {window.max_ahead_s:g} s)"
    return None


def clock_offset(nak: Frame, now: datetime) -> timedelta | None:
    """How far the receiver's clock (the time in its NAK) is ahead of ``now``: add it to our clock for
    the resend. None when the frame is not a NAK with a time."""
    if nak.token is not Token.NAK or nak.timestamp is None:
        return None
    return nak.timestamp - now


# --- encryption -----------------------------------------------------------------------------------


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is an AES-128/192/256 key; raise ValueError otherwise."""
    if len(key) not in KEY_SIZES:
        raise ValueError(f"a DC-09 key is 16, 24 or 32 bytes, not {len(key)}")
    return key


def parse_key(text: str) -> bytes:
    """A key as installers write it: 32/48/64 hex digits, or 16/24/32 characters taken as they are
    (as pysiaalarm and many panels do). Raise ValueError otherwise."""
    if len(text) in (32, 48, 64) and re.fullmatch(r"[0-9A-Fa-f]+", text):
        return bytes.fromhex(text)
    if len(text) in KEY_SIZES and text.isascii() and text.isprintable():
        return text.encode("ascii")
    raise ValueError("a DC-09 key is 16, 24 or 32 characters, or 32, 48 or 64 hex digits")


def encrypt_block(key: bytes, plaintext: str) -> str:
    """AES-CBC with a zero IV of ``plaintext`` (whose length must be a multiple of 16), as upper-case hex."""
    data = plaintext.encode("ascii")
    if len(data) % 16:
        raise ValueError("the plaintext must be padded to a multiple of 16 bytes")
    encryptor = Cipher(algorithms.AES(check_key(key)), modes.CBC(_ZERO_IV)).encryptor()
    return (encryptor.update(data) + encryptor.finalize()).hex().upper()


def decrypt_block(key: bytes, hex_text: str) -> str | None:
    """The plaintext of an encrypted block, or None when it is not whole blocks of hex or does not
    decrypt to printable ASCII (a wrong key gives bytes that are not)."""
    if not hex_text or len(hex_text) % 32 or not re.fullmatch(r"[0-9A-Fa-f]+", hex_text):
        return None
    if len(key) not in KEY_SIZES:
        return None
    decryptor = Cipher(algorithms.AES(key), modes.CBC(_ZERO_IV)).decryptor()
    plain = decryptor.update(bytes.fromhex(hex_text)) + decryptor.finalize()
    if not all(0x20 <= b < 0x7F for b in plain):
        return None
    return plain.decode("ascii")


#: Random bytes to pad characters (one bulk read of the CSPRNG per pad, not one call per character:
#: every encrypted answer needs a pad, and per-character draws were a tenth of the receiver's CPU).
_PAD_TABLE = bytes(ord(PAD_ALPHABET[b % len(PAD_ALPHABET)]) for b in range(256))


def make_pad(length: int) -> str:
    """``length`` random characters of :data:`PAD_ALPHABET`."""
    return secrets.token_bytes(length).translate(_PAD_TABLE).decode("ascii")


def _pad_length(content: str) -> int:
    """1-16: the pad that makes ``content`` whole 16-byte blocks (never empty, so it is always seen)."""
    return 16 - len(content) % 16


# --- parsing --------------------------------------------------------------------------------------

_HEADER_RE = re.compile(r"(?P<crc>[0-9A-Fa-f]{4})(?P<length>[0-9A-Fa-f]{4})")
_BODY_RE = re.compile(
    r'"(?P<star>\*?)(?P<token>[^"]{1,16})"'
    r"(?P<seq>[0-9]{4})"
    r"(?:R(?P<receiver>[0-9A-Fa-f]{1,6}))?"
    r"L(?P<line>[0-9A-Fa-f]{1,6}?)"  # lazy: a NAK's "L0A0[" is line 0 and the account place-holder A0
    r"(?:#(?P<account>[0-9A-Fa-f]{3,16})|A0)?"
    r"\[(?P<rest>.*)",
    re.DOTALL,
)
_TAIL_RE = re.compile(r"(?P<extended>(?:\[[A-Za-z][^\[\]]*\])*)(?:_(?P<ts>[0-9:,-]+))?")
_EXTENDED_RE = re.compile(r"\[([A-Za-z])([^\[\]]*)\]")
_DATA_ACCOUNT_RE = re.compile(r"#([0-9A-Fa-f]{3,16})\|")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class _Refuse(Exception):
    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _strip_wire(raw: bytes) -> bytes:
    """The frame without the LF before it, the CR after it, and NUL padding (UDP datagrams, some
    panels) or stray line ends around it."""
    return raw.strip(b"\x00\r\n")


def _split_data(plain: str, encrypted: bool) -> tuple[str, str]:
    """``data`` (pad removed) and what follows its ``]``."""
    end = plain.find("]")
    if end < 0:
        raise _Refuse(Refusal.MALFORMED, "the data block has no ]")
    data, tail = plain[:end], plain[end + 1 :]
    if "[" in data:
        raise _Refuse(Refusal.MALFORMED, "[ inside the data block")
    if encrypted:  # <pad><data>: the pad has no | ; the data starts at "#acct|" or "|" (or is empty)
        bar = data.find("|")
        if bar < 0:
            data = ""
        else:
            hashes = [m for m in _DATA_ACCOUNT_RE.finditer(data[: bar + 1]) if m.end() == bar + 1]
            data = data[hashes[-1].start() :] if hashes else data[bar:]
    return data, tail


#: What ``strptime(_TS_FORMAT)`` accepts (1-2 digit fields, 4-digit year), read without strptime, which
#: cost a twentieth of the receiver's CPU.
_TS_RE = re.compile(r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2}),([0-9]{1,2})-([0-9]{1,2})-([0-9]{4})")


def _parse_timestamp(text: str) -> datetime:
    fields = _TS_RE.fullmatch(text)
    try:
        if fields is None:
            raise ValueError(text)
        hour, minute, second, month, day, year = (int(f) for f in fields.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _Refuse(Refusal.MALFORMED, f"timestamp {text!r} is not HH:MM:SS,MM-DD-YYYY") from None


def parse_frame(
    raw: bytes,
    *,
    now: datetime,
    keys: KeyLookup = _no_keys,
    window: TimeWindow | None = DEFAULT_WINDOW,
) -> Frame | Refused:
    """Check and read one frame (from :class:`FrameSplitter`, or one UDP datagram).

    ``keys`` gives an account's AES key; an encrypted frame from an account without one is
    ``undecryptable``, and a frame in clear from an account with one is ``not_encrypted`` (else anyone
    could send as a keyed account by leaving encryption off). ``now`` is the receiver's clock for the
    time window; ``window=None`` skips the window (the forwarder reading answers). A NAK's time is never
    checked: it is the receiver's clock, sent so that the panel can correct its own. Never raises on
    any ``raw``; a ``now`` without a time zone is the caller's bug (ValueError).
    """
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone (UTC)")
    header = _Header()
    try:
        return _parse(raw, now, keys, window, header)
    except _Refuse as refused:
        return Refused(refused.reason, refused.detail, header.token, header.account, header.sequence, raw=raw)
    except Exception as exc:  # the promise is "never raises": a bug here must not drop a frame
        return Refused(Refusal.MALFORMED, f"unreadable ({type(exc).__name__})", raw=raw)


@dataclass(slots=True)
class _Header:
    """What has been read of a frame so far, for a refusal."""

    token: str | None = None
    account: str | None = None
    sequence: int | None = None


@functools.lru_cache(maxsize=16)
def _crc(body: bytes) -> int:
    """:func:`crc16` (pure Python: ~1 ms for 4 KiB), remembered for the few last frames, as a receiver
    checks the envelope (:func:`check_envelope`) and then parses the same bytes."""
    return crc16(body)


def check_envelope(raw: bytes) -> Refused | None:
    """The refusal of a frame whose CRC, length or characters are wrong (None: they are right), without
    reading any further: a receiver checks this before it looks the account up, so garbage costs no
    registry read. :func:`parse_frame` checks the same and more."""
    header = _Header()
    try:
        _check_envelope(_strip_wire(raw), header)
    except _Refuse as refused:
        return Refused(refused.reason, refused.detail, header.token, header.account, header.sequence, raw=raw)
    except Exception as exc:  # never raises, as parse_frame
        return Refused(Refusal.MALFORMED, f"unreadable ({type(exc).__name__})", raw=raw)
    return None


def _check_envelope(wire: bytes, header: _Header) -> str:
    """The frame's text from ``"`` on, once its CRC, length and characters are checked."""
    if len(wire) < 8 or not _HEADER_RE.fullmatch(wire[:8].decode("ascii", "replace")):
        raise _Refuse(Refusal.MALFORMED, "no CRC and length header")
    crc, length = int(wire[:4], 16), int(wire[4:8], 16)
    body = wire[8:]
    peek = _BODY_RE.match(body.decode("ascii", "replace"))  # for the refusal's log line, before any check
    if peek is not None:
        header.token, header.sequence = peek["token"], int(peek["seq"])
        header.account = peek["account"].upper() if peek["account"] else None
    if len(body) > MAX_FRAME:
        raise _Refuse(Refusal.BAD_LENGTH, f"frame of {len(body)} bytes is longer than {MAX_FRAME}")
    if length != len(body):
        raise _Refuse(Refusal.BAD_LENGTH, f"length field says {length}, the frame has {len(body)} bytes")
    computed = _crc(body)
    if crc != computed:
        raise _Refuse(Refusal.BAD_CRC, f"CRC field {crc:04X}, computed {computed:04X}")
    if not body.isascii() or not _PRINTABLE.fullmatch(text := body.decode("ascii")):
        raise _Refuse(Refusal.MALFORMED, "bytes outside printable ASCII")
    return text


def _parse(raw: bytes, now: datetime, keys: KeyLookup, window: TimeWindow | None, header: _Header) -> Frame:
    text = _check_envelope(_strip_wire(raw), header)
    m = _BODY_RE.fullmatch(text)
    if m is None:
        raise _Refuse(Refusal.MALFORMED, 'not "<id>"<seq>[R..]L..[#acct][...')
    header.token, header.sequence = m["token"], int(m["seq"])
    account = (m["account"] or "").upper()
    header.account = account or None
    try:
        token = Token(m["token"])
    except ValueError:
        raise _Refuse(Refusal.UNKNOWN_TOKEN, f"unknown id {m['token']!r}") from None
    encrypted = m["star"] == "*"
    if encrypted and token is Token.NAK:
        raise _Refuse(Refusal.MALFORMED, "a NAK is never encrypted")
    rest = m["rest"]
    if encrypted:
        key = keys(account) if account else None
        if key is None:
            raise _Refuse(Refusal.UNDECRYPTABLE, "encrypted, and no key for this account")
        plain = decrypt_block(key, rest)
        if plain is None:
            raise _Refuse(Refusal.UNDECRYPTABLE, "does not decrypt with the account's key")
        try:
            data, tail = _split_data(plain, True)
        except _Refuse:
            raise _Refuse(Refusal.UNDECRYPTABLE, "decrypts to no data block") from None
    else:
        if token is not Token.NAK and account and keys(account) is not None:
            raise _Refuse(Refusal.NOT_ENCRYPTED, "the account has a key, and this frame is not encrypted")
        data, tail = _split_data(rest, False)
    t = _TAIL_RE.fullmatch(tail)
    if t is None:
        raise _Refuse(Refusal.MALFORMED, "after the data block: not [extended data]..._timestamp")
    blocks = itertools.islice(_EXTENDED_RE.finditer(t["extended"]), MAX_EXTENDED)
    extended = tuple(ExtendedData(b[1].upper(), b[2]) for b in blocks)
    timestamp = _parse_timestamp(t["ts"]) if t["ts"] is not None else None
    if not account:
        in_data = _DATA_ACCOUNT_RE.match(data)
        account = in_data[1].upper() if in_data else ""
        header.account = account or None
    if not account and token is not Token.NAK:
        raise _Refuse(Refusal.MALFORMED, "no account (#acct) in the header or the data block")
    if encrypted and timestamp is None:
        raise _Refuse(Refusal.NO_TIMESTAMP, "an encrypted frame must carry a timestamp")
    if window is not None and token is not Token.NAK:
        stale = check_timestamp(timestamp, now, window)
        if stale is not None:
            raise _Refuse(Refusal.STALE_TIMESTAMP, stale)
    return Frame(
        token=token,
        encrypted=encrypted,
        sequence=int(m["seq"]),
        receiver=m["receiver"],
        line=m["line"],
        account=account,
        data=data,
        extended=extended,
        timestamp=timestamp,
        raw=raw,
    )


# --- the stream -----------------------------------------------------------------------------------


class FrameSplitter:
    """Cuts a TCP byte stream into frames. A frame ends at CR; LF, NUL and other bytes before a frame's
    CRC are skipped. Feed bytes with :meth:`feed`, then call :meth:`next_frame` until it answers
    :data:`NEED_DATA`. A run of more than :data:`MAX_FRAME` bytes without a CR is dropped and handed out
    as a ``malformed`` :class:`Refused` (so the receiver NAKs it), and reading resumes after it."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._dropping = False
        #: Bytes skipped between frames (line ends, NULs, noise), for the receiver's counters.
        self.discarded = 0

    def feed(self, data: bytes) -> None:
        """Add bytes read from the stream."""
        self._buffer += data

    def next_frame(self) -> bytes | Refused | NeedData:
        """The next frame's bytes (CRC to the last byte before CR), a refusal, or NEED_DATA."""
        while True:
            start = 0
            while start < len(self._buffer) and self._buffer[start] in b"\x00\r\n":
                start += 1
            if start:
                self.discarded += start
                del self._buffer[:start]
            end = self._buffer.find(b"\r")
            if end < 0:
                if len(self._buffer) > MAX_FRAME + 8:
                    self.discarded += len(self._buffer)
                    self._buffer.clear()
                    was_dropping, self._dropping = self._dropping, True
                    if not was_dropping:
                        return Refused(Refusal.MALFORMED, f"more than {MAX_FRAME} bytes without CR")
                return NEED_DATA
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._dropping:  # the tail of an overlong run: already refused
                self._dropping = False
                self.discarded += len(frame) + 1
                continue
            return frame


# --- building -------------------------------------------------------------------------------------

_HEX_RE = re.compile(r"[0-9A-Fa-f]+")


def _seal(body: str) -> bytes:
    """LF, CRC, length, body, CR."""
    data = body.encode("ascii")
    if len(data) > MAX_FRAME:
        raise ValueError(f"a frame is at most {MAX_FRAME} bytes")
    return b"\n" + f"{crc16(data):04X}{len(data):04X}".encode("ascii") + data + b"\r"


def _check_hex(value: str, what: str, low: int, high: int) -> str:
    if not low <= len(value) <= high or not _HEX_RE.fullmatch(value):
        raise ValueError(f"{what} must be {low}-{high} hex digits")
    return value.upper()


def build_frame(
    *,
    token: Token,
    sequence: int,
    account: str,
    line: str = "0",
    receiver: str | None = None,
    data: str = "",
    extended: Sequence[ExtendedData] = (),
    timestamp: datetime | None = None,
    key: bytes | None = None,
    pad: str | None = None,
) -> bytes:
    """One frame ready to send, LF to CR. With ``key`` the frame is encrypted (``*`` before the id; a
    ``timestamp`` is then required) with ``pad`` before the data, or a random one from
    :data:`PAD_ALPHABET` of the length that makes whole AES blocks. Raise ValueError on a field that
    breaks the frame rules (the caller's data, never the peer's)."""
    if not 0 <= sequence <= 9999:
        raise ValueError("the sequence number is 0000-9999")
    account = _check_hex(account, "the account", 3, 16)
    line = _check_hex(line, "the line", 1, 6)
    if receiver is not None:
        receiver = _check_hex(receiver, "the receiver", 1, 6)
    if not _PRINTABLE.fullmatch(data) or any(c in data for c in "[]"):
        raise ValueError("the data block is printable ASCII without [ or ]")
    for block in extended:
        if not re.fullmatch(r"[A-Z]", block.kind) or not _PRINTABLE.fullmatch(block.value):
            raise ValueError("an extended data block is one capital letter and printable ASCII")
        if any(c in block.value for c in "[]"):
            raise ValueError("an extended data block has no [ or ]")
    head = f"{sequence:04d}{'R' + receiver if receiver else ''}L{line}#{account}["
    tail = data + "]" + "".join(b.encode() for b in extended)
    if timestamp is not None:
        tail += format_timestamp(timestamp)
    if key is None:
        return _seal(f'"{token.value}"{head}{tail}')
    if token is Token.NAK:
        raise ValueError("a NAK is never encrypted")
    if timestamp is None:
        raise ValueError("an encrypted frame must carry a timestamp")
    if pad is None:
        pad = make_pad(_pad_length(tail))
    elif not pad or any(c in pad for c in "[]|") or (len(pad) + len(tail)) % 16:
        raise ValueError("the pad has no [, ] or | and makes the block a multiple of 16 bytes")
    return _seal(f'"*{token.value}"{head}{encrypt_block(key, pad + tail)}')


def _answer(token: Token, request: Frame, key: bytes | None, now: datetime) -> bytes:
    if request.encrypted and key is None:
        raise ValueError("an encrypted request is answered encrypted: give its key")
    return build_frame(
        token=token,
        sequence=request.sequence,
        account=request.account,
        line=request.line,
        receiver=request.receiver,
        timestamp=now if request.encrypted else None,
        key=key if request.encrypted else None,
    )


def build_ack(request: Frame, *, now: datetime, key: bytes | None = None) -> bytes:
    """ACK of ``request``: its sequence, receiver, line and account; encrypted (with the receiver's time)
    when the request was, which needs the account's ``key``."""
    return _answer(Token.ACK, request, key, now)


def build_duh(request: Frame, *, now: datetime, key: bytes | None = None) -> bytes:
    """DUH (understood, not handled) of ``request``; encrypted as :func:`build_ack`."""
    return _answer(Token.DUH, request, key, now)


def build_nak(*, now: datetime) -> bytes:
    """``"NAK"0000R0L0A0[]_<time>``: never encrypted (the receiver may not have been able to decrypt),
    carrying the receiver's time so that the panel can set its clock."""
    body = f'"{Token.NAK.value}"0000R0L0A0[]{format_timestamp(now)}'
    return _seal(body)


# --- payloads -------------------------------------------------------------------------------------


class Qualifier(IntEnum):
    """The Contact ID event qualifier."""

    NEW = 1
    RESTORE = 3
    STILL_PRESENT = 6


@dataclass(frozen=True, slots=True)
class ContactId:
    """A Contact ID event ``QEEE GG ZZZ``: qualifier, event code, group (partition), zone or user."""

    qualifier: Qualifier
    code: int
    group: str
    zone: str

    @property
    def raw(self) -> str:
        """The qualifier and code as one number's digits, ``1101`` or ``3301``."""
        return f"{self.qualifier.value}{self.code:03d}"


@dataclass(frozen=True, slots=True)
class SiaEvent:
    """One SIA DCS event: a two-letter code and its address (zone, user or text)."""

    code: str
    address: str


@dataclass(frozen=True, slots=True)
class SiaDcs:
    """A SIA DCS data block: ``N`` (new) or ``O`` (old), modifiers (``ri`` area, ``id`` user, ``ti`` time
    ...) and the events."""

    new: bool
    modifiers: tuple[tuple[str, str], ...]
    events: tuple[SiaEvent, ...]

    @property
    def area(self) -> str | None:
        """The ``ri`` modifier (area or partition), when sent."""
        return next((v for k, v in self.modifiers if k == "ri"), None)


_CID_RE = re.compile(
    r"(?:#[0-9A-Fa-f]{3,16})?\|?"
    r"(?P<q>[136])(?P<eee>[0-9]{3}) ?(?P<gg>[0-9A-Fa-f]{2}) ?(?P<zzz>[0-9A-Fa-f]{3})"
)
_SIA_HEAD_RE = re.compile(r"(?:#[0-9A-Fa-f]{3,16})?\|?(?P<flag>[NO]?)(?P<blocks>.*)", re.DOTALL)
_SIA_BLOCK_RE = re.compile(
    r"(?P<mod>[a-z]{2})?(?P<modval>(?<=[a-z]{2})[0-9:]*)?(?:(?P<code>[A-Z]{2})(?P<address>.*))?", re.DOTALL
)


def parse_contact_id(data: str) -> ContactId | None:
    """The Contact ID event of an ADM-CID data block (``#acct|1101 01 001``), or None."""
    m = _CID_RE.fullmatch(data)
    if m is None:
        return None
    return ContactId(Qualifier(int(m["q"])), int(m["eee"]), m["gg"].upper(), m["zzz"].upper())


def parse_sia_dcs(data: str) -> SiaDcs | None:
    """The SIA DCS data block (``#acct|Nri1/MA001``, also ``Nri1/WA000`` or ``|Nri1CL0^text^``), or None
    when it has no event code."""
    head = _SIA_HEAD_RE.fullmatch(data)
    if head is None:
        return None
    modifiers: list[tuple[str, str]] = []
    events: list[SiaEvent] = []
    for block in head["blocks"].split("/"):
        m = _SIA_BLOCK_RE.fullmatch(block)
        if m is None:
            return None
        if m["mod"]:
            modifiers.append((m["mod"], m["modval"] or ""))
        if m["code"]:
            events.append(SiaEvent(m["code"], m["address"]))
    if not events:
        return None
    return SiaDcs(head["flag"] != "O", tuple(modifiers), tuple(events))


def read_payload(frame: Frame) -> ContactId | SiaDcs | None:
    """The event a frame carries: Contact ID for ADM-CID, SIA DCS for SIA-DCS; None for link tests,
    answers, and a data block that does not read (the receiver raises it as an unknown code)."""
    if frame.token is Token.ADM_CID:
        return parse_contact_id(frame.data)
    if frame.token is Token.SIA_DCS:
        return parse_sia_dcs(frame.data)
    return None


def contact_id_data(account: str, event: ContactId) -> str:
    """The ADM-CID data block ``#<account>|QEEE GG ZZZ``."""
    account = _check_hex(account, "the account", 3, 16)
    if not 0 <= event.code <= 999:
        raise ValueError("a Contact ID code is 000-999")
    if not re.fullmatch(r"[0-9A-F]{2}", event.group) or not re.fullmatch(r"[0-9A-F]{3}", event.zone):
        raise ValueError("the group is 2 and the zone 3 digits")
    return f"#{account}|{event.qualifier.value}{event.code:03d} {event.group} {event.zone}"


def sia_dcs_data(account: str, code: str, *, address: str = "", area: str | None = None) -> str:
    """The SIA-DCS data block ``#<account>|N[ri<area>/]<code><address>``."""
    account = _check_hex(account, "the account", 3, 16)
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise ValueError("a SIA code is two capital letters")
    if not re.fullmatch(r"[0-9A-Za-z ^.-]*", address) or (area is not None and not area.isdigit()):
        raise ValueError("the address is letters, digits, spaces and ^.- ; the area is digits")
    modifier = f"ri{area}/" if area is not None else ""
    return f"#{account}|N{modifier}{code}{address}"
