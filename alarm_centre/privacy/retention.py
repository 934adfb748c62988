"""Retention: each kind of record is kept for its period in days (``retention.days``), then deleted or
anonymised by a background job that logs what it did and never touches an open alert.

A :class:`RetentionKind` is a name, a description, a default period and one function that handles a
batch of records older than a cutoff. The built-in kinds are in :mod:`alarm_centre.privacy.kinds`;
``bridge/feature_privacy.py`` lists every kind the bridge runs (a feature with records of its own adds
its kind there). :func:`apply_retention` runs them once; :class:`RetentionJob` runs them every
``retention.check_every_s`` with the clock it is given, backing off after a failed run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alarm_centre.alerts.model import iso
from alarm_centre.store.tx import Database, PostCommit, Tx

log = logging.getLogger(__name__)

DAY_S = 86400.0
#: Batches one kind may take in one run; the rest waits for the next run (a bounded transaction count).
MAX_BATCHES = 1000


@dataclass(frozen=True, slots=True)
class Batch:
    """What one batch did: records deleted or anonymised, and whether more may be waiting."""

    done: int
    more: bool


#: ``apply(tx, cutoff, now, limit)``: handle at most ``limit`` records older than ``cutoff`` (epoch s).
Apply = Callable[[Tx, float, float, int], Awaitable[Batch]]


@dataclass(frozen=True, slots=True)
class RetentionKind:
    """One kind of record with a retention period."""

    #: The key under ``retention.days`` (``resolved_alerts``, ``call_recordings``, ...).
    name: str
    #: What the kind covers and what happens to it, for the docs and ``privacy retention --list``.
    what: str
    #: Days kept when the configuration does not say; None keeps it for ever.
    default_days: int | None
    apply: Apply


def check_kinds(kinds: Sequence[RetentionKind]) -> None:
    """Kinds have distinct names (a second ``raw_events`` would be a configuration nobody can set)."""
    names = [k.name for k in kinds]
    if len(set(names)) != len(names):
        raise ValueError(f"two retention kinds share a name: {sorted(names)}")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days per kind, from ``retention.days``; a kind not named keeps its default."""

    days: Mapping[str, int | None] = field(default_factory=dict)

    def days_for(self, kind: RetentionKind) -> int | None:
        return self.days.get(kind.name, kind.default_days)

    def describe(self, kinds: Sequence[RetentionKind]) -> list[dict[str, Any]]:
        """Each kind with its period, for the API and the CLI."""
        return [
            {"kind": k.name, "days": self.days_for(k), "default_days": k.default_days, "what": k.what}
            for k in kinds
        ]


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """One run: when, and how many records of each kind were deleted or anonymised."""

    started_at: float
    finished_at: float
    counts: dict[str, int]
    #: Kinds that hit :data:`MAX_BATCHES` and have more waiting for the next run.
    unfinished: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "counts": self.counts,
            "unfinished": list(self.unfinished),
        }


_RUN = "INSERT INTO retention_runs (started_at, finished_at, node, counts, error) VALUES (?, ?, ?, ?, ?)"


def _one_batch(
    kind: RetentionKind, cutoff: float, now: float, limit: int
) -> Callable[[Tx, PostCommit], Awaitable[Batch]]:
    async def work(tx: Tx, post: PostCommit) -> Batch:
        return await kind.apply(tx, cutoff, now, limit)

    return work


async def apply_retention(
    store: Database,
    kinds: Sequence[RetentionKind],
    policy: RetentionPolicy,
    *,
    now: float,
    batch: int = 1000,
    node: str = "",
) -> RetentionReport:
    """Run every kind once against ``now`` (the job's clock), each batch in a transaction of its own;
    record the run (``retention_runs``) and log the counts. Raises if a batch fails (the batches
    before it stay done: each is complete in itself)."""
    started = time.time()
    counts: dict[str, int] = {}
    unfinished: list[str] = []
    for kind in kinds:
        days = policy.days_for(kind)
        if days is None:
            continue
        cutoff = now - days * DAY_S
        total = 0
        for _ in range(MAX_BATCHES):

            async def work(
                tx: Tx, post: PostCommit, kind: RetentionKind = kind, cutoff: float = cutoff
            ) -> Batch:
                return await kind.apply(tx, cutoff, now, batch)

            result = await store.transaction(work)
            total += result.done
            if not result.more:
                break
        else:
            unfinished.append(kind.name)
        counts[kind.name] = total
    report = RetentionReport(started, time.time(), counts, tuple(unfinished))

    async def remember(tx: Tx, post: PostCommit) -> None:
        await tx.execute(
            _RUN,
            report.started_at,
            report.finished_at,
            node,
            json.dumps(counts, sort_keys=True),
            None,
        )

    await store.transaction(remember)
    log.info(
        "retention: %s%s",
        ", ".join(f"{name} {n}" for name, n in counts.items()) or "nothing configured",
        f" (more waiting: {', '.join(unfinished)})" if unfinished else "",
    )
    return report


async def recent_runs(store: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs of the retention job, newest first (failed runs say why)."""
    async with store.read() as tx:
        rows = await tx.fetchall("SELECT * FROM retention_runs ORDER BY id DESC LIMIT ?", limit)
    return [
        {
            "started_at": iso(float(r["started_at"])),
            "finished_at": iso(float(r["finished_at"])),
            "node": r["node"],
            "counts": json.loads(r["counts"]),
            "error": r["error"],
        }
        for r in rows
    ]


Sleep = Callable[[float], Awaitable[None]]


class RetentionJob:
    """Runs the retention kinds every ``every_s`` seconds against ``clock()``.

    A failed run is logged (the error's type and message, never records), recorded in
    ``retention_runs``, and tried again after ``retry_s``, doubling up to ``every_s``. ``clock`` says
    what "now" is for the cutoffs (tests move it months ahead); ``sleep`` waits between runs.
    """

    def __init__(
        self,
        store: Database,
        kinds: Sequence[RetentionKind],
        policy: RetentionPolicy,
        *,
        every_s: float,
        batch: int = 1000,
        retry_s: float = 60.0,
        node: str = "",
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        check_kinds(kinds)
        self.store = store
        self.kinds = tuple(kinds)
        self.policy = policy
        self.every_s = every_s
        self.batch = batch
        self.retry_s = min(retry_s, every_s)
        self.node = node
        self.clock = clock
        self.sleep = sleep
        #: Told of each failed run (the bridge counts it in ``telecare_loop_errors_total{loop="retention"}``).
        self.on_failure = on_failure
        #: The last run that finished, and how many runs in a row have failed.
        self.last: RetentionReport | None = None
        self.failures = 0

    async def run_once(self) -> RetentionReport:
        """One run now (``clock()``), as the loop does it; raises what the run raised."""
        self.last = await apply_retention(
            self.store, self.kinds, self.policy, now=self.clock(), batch=self.batch, node=self.node
        )
        return self.last

    def next_wait(self) -> float:
        """Seconds until the next run: ``every_s`` after a good run, a growing back-off after failures."""
        if not self.failures:
            return self.every_s
        return float(min(self.every_s, self.retry_s * 2 ** (self.failures - 1)))

    async def run(self) -> None:
        """Run until cancelled: a run, then a wait (:meth:`next_wait`)."""
        while True:
            try:
                await self.run_once()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if self.on_failure is not None:
                    self.on_failure()
                log.error(
                    "retention run failed (%s: %s); trying again in %.0f s",
                    type(exc).__name__,
                    exc,
                    self.next_wait(),
                )
                await self._record_failure(exc)
            await self.sleep(self.next_wait())

    async def _record_failure(self, exc: Exception) -> None:
        now = time.time()

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                _RUN,
                now,
                now,
                self.node,
                "{}",
                f"{type(exc).__name__}: {exc}"[:500],
            )

        try:
            await self.store.transaction(work)
        except Exception as again:  # the store is what failed: the log line above says so
            log.debug("could not record the failed retention run: %s", again)
