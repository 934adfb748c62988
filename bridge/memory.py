"""Freed memory handed back to the system, once a minute: a long-running bridge's RSS follows what it
uses, not the most it once used.

Why: glibc's ``malloc`` keeps what the process frees for its next allocations. Python's objects of
more than 512 bytes, asyncpg's buffers and every thread's arena come from it, and a busy bridge frees
them in a scattered order, so whole pages sit free inside the heaps and still count in RSS. In a
10-minute soak at 500 events/s on PostgreSQL (``bench/soak.py``) RSS grew 11-13 % after the first
minute; at minute 2.5 the heaps held 6.5 MB of free chunks (3.6 MB in the main heap, 2.7 MB in a lane
thread's arena), ``malloc_trim(0)`` gave 4.5 MB back, and RSS then grew 0.2 MB in the next 1.5
minutes: the growth was free memory kept, not a leak (``docs/scaling.md``).

``malloc_trim(0)`` hands back every whole free page of every arena (``madvise``), not only the top of
the heap. It runs in a worker thread, so the event loop goes on; an allocation that needs the arena
being trimmed waits for it. Where the C library has no ``malloc_trim`` (musl, macOS) nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Awaitable, Callable

from bridge.metrics import BridgeMetrics

log = logging.getLogger(__name__)

#: Seconds between trims. A trim takes about 2 ms of CPU (measured with 20 MB to hand back; 20 ms with
#: 200 MB), in the worker thread.
TRIM_EVERY_S = 60.0

Trim = Callable[[int], int]


def glibc_malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim``, or None where the C library has none.

    Looked up among the symbols the interpreter already has loaded (``CDLL(None)``), not with
    ``ctypes.util.find_library``: that runs ``ldconfig`` (or a compiler) in a child process, which a
    bridge starting up must not do.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def rss_bytes() -> int:
    """This process's resident memory in bytes (0 where ``/proc`` has no ``statm``)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryTrimmer:
    """Every ``every_s`` seconds, ``trim(0)`` in a worker thread; what RSS fell by is counted in
    ``telecare_memory_returned_bytes_total``."""

    def __init__(
        self,
        metrics: BridgeMetrics,
        trim: Trim,
        *,
        every_s: float = TRIM_EVERY_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._metrics = metrics
        self._trim = trim
        self.every_s = every_s
        self._sleep = sleep

    async def trim_once(self) -> int:
        """Hand free pages back now; returns how many bytes RSS fell by (0 if it did not)."""
        before = rss_bytes()
        await asyncio.to_thread(self._trim, 0)
        returned = max(0, before - rss_bytes())
        self._metrics.memory_returned.inc(returned)
        log.debug("malloc_trim handed back %.1f MB", returned / 1e6)
        return returned

    async def run(self) -> None:
        """Trim every ``every_s`` seconds until cancelled; a failed round is logged and counted."""
        while True:
            await self._sleep(self.every_s)
            with self._metrics.loop_round("memory-trim"):
                await self.trim_once()
