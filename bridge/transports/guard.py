"""Limits a network listener keeps against hostile or broken peers (DC-09, SCAIP).

- At most ``max_connections`` TCP/TLS connections at once: to admit one more, the one that has made no
  progress for the longest is closed.
- A connection that brings no whole frame or message for ``idle_s`` (bytes alone do not count), or does
  not read our answers for as long (a full send buffer), is closed: an idle or slowloris peer cannot
  hold a slot for ever.
- At most ``max_datagrams`` UDP datagrams handled at once: one more is dropped (the unit resends).
- Refusal log lines are rate-limited per reason (:class:`LogLimiter`), so a flood of garbage cannot fill
  the disk; every refusal is still counted.

Each limit hit is counted in ``telecare_events_rejected_reasons`` (reasons below) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.metrics import BridgeMetrics

#: Defaults (config keys ``<section>.max_connections``, ``idle_s``, ``max_datagrams``).
MAX_CONNECTIONS = 1000
IDLE_S = 600.0
MAX_DATAGRAMS = 256
#: Refusal log lines per reason in one :data:`LOG_WINDOW_S` before the rest are only counted.
LOG_BURST = 20
LOG_WINDOW_S = 60.0

#: Reasons counted in ``telecare_events_rejected_reasons``.
TOO_MANY_CONNECTIONS = "too_many_connections"
IDLE_CONNECTION = "idle_connection"
DATAGRAMS_OVERLOADED = "datagrams_overloaded"
#: The log key of faults in handling (the store down, a bug): rate-limited like refusals, as a store
#: outage under load would otherwise log a traceback per frame.
NOT_HANDLED = "not_handled"
#: The log key of events the store could not take (no ACK / busy answer).
NOT_STORED = "not_stored"


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The limits of one listener (TCP, TLS and UDP of one receiver)."""

    max_connections: int = MAX_CONNECTIONS
    idle_s: float = IDLE_S
    max_datagrams: int = MAX_DATAGRAMS


DEFAULT_LIMITS = ListenerLimits()


@dataclass(slots=True)
class LogLimiter:
    """At most ``burst`` log lines per key in each ``window_s``; the next line after a window says how
    many were left out."""

    burst: int = LOG_BURST
    window_s: float = LOG_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def allow(self, key: str) -> tuple[bool, int]:
        """Whether to log a line for ``key`` now, and how many lines were left out before it."""
        now = self.clock()
        start, logged, dropped = self._windows.get(key, (now, 0, 0))
        if now - start >= self.window_s:
            start, logged = now, 0
        if logged < self.burst:
            self._windows[key] = (start, logged + 1, 0)
            return True, dropped
        self._windows[key] = (start, logged, dropped + 1)
        return False, 0


#: Descriptors kept free beyond a listener's connections (the store, the HTTP API, MQTT, logs ...).
HEADROOM_FDS = 1024


def make_room_for(connections: int, log: logging.Logger) -> int:
    """Raise the process's soft limit on open files (systemd's default is 1024) so that ``connections``
    fit beside everything else, up to the hard limit; return the soft limit. Past it, ``accept`` fails
    with EMFILE and the whole bridge (store, API) runs out of descriptors, so say so when it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + HEADROOM_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        roomy = max(4 * wanted, 65_536)  # both listeners and everything else, not just this one
        target = roomy if hard == resource.RLIM_INFINITY else min(roomy, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
        if soft < wanted:
            log.warning(
                "open-files limit %d is below %d connections plus %d: lower max_connections or raise "
                "LimitNOFILE",
                soft,
                connections,
                HEADROOM_FDS,
            )
    return int(soft)


class Connection:
    """One admitted connection and when it last made progress (a whole frame or message)."""

    def __init__(self, peer: Any, writer: asyncio.StreamWriter) -> None:
        self.peer = peer
        self.writer = writer
        self.last_progress = time.monotonic()

    def progressed(self) -> None:
        """A whole frame or message arrived: the idle clock starts again."""
        self.last_progress = time.monotonic()


class ListenerGuard:
    """Counts one receiver's connections and datagrams in flight against its :class:`ListenerLimits`."""

    def __init__(
        self, name: str, transport: str, metrics: BridgeMetrics, limits: ListenerLimits, log: logging.Logger
    ) -> None:
        self.name = name
        self.limits = limits
        self._transport = transport
        self._metrics = metrics
        self._log = log
        self.logs = LogLimiter()
        self._open: set[Connection] = set()
        make_room_for(limits.max_connections, log)
        self.datagrams = 0

    def warn(
        self, reason: str, message: str, *args: Any, exc_info: bool = False, level: int = logging.WARNING
    ) -> None:
        """Log a refusal's line (with the exception being handled, when ``exc_info``), unless ``reason``
        has been logged too often lately."""
        allowed, dropped = self.logs.allow(reason)
        if not allowed:
            return
        if dropped:
            message += " (%d more %s lines not logged)"
            args = (*args, dropped, reason)
        self._log.log(level, message, *args, exc_info=exc_info)

    def _count(self, reason: str) -> None:
        self._metrics.rejects.labels(reason, self._transport).inc()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    def open_connection(self, peer: Any, writer: asyncio.StreamWriter) -> Connection:
        """Admit a new connection. At ``max_connections``, the open one that has made no progress for
        the longest is closed first (counted and logged): a peer holding many silent connections cannot
        lock units out, it loses its own."""
        if len(self._open) >= self.limits.max_connections:
            victim = min(self._open, key=lambda c: c.last_progress)
            self._open.discard(victim)
            self._count(TOO_MANY_CONNECTIONS)
            self.warn(
                TOO_MANY_CONNECTIONS,
                "%s connection from %s closed, no frame for %.0f s, to admit one from %s: %d open "
                "(%s.max_connections)",
                self.name,
                victim.peer,
                time.monotonic() - victim.last_progress,
                peer,
                len(self._open) + 1,
                self._transport,
            )
            victim.writer.transport.abort()
        connection = Connection(peer, writer)
        self._open.add(connection)
        return connection

    def close_connection(self, connection: Connection) -> None:
        self._open.discard(connection)

    async def read(self, reader: asyncio.StreamReader, size: int, connection: Connection) -> bytes:
        """Up to ``size`` bytes, or ``b""`` at the end of the stream or once the connection has made no
        progress (:meth:`Connection.progressed`) for ``idle_s``: bytes alone do not count, so a peer
        dribbling a frame byte by byte is closed too (counted and logged; the caller closes)."""
        left = connection.last_progress + self.limits.idle_s - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.0)):
                return await reader.read(size)
        except TimeoutError:
            self._idle(connection.peer, "no whole frame or message received")
            return b""

    async def drain(self, writer: asyncio.StreamWriter, connection: Connection) -> bool:
        """Wait until what was written is sent; False when the peer has not read it for ``idle_s``."""
        try:
            async with asyncio.timeout(self.limits.idle_s):
                await writer.drain()
        except TimeoutError:
            self._idle(connection.peer, "our answers not read")
            return False
        return True

    def _idle(self, peer: Any, what: str) -> None:
        self._count(IDLE_CONNECTION)
        self.warn(
            IDLE_CONNECTION,
            "%s connection from %s closed: %s for %g s (%s.idle_s)",
            self.name,
            peer,
            what,
            self.limits.idle_s,
            self._transport,
        )

    def open_datagram(self, peer: Any) -> bool:
        """Admit a datagram for handling (False: drop it, too many in flight; counted and logged)."""
        if self.datagrams >= self.limits.max_datagrams:
            self._count(DATAGRAMS_OVERLOADED)
            self.warn(
                DATAGRAMS_OVERLOADED,
                "%s datagram from %s dropped: %d being handled (%s.max_datagrams); the unit resends",
                self.name,
                peer,
                self.datagrams,
                self._transport,
            )
            return False
        self.datagrams += 1
        return True

    def close_datagram(self) -> None:
        self.datagrams -= 1
