"""SIP non-INVITE transactions, sans-I/O (RFC 3261 §17.1.2 client, §17.2.2 server, §17.2.3 matching).

:class:`ServerTransactions` -- every request is matched to its transaction: a new one is handled, a
retransmission of one still being handled is absorbed, a retransmission of an answered one gets the
very same final response again (for Timer J, 64*T1, after the answer). Time is always a parameter.

:class:`ClientTransaction` -- when to (re)send a request of our own (Timer E: T1 doubling up to T2 on
an unreliable transport, once on a reliable one) and when to give up (Timer F, 64*T1).
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum

from devices.sip import BRANCH_COOKIE, Request, tag_of

#: RFC 3261 timer values, seconds: the round-trip estimate, the longest retransmission interval.
T1 = 0.5
T2 = 4.0
#: How long an answered server transaction (and a client transaction) lives: 64*T1.
TIMER_J = 64 * T1
TIMER_F = 64 * T1
#: Transactions being handled at once before new requests are refused (503).
MAX_OPEN = 10_000
#: The most bytes of answers kept for retransmissions (a response copies every Via of its request, so
#: one can be ~64 KiB); beyond it the oldest are forgotten, and a retransmission of one is handled afresh
#: (it maps onto the same event, so it gets the same answer).
MAX_ANSWERED_BYTES = 64 * 1024 * 1024


def transaction_key(request: Request, origin: str = "") -> tuple[str, ...]:
    """The key a request and its retransmissions share (§17.2.3): branch, sent-by and method for an
    RFC 3261 client; the RFC 2543 fields otherwise. ``origin`` (the transport and address it came
    from) is part of it, so that a request from elsewhere naming the same branch and sent-by (forged,
    or a predictable branch guessed) can neither take another unit's answer nor have that unit's
    request absorbed as its retransmission."""
    via = request.top_via
    branch = via.branch or ""
    if branch.startswith(BRANCH_COOKIE):
        return ("3261", origin, branch, via.host.lower(), str(via.port or ""), request.method)
    number, method = request.cseq
    return (
        "2543",
        origin,
        request.uri,
        tag_of(request.header("To") or "") or "",
        tag_of(request.header("From") or "") or "",
        request.call_id,
        f"{number} {method}",
        via.text(),
    )


class Arrival(StrEnum):
    """What to do with a request that arrived."""

    NEW = "new"  # handle it, then call complete() with the answer
    ABSORBED = "absorbed"  # a retransmission of one being handled: nothing to send
    RESEND = "resend"  # a retransmission of one answered: send ServerTransactions.answer again
    OVERLOADED = "overloaded"  # too many being handled: answer 503


class ServerTransactions:
    """The server transactions of one transport (UDP, or the TCP/TLS connections of one listener)."""

    def __init__(
        self, *, linger_s: float = TIMER_J, max_open: int = MAX_OPEN, max_bytes: int = MAX_ANSWERED_BYTES
    ) -> None:
        self._linger_s = linger_s
        self._max_open = max_open
        self._max_bytes = max_bytes
        #: Bytes of the answers kept.
        self.answered_bytes = 0
        self._open: set[tuple[str, ...]] = set()
        #: Answered ones: key -> (answer, expiry), in order of expiry.
        self._answered: OrderedDict[tuple[str, ...], tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open) + len(self._answered)

    def arrive(self, request: Request, now: float, origin: str = "") -> tuple[Arrival, bytes | None]:
        """Match ``request`` from ``origin``: :data:`Arrival.RESEND` comes with the answer to send again."""
        self.expire(now)
        key = transaction_key(request, origin)
        if key in self._open:
            return Arrival.ABSORBED, None
        answered = self._answered.get(key)
        if answered is not None:
            return Arrival.RESEND, answered[0]
        if len(self._open) >= self._max_open:
            return Arrival.OVERLOADED, None
        self._open.add(key)
        return Arrival.NEW, None

    def complete(self, request: Request, answer: bytes, now: float, origin: str = "") -> None:
        """Record the final response sent for ``request``; its retransmissions get it again."""
        key = transaction_key(request, origin)
        self._open.discard(key)
        self._forget(key)
        self._answered[key] = (answer, now + self._linger_s)
        self.answered_bytes += len(answer)
        while len(self._answered) > 4 * self._max_open or self.answered_bytes > self._max_bytes:
            self._forget(next(iter(self._answered)))  # a flood: the oldest answers go first

    def _forget(self, key: tuple[str, ...]) -> None:
        gone = self._answered.pop(key, None)
        if gone is not None:
            self.answered_bytes -= len(gone[0])

    def abandon(self, request: Request, origin: str = "") -> None:
        """Forget a transaction left unanswered: its next retransmission is handled as new."""
        self._open.discard(transaction_key(request, origin))

    def expire(self, now: float) -> None:
        """Drop answered transactions whose Timer J has fired."""
        while self._answered:
            key, (_, expires) = next(iter(self._answered.items()))
            if expires > now:
                return
            self._forget(key)


class ClientState(StrEnum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"


class ClientTransaction:
    """When to send one request of ours and its retransmissions (§17.1.2.2)."""

    def __init__(self, *, reliable: bool, now: float, timeout_s: float = TIMER_F) -> None:
        self.state = ClientState.TRYING
        self.status: int | None = None
        self._reliable = reliable
        self._interval = T1
        self._next_send = now
        self._deadline = now + timeout_s  # Timer F (a simulated unit may give up sooner)

    @property
    def done(self) -> bool:
        return self.state in (ClientState.COMPLETED, ClientState.TIMED_OUT)

    def due(self, now: float) -> bool:
        """Whether the request is to be (re)sent now."""
        return not self.done and now >= self._next_send and now < self._deadline

    def sent(self, now: float) -> None:
        """The request was just sent: schedule the next retransmission (none on a reliable transport)."""
        if self._reliable:
            self._next_send = float("inf")
            return
        self._next_send = now + self._interval
        self._interval = min(2 * self._interval, T2) if self.state is ClientState.TRYING else T2

    def wake_at(self) -> float:
        """When :meth:`tick` next has something to do."""
        return min(self._next_send, self._deadline)

    def tick(self, now: float) -> None:
        """Time passed: Timer F gives up on an unanswered request."""
        if not self.done and now >= self._deadline:
            self.state = ClientState.TIMED_OUT

    def received(self, status: int) -> None:
        """A response arrived: provisional ones slow retransmissions to T2, a final one ends it."""
        if self.done:
            return
        if status < 200:
            self.state = ClientState.PROCEEDING
            self._interval = T2
        else:
            self.state = ClientState.COMPLETED
            self.status = status
