"""Forwarding to upstream monitoring centres (``dc09.forward``): the loop that sends the queued forwards
and supervises the paths.

Each pass (woken by every commit that queued a forward, else every ``dc09.forward_poll_s``):

1. Claims due forwards (:class:`alarm_centre.forwarding.queue.ForwardQueue`) and sends each through the
   paths in order (:class:`devices.dc09_forward.Delivery`): the primary first, the backup when the
   primary does not answer. The steps go on the alert's timeline in the transaction that closes (ACK,
   DUH) or reschedules (no path answered) the forward.
2. Sends each path's link test (``NULL``) when due, every ``link_test_s``.
3. A path with no answer (to anything) for longer than its ``link_test_s`` is down: a technical alert
   (``sensor_fault``, priority 3) is raised from the synthetic device ``dc09-forward-<path>`` and
   resolved (``cleared_by_device``) when the path answers again; ``/healthz`` names it meanwhile.

All deadlines use the bridge's clock (``host.clock``), so tests drive them; only the wait for one
answer (``ack_timeout_s``) is real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.intake import Intake, StoreUnavailable
from alarm_centre.alerts.lifecycle import Outcome
from alarm_centre.faults import Retry
from alarm_centre.forwarding.hooks import path_device_id
from alarm_centre.forwarding.queue import ForwardItem, ForwardKind, ForwardQueue, TimelineEntry, retry_delay
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import PostCommit, Tx
from bridge.dc09_forward_metrics import ForwardMetrics
from bridge.transports.dc09_upstream import UpstreamLink
from devices.dc09_forward import (
    Delivery,
    LinkSupervision,
    Message,
    PathSettings,
    Reply,
    StepKind,
    link_test_frame,
    read_answer,
)
from devices.events import DeviceEvent
from devices.vocabulary import EventType, alert_key

log = logging.getLogger(__name__)

#: The type of a path-down alert: a technical fault (priority 3) of the synthetic device.
PATH_DOWN_TYPE = EventType.SENSOR_FAULT
#: Sends of one frame on one path before the next path takes it.
TRIES_PER_PATH = 2
#: After this many attempts of one forward, only answers (and every :data:`QUIET_EVERY` th failure)
#: go on its timeline, so a long outage does not bury the alert's history.
FULL_TIMELINE_ATTEMPTS = 3
QUIET_EVERY = 12
#: Forwards claimed at once (sent one after another, in queue order).
CLAIM = 10

_ACTIONS = {
    StepKind.SENT: AuditAction.FORWARD_SENT,
    StepKind.ACKED: AuditAction.FORWARD_ACKED,
    StepKind.NAK: AuditAction.FORWARD_NAK,
    StepKind.DUH: AuditAction.FORWARD_DUH,
    StepKind.NO_ANSWER: AuditAction.FORWARD_NO_ANSWER,
    StepKind.SWITCHED: AuditAction.FORWARD_SWITCHED,
    StepKind.FAILED: AuditAction.FORWARD_FAILED,
}


@dataclass(slots=True)
class UpstreamPath:
    """One configured path: its name and address, what its frames need, its socket and supervision."""

    name: str
    url: str
    settings: PathSettings
    link: UpstreamLink
    supervision: LinkSupervision
    ack_timeout_s: float
    link_sequence: int = 0
    last_problem: str = field(default="")
    #: Whether an open path-down alert left by an earlier run has been looked for (at the first answer).
    alert_checked: bool = False

    def next_link_sequence(self) -> int:
        self.link_sequence = self.link_sequence % 9999 + 1
        return self.link_sequence


class Dc09Forwarder:
    """The forwarding loop of one node; ``passes`` counts completed passes (tests wait on it)."""

    def __init__(
        self,
        *,
        paths: Sequence[UpstreamPath],
        queue: ForwardQueue,
        store: AlertStore,
        intake: Intake,
        metrics: ForwardMetrics,
        clock: Callable[[], float],
        poll_s: float,
    ) -> None:
        self.paths = list(paths)
        self._queue = queue
        self._store = store
        self._intake = intake
        self._metrics = metrics
        self._clock = clock
        self._poll_s = poll_s
        self._offsets = [timedelta(0) for _ in self.paths]
        self._wake = asyncio.Event()
        self.passes = 0
        for path in self.paths:
            metrics.path_up.labels(path.name).set(1)

    def wake(self) -> None:
        """Look for work now (a commit queued a forward)."""
        self._wake.set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @property
    def offsets(self) -> list[timedelta]:
        """Each path's clock correction (from the centre's NAKs)."""
        return list(self._offsets)

    async def run(self) -> None:
        """Send and supervise until cancelled."""
        try:
            await self._queue.release_own(self._clock())
        except Exception as exc:
            log.warning("DC-09 forwarding: own leases not released (they expire): %s", exc)
        try:
            retry = Retry(log, "DC-09 forwarding pass failed")
            while True:
                wait = self._poll_s
                try:
                    await self.run_once()
                except Exception as exc:
                    wait = max(wait, retry.failed(exc))  # back off: the next pass tries again
                else:
                    retry.succeeded()
                self.passes += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            for path in self.paths:
                path.link.close()

    async def run_once(self) -> None:
        """One pass: due forwards, due link tests, path states."""
        lease = CLAIM * self._longest_delivery_s() + 30.0
        items = await self._queue.claim(now=self._clock(), lease_s=lease, limit=CLAIM)
        for item in items:
            await self._deliver(item)
        for path in self.paths:
            if path.supervision.test_due(self._clock()):
                await self._link_test(path)
            await self._check(path)
        self._metrics.pending.set(await self._queue.pending())

    def _longest_delivery_s(self) -> float:
        return sum((TRIES_PER_PATH + 2) * p.ack_timeout_s for p in self.paths)

    async def readiness(self) -> list[str]:
        """Problems for /healthz: each path that is down."""
        return [
            f"dc09 forward: path {p.name} ({p.url}) is down: {p.last_problem or 'no answer'}, "
            f"silent for {p.supervision.silent_for(self._clock()):.0f} s"
            for p in self.paths
            if p.supervision.down
        ]

    # --- one forward ------------------------------------------------------------------------------

    async def _exchange(self, path: UpstreamPath, frame: bytes, kind: str) -> bytes | str:
        """The answer's bytes, or why there is none."""
        try:
            raw = await path.link.exchange(frame)
        except TimeoutError:
            self._metrics.frames.labels(path.name, kind, "timeout").inc()
            path.last_problem = f"no answer within {path.ack_timeout_s:g} s"
            return path.last_problem
        except (ConnectionError, OSError) as exc:
            self._metrics.frames.labels(path.name, kind, "refused").inc()
            path.last_problem = str(exc) or type(exc).__name__
            return path.last_problem
        return raw

    async def _deliver(self, item: ForwardItem) -> None:
        event_type = EventType(item.event_type)
        message = Message(
            item.sequence, event_type, item.kind is ForwardKind.RESTORE, item.device_id, item.account
        )
        delivery = Delivery(message, [p.settings for p in self.paths], self._offsets, tries=TRIES_PER_PATH)
        entries: list[TimelineEntry] = []
        try:
            while (send := delivery.next_send(self._now())) is not None:
                path = self.paths[send.path]
                self._note(delivery, item, entries)
                answer = await self._exchange(path, send.frame, "message")
                if isinstance(answer, str):
                    delivery.on_silence(answer)
                else:
                    read = delivery.on_answer(answer, self._now())
                    self._metrics.frames.labels(path.name, "message", read.reply.value).inc()
                    if read.reply is not Reply.UNREADABLE:
                        await self._answered(path)
                self._note(delivery, item, entries)
        except ValueError as exc:  # the queued row cannot make a frame (an account edited by hand...)
            log.error("DC-09 forward %d of alert %d cannot be sent: %s", item.id, item.alert_id, exc)
            entries.append(
                (self._clock(), AuditAction.FORWARD_FAILED, {"kind": item.kind.value, "error": str(exc)})
            )
            await self._queue.finish(item, "error", entries, self._clock())
            return
        if delivery.result is not None:
            await self._queue.finish(item, delivery.result.value, self._kept(entries, item), self._clock())
            return
        at = self._clock() + retry_delay(item.attempts)
        problems = "; ".join(f"{p.name}: {p.last_problem or 'no answer'}" for p in self.paths)
        log.warning("DC-09 forward of alert %d not answered by any path (%s); retry", item.alert_id, problems)
        await self._queue.retry(item, problems, self._kept(entries, item), at=at)

    def _note(self, delivery: Delivery, item: ForwardItem, entries: list[TimelineEntry]) -> None:
        """Turn the delivery's new steps into timeline entries, stamped now."""
        now = self._clock()
        for step in delivery.steps[len(entries) :]:
            detail: dict[str, Any] = {
                "kind": item.kind.value,
                "path": self.paths[step.path].name,
                **step.detail,
            }
            if step.kind is StepKind.SWITCHED:
                detail["from"] = self.paths[int(step.detail["from"])].name
            if step.kind is StepKind.SENT:
                detail["url"] = self.paths[step.path].url
            entries.append((now, _ACTIONS[step.kind], detail))

    @staticmethod
    def _kept(entries: list[TimelineEntry], item: ForwardItem) -> list[TimelineEntry]:
        if item.attempts <= FULL_TIMELINE_ATTEMPTS:
            return entries
        answers = {AuditAction.FORWARD_ACKED, AuditAction.FORWARD_NAK, AuditAction.FORWARD_DUH}
        if item.attempts % QUIET_EVERY == 0:
            answers.add(AuditAction.FORWARD_FAILED)
        return [e for e in entries if e[1] in answers]

    # --- link tests and path states ---------------------------------------------------------------

    async def _link_test(self, path: UpstreamPath) -> None:
        index = self.paths.index(path)
        sequence = path.next_link_sequence()
        path.supervision.tested(self._clock())
        frame = link_test_frame(sequence, path.settings, self._now() + self._offsets[index])
        answer = await self._exchange(path, frame, "link_test")
        if isinstance(answer, str):
            return
        read = read_answer(answer, sequence=sequence, path=path.settings, now=self._now())
        self._metrics.frames.labels(path.name, "link_test", read.reply.value).inc()
        if read.reply is Reply.NAK and read.offset is not None:
            self._offsets[index] = read.offset
        if read.reply is Reply.UNREADABLE:
            path.last_problem = f"unreadable answer: {read.detail}"
            return
        await self._answered(path)

    async def _answered(self, path: UpstreamPath) -> None:
        came_back = path.supervision.answered(self._clock())
        if not came_back and path.alert_checked:
            return
        path.last_problem = ""
        self._metrics.path_up.labels(path.name).set(1)
        if came_back:
            log.info("DC-09 forward path %s (%s) answers again", path.name, path.url)
        try:
            await self._path_alert_resolve(path)  # also one an earlier run left open
            path.alert_checked = True
        except Exception as exc:  # the next answer tries again
            path.supervision.down = came_back
            log.warning("DC-09 forward path %s is up, its alert not resolved yet: %s", path.name, exc)

    async def _check(self, path: UpstreamPath) -> None:
        now = self._clock()
        if not path.supervision.check(now):
            return
        self._metrics.path_up.labels(path.name).set(0)
        silent = path.supervision.silent_for(now)
        log.warning("DC-09 forward path %s (%s) is down: silent for %.0f s", path.name, path.url, silent)
        event = DeviceEvent(
            device_id=path_device_id(path.name),
            event_id=f"{path_device_id(path.name)}-down-{int(now)}",
            type=PATH_DOWN_TYPE,
            received_at=datetime.fromtimestamp(now, UTC),
            data={
                "dc09_forward": {
                    "path": path.name,
                    "url": path.url,
                    "silent_s": round(silent),
                    "link_test_s": path.supervision.interval_s,
                    "problem": path.last_problem or "no answer",
                }
            },
            source="system",
        )
        try:
            result = await self._intake.submit(event)
        except StoreUnavailable as exc:
            result = None
            log.warning("DC-09 forward path %s down, alert not stored yet: %s", path.name, exc)
        if result is None or result.result == "rejected":
            path.supervision.down = False  # not raised: the next pass raises it

    async def _path_alert_resolve(self, path: UpstreamPath) -> None:
        now = self._clock()
        key = alert_key(path_device_id(path.name), None, PATH_DOWN_TYPE, {})

        async def work(tx: Tx, post: PostCommit) -> None:
            alert = await self._store.alerts.open_alert(tx, key)
            if alert is not None:
                await self._store.alerts.system_resolve(
                    tx, post, alert, Outcome.CLEARED_BY_DEVICE, f"path {path.name} answers again", now
                )

        await self._store.transaction(work)
