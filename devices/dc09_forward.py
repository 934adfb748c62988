"""Forwarding alerts to an upstream monitoring centre over SIA DC-09, sans-I/O: the frames, the answers,
and one message's way through the paths (primary first, then each backup).

- :func:`message_frame` -- an alert or a restore as an ``ADM-CID`` (Contact ID) or ``SIA-DCS`` frame, with
  the account the centre knows the resident by and the unit's (or Echo's) id in an ``[I...]`` block
  (DC-09 "alarm text": the block centres show the operator; pysiaalarm reads it as ``Alarm Text``).
- :func:`link_test_frame` -- the ``NULL`` frame a path is supervised with.
- :func:`read_answer` -- an answer (ACK, NAK with or without a time, DUH) to one of our frames.
- :class:`Delivery` -- one message's state machine: which path and frame to send next, and what an
  answer or a silence means (:class:`Step`); the same sequence number on every send, a NAK's time
  corrects that path's clock and the frame is resent, a DUH ends the delivery (never resent), a path
  that does not answer hands the message to the next.
- :class:`LinkSupervision` -- one path's up/down state from its answers and link tests.

No clock, no sockets: ``now`` is always a parameter.
"""

from __future__ import annotations

import re
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from devices.dc09 import (
    ContactId,
    ExtendedData,
    Frame,
    Refused,
    Token,
    build_frame,
    clock_offset,
    contact_id_data,
    parse_frame,
    sia_dcs_data,
)
from devices.dc09_codes import forward_codes
from devices.vocabulary import EventType

#: The extended-data block that names the unit or Echo an alert came from: DC-09 ``I`` (alarm text).
WHO_BLOCK = "I"
#: The longest ``[I...]`` value sent (DC-09 allows 256 characters; our ids are at most 64).
WHO_MAX = 64
_WHO_UNSAFE = re.compile(r"[^\x20-\x7e]|[\[\]|]")


@dataclass(frozen=True, slots=True)
class UpstreamUrl:
    """Where a centre's receiver listens: ``tcp`` or ``udp``, host and port."""

    scheme: str
    host: str
    port: int


_URL_RE = re.compile(
    r"(?P<scheme>tcp|udp)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})/?"
)


def parse_upstream_url(url: str) -> UpstreamUrl:
    """``tcp://host:port`` or ``udp://host:port`` (an IPv6 host in brackets); ValueError otherwise."""
    m = _URL_RE.fullmatch(url.strip())
    if m is None or not 0 < int(m["port"]) < 65536:
        raise ValueError("the url is tcp://host:port or udp://host:port (port 1-65535)")
    return UpstreamUrl(m["scheme"], m["host"].strip("[]"), int(m["port"]))


class Payload(StrEnum):
    """What a path's frames carry: Contact ID (``ADM-CID``, the default) or SIA DCS."""

    ADM_CID = "ADM-CID"
    SIA_DCS = "SIA-DCS"

    @property
    def token(self) -> Token:
        return Token.ADM_CID if self is Payload.ADM_CID else Token.SIA_DCS


@dataclass(frozen=True, slots=True)
class PathSettings:
    """What a frame on one path needs: the path's own account (used when the resident has none), its AES
    key (never printed), receiver and line numbers, and the payload."""

    account: str
    key: bytes | None = field(default=None, repr=False)
    receiver: str | None = None
    line: str = "0"
    payload: Payload = Payload.ADM_CID


@dataclass(frozen=True, slots=True)
class Message:
    """One alert or restore to forward. ``sequence`` (1-9999) is fixed when it is queued, so every send
    is the same message to the centre; ``account`` is the resident's (None: each path's own)."""

    sequence: int
    event_type: EventType
    restore: bool
    who: str
    account: str | None = None


def forwardable(event_type: EventType, *, restore: bool = False) -> bool:
    """Whether an alert of ``event_type`` (or its restore) has codes to forward."""
    return forward_codes(event_type, restore=restore) is not None


def who_block(who: str) -> ExtendedData:
    """``[I<unit or Echo id>]``: printable ASCII without ``[``, ``]`` or ``|``, at most :data:`WHO_MAX`."""
    return ExtendedData(WHO_BLOCK, _WHO_UNSAFE.sub("?", who)[:WHO_MAX])


def message_data(message: Message, path: PathSettings) -> tuple[Token, str, str]:
    """The id, the data block and the account of ``message`` on ``path``; ValueError for a type that
    has no code to forward (callers queue only :func:`forwardable` ones)."""
    codes = forward_codes(message.event_type, restore=message.restore)
    if codes is None:
        raise ValueError(f"{message.event_type.value} has no DC-09 code to forward")
    contact, sia = codes
    account = message.account or path.account
    if path.payload is Payload.ADM_CID:
        event = ContactId(contact.qualifier, contact.code, "01", "000")
        return Token.ADM_CID, contact_id_data(account, event), account
    return Token.SIA_DCS, sia_dcs_data(account, sia, address="000", area="1"), account


def message_frame(message: Message, path: PathSettings, now: datetime) -> bytes:
    """The frame of ``message`` on ``path``, stamped ``now`` (the path's corrected clock); encrypted
    when the path has a key."""
    token, data, account = message_data(message, path)
    return build_frame(
        token=token,
        sequence=message.sequence,
        account=account,
        line=path.line,
        receiver=path.receiver,
        data=data,
        extended=(who_block(message.who),),
        timestamp=now,
        key=path.key,
    )


def link_test_frame(sequence: int, path: PathSettings, now: datetime) -> bytes:
    """The path's link test: ``"NULL"`` with its own account, stamped ``now``."""
    return build_frame(
        token=Token.NULL,
        sequence=sequence,
        account=path.account,
        line=path.line,
        receiver=path.receiver,
        timestamp=now,
        key=path.key,
    )


class Reply(StrEnum):
    """What the centre answered."""

    ACK = "ack"
    NAK = "nak"
    DUH = "duh"
    UNREADABLE = "unreadable"  # not a frame, not an answer, or an answer to another sequence


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read: its kind, for a NAK with a time how far the centre's clock is ahead of ours,
    and what was wrong with an unreadable one."""

    reply: Reply
    offset: timedelta | None = None
    detail: str = ""


def read_answer(
    raw: bytes, *, sequence: int, path: PathSettings, now: datetime, account: str | None = None
) -> Answer:
    """Read the centre's answer to our frame ``sequence`` for ``account`` (None: the path's own) on
    ``path``. An ACK or DUH must name that sequence and account (else it answers another frame: it is
    unreadable, never a delivery); on a path with a key it must be encrypted with it. Never raises on
    any ``raw``."""
    key = path.key
    parsed = parse_frame(raw, now=now, keys=lambda _account: key, window=None)
    if isinstance(parsed, Refused):
        return Answer(Reply.UNREADABLE, detail=f"{parsed.reason.value}: {parsed.detail}")
    return _answer_of(parsed, sequence, (account or path.account).upper(), now)


def _answer_of(frame: Frame, sequence: int, account: str, now: datetime) -> Answer:
    if frame.token is Token.NAK:  # a NAK names no sequence (0000): it answers what we just sent
        return Answer(Reply.NAK, clock_offset(frame, now))
    if frame.token not in (Token.ACK, Token.DUH):
        return Answer(Reply.UNREADABLE, detail=f"a {frame.token.value} is not an answer")
    if frame.sequence != sequence:
        return Answer(Reply.UNREADABLE, detail=f"answer to sequence {frame.sequence:04d}, not {sequence:04d}")
    if frame.account != account:
        return Answer(Reply.UNREADABLE, detail=f"answer for account {frame.account}, not {account}")
    return Answer(Reply.ACK if frame.token is Token.ACK else Reply.DUH)


# --- one message's delivery -------------------------------------------------------------------------


class StepKind(StrEnum):
    """A step of a delivery, as the alert's timeline records it."""

    SENT = "sent"
    ACKED = "acked"
    NAK = "nak"
    DUH = "duh"
    NO_ANSWER = "no_answer"
    SWITCHED = "switched"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Step:
    """One step on path ``path`` (its index), with what the timeline shows."""

    kind: StepKind
    path: int
    detail: dict[str, str | int | float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` on path ``path`` and wait for its answer."""

    path: int
    frame: bytes


class Delivery:
    """One message through the paths, in order. Each path gets ``tries`` sends of the same sequence
    (a NAK that corrects the clock earns a resend of its own, at most ``max_naks`` in all); a path
    that stays silent hands the message to the next. ACK and DUH end the delivery; when every path
    has been tried without either, it has failed this time (the queue retries it later, with the
    same sequence).

    ``offsets`` is each path's clock correction (shared by every delivery and link test on that path);
    a NAK with a time updates it.
    """

    def __init__(
        self,
        message: Message,
        paths: Sequence[PathSettings],
        offsets: MutableSequence[timedelta],
        *,
        tries: int = 2,
        max_naks: int = 2,
    ) -> None:
        if not paths or len(offsets) != len(paths):
            raise ValueError("a delivery needs at least one path and one offset per path")
        self.message = message
        self._paths = paths
        self._offsets = offsets
        self._tries = tries
        self._naks_left = max_naks
        self._path = 0
        self._sent_on_path = 0
        self._extra_sends = 0
        self.steps: list[Step] = []
        #: ACK or DUH once the delivery has ended with an answer; None while it goes on or has failed.
        self.result: Reply | None = None
        self.failed = False

    @property
    def done(self) -> bool:
        return self.result is not None or self.failed

    @property
    def path(self) -> int:
        """The index of the path in use."""
        return self._path

    def next_send(self, now: datetime) -> Send | None:
        """The next frame to send (None when the delivery is over)."""
        if self.done:
            return None
        settings = self._paths[self._path]
        self._sent_on_path += 1
        frame = message_frame(self.message, settings, now + self._offsets[self._path])
        self.steps.append(
            Step(StepKind.SENT, self._path, {"sequence": self.message.sequence, "send": self._sent_on_path})
        )
        return Send(self._path, frame)

    def on_answer(self, raw: bytes, now: datetime) -> Answer:
        """The answer to the last send."""
        answer = read_answer(
            raw,
            sequence=self.message.sequence,
            path=self._paths[self._path],
            now=now,
            account=self.message.account,
        )
        if answer.reply is Reply.ACK:
            self._end(StepKind.ACKED, Reply.ACK)
        elif answer.reply is Reply.DUH:
            self._end(StepKind.DUH, Reply.DUH)
        elif answer.reply is Reply.NAK:
            detail: dict[str, str | int | float] = {"sequence": self.message.sequence}
            if answer.offset is not None and self._naks_left > 0:
                self._naks_left -= 1
                self._offsets[self._path] = answer.offset
                self._extra_sends += 1
                detail["clock_offset_s"] = round(answer.offset.total_seconds(), 3)
            self.steps.append(Step(StepKind.NAK, self._path, detail))
            self._after_unanswered()
        else:
            self.steps.append(Step(StepKind.NO_ANSWER, self._path, {"reason": answer.detail}))
            self._after_unanswered()
        return answer

    def on_silence(self, reason: str) -> None:
        """The last send got no answer: a timeout, a refused or broken connection."""
        self.steps.append(Step(StepKind.NO_ANSWER, self._path, {"reason": reason}))
        self._after_unanswered()

    def _end(self, kind: StepKind, result: Reply) -> None:
        self.steps.append(Step(kind, self._path, {"sequence": self.message.sequence}))
        self.result = result

    def _after_unanswered(self) -> None:
        if self._sent_on_path < self._tries + self._extra_sends:
            return
        if self._path + 1 < len(self._paths):
            self._path += 1
            self._sent_on_path = self._extra_sends = 0
            self.steps.append(Step(StepKind.SWITCHED, self._path, {"from": self._path - 1}))
            return
        self.failed = True
        self.steps.append(Step(StepKind.FAILED, self._path, {"paths": len(self._paths)}))


# --- link supervision -------------------------------------------------------------------------------


class LinkSupervision:
    """One path's supervision: a link test is due every ``interval_s``; the path is down once it has
    not answered for longer than that, and up again at its next answer. Times are seconds (the
    bridge's clock)."""

    def __init__(self, interval_s: float, now: float) -> None:
        self.interval_s = interval_s
        self.last_answer = now
        self.next_test = now
        self.down = False

    def test_due(self, now: float) -> bool:
        return now >= self.next_test

    def tested(self, now: float) -> None:
        """A link test was sent (answered or not): the next is one interval on."""
        self.next_test = now + self.interval_s

    def answered(self, now: float) -> bool:
        """The path answered; True when that brings it back up."""
        self.last_answer = max(self.last_answer, now)
        was_down, self.down = self.down, False
        return was_down

    def silent_for(self, now: float) -> float:
        return now - self.last_answer

    def check(self, now: float) -> bool:
        """True when the path has just gone down (silent for longer than the interval)."""
        if not self.down and self.silent_for(now) > self.interval_s:
            self.down = True
            return True
        return False
