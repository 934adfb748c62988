"""Events this node stored lately, and when each one's ack went out: a unit's retries of an event already
stored are answered from memory, and -- in a backlog -- a copy that arrives within a second of the ack
is not answered again.

Why: a broker that keeps the bridge's session queues every copy units send while the bridge is away.
Units retrying every 3 s through a 20 s pause of the bridge left about 35,000 messages for 7,000
events; the bridge then stored (found the duplicate) and acked every copy in turn while the units, not
yet acked, kept adding more -- the backlog took 50-66 s to clear (issue 17, ``bench/chaos.py``). Answered
from here, a stale copy costs its decoding only.

Safe: an entry is made only for an event the store said is durably stored (``accepted`` or
``duplicate``), and the answer is what the store would give -- ``duplicate`` with the alert id of the
first delivery (wire contract). A node that does not know an event asks the store as before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

#: Events remembered (the oldest are forgotten first): about 14 MB (some 420 bytes each, measured), and
#: a minute at 500 events/s.
SIZE = 32_768
#: In a backlog, a copy that arrives within this many seconds of the event's ack was sent before it
#: and is not answered again (the unit gets that ack).
QUIET_S = 1.0

EventKey = tuple[str, str]
#: What is kept of an event: (alert id or None, when its last ack went out or None). A plain tuple of
#: strings and floats on purpose: the garbage collector stops tracking such a tuple at its first young
#: collection, where an object of a class of ours (slots or not) stays tracked for life. 32,768 tracked
#: entries made every full collection walk them: 15-24 ms each, every 40 s at 500 events/s, which was
#: most of the PostgreSQL soak's p99.9 (``bench/soak.py``).
_Entry = tuple[str | None, float | None]


class Stored(NamedTuple):
    """A stored event as it was looked up: the alert it joined (None for a heartbeat), and when its last
    ack went out."""

    alert_id: str | None
    acked_at: float | None = None


class RecentAcks:
    """A bounded memory of ``(device_id, event_id)`` -> what was stored, least recently used forgotten."""

    def __init__(
        self, size: int = SIZE, quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._size = size
        self._quiet = quiet_s
        self._clock = clock
        self._stored: OrderedDict[EventKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stored)

    def stored(self, key: EventKey, alert_id: str | None) -> None:
        """The store took this event (accepted or duplicate), joined to ``alert_id``."""
        self._stored[key] = (alert_id, None)
        self._stored.move_to_end(key)
        while len(self._stored) > self._size:
            self._stored.popitem(last=False)

    def acked(self, key: EventKey) -> None:
        """The ack of this event was published."""
        known = self._stored.get(key)
        if known is not None:
            self._stored[key] = (known[0], self._clock())

    def lookup(self, key: EventKey) -> Stored | None:
        """What is known of a stored event now, or None (ask the store)."""
        known = self._stored.get(key)
        if known is None:
            return None
        self._stored.move_to_end(key)
        return Stored(*known)

    def just_acked(self, known: Stored) -> bool:
        """Whether the event's ack (as of its lookup) went out less than ``quiet_s`` ago (a copy needs no
        answer)."""
        return known.acked_at is not None and self._clock() - known.acked_at < self._quiet
