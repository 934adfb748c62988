"""The escalation loop: performs due steps, starts call-outs, sends SMS and calls, refreshes metrics.

:class:`EscalationRunner` listens to the store (after commit) for acknowledgements and resolutions,
ticks on those and on due times, and drains in-flight sends on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Self
from zoneinfo import ZoneInfo

from aiohttp import web

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.model import AlertChange
from alarm_centre.escalation.engine import STEPS_PER_PASS, Escalation, Notification
from alarm_centre.escalation.metrics import EscalationMetrics
from alarm_centre.escalation.notify import DeliveryFailed, Notifier
from alarm_centre.escalation.service_levels import THRESHOLDS, acknowledge_delays, window_tallies
from alarm_centre.escalation.states import Channel
from alarm_centre.faults import (
    ECHO_SUMMARY_EVERY_S,
    LOOP_RETRY_FIRST_S,
    LOOP_RETRY_MAX_S,
    Backoff,
    FaultLog,
)

log = logging.getLogger(__name__)

METRICS_EVERY_S = 10.0
DRAIN_S = 10.0
#: What each stage's fault says in the log (a stage is also the ``stage`` label of the error counter).
STAGES = {
    "callout_sweep": "escalation call-out sweep after a restart failed (ticking on)",
    "tick": "escalation tick failed",
    "next_due": "escalation could not read when steps are next due (polling)",
    "release": "escalation notification could not be released (its lease runs out)",
    "deliver": "escalation notification result could not be recorded",
}


class EscalationRunner:
    """The loop that performs due steps and sends notifications; drains in-flight sends on exit."""

    def __init__(
        self,
        escalation: Escalation,
        notifier: Notifier | None,
        metrics: EscalationMetrics,
        *,
        public_url: Callable[[], str],
        poll_s: float = 1.0,
        tz: ZoneInfo | None = None,
    ) -> None:
        self.escalation = escalation
        self.notifier = notifier
        self.metrics = metrics
        self._public_url = public_url
        self._poll_s = poll_s
        self._tz = tz or ZoneInfo("UTC")
        self._wake = asyncio.Event()
        self._stop_ids: set[str] = set()
        self._resolved_ids: set[str] = set()
        self._acked_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._metrics_at = 0.0
        #: Waits after a failed pass (backing off, so a store that reads but cannot write is not asked
        #: again every 10 ms), and the log of the stages' faults: one line when each starts.
        self._backoff = Backoff(LOOP_RETRY_FIRST_S, LOOP_RETRY_MAX_S)
        self._faults: dict[str, FaultLog] = {}
        #: Completed passes of the loop, so a test that moved the clock can wait for the next ones.
        self.passes = 0

    async def __aenter__(self) -> Self:
        self.escalation.store.add_listener(self.on_changes)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self.escalation.store.remove_listener(self.on_changes)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def on_changes(self, changes: Sequence[AlertChange]) -> None:
        """Store listener (after commit): note what to stop, call out or measure, and wake the loop."""
        wake = False
        for change in changes:
            if change.action is AuditAction.ACKNOWLEDGED:
                self._stop_ids.add(change.alert_id)
                self._acked_ids.add(change.alert_id)
                wake = True
            elif change.action is AuditAction.RESOLVED:
                self._stop_ids.add(change.alert_id)
                self._resolved_ids.add(change.alert_id)
                wake = True
            elif change.action is AuditAction.RAISED:
                wake = True
        if wake:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def delivering(self) -> int:
        """Notifications being sent right now."""
        return len(self._tasks)

    async def run(self) -> None:
        """Until cancelled: a sweep for call-outs a restart missed, then tick on wake-ups and due times.

        Nothing stops the loop but cancellation: every failure is logged (with its traceback when a
        fault starts, then in a summary at most every 10 s, and when it ends), counted in
        ``telecare_escalation_loop_errors{stage}``, and the loop goes on -- after a wait that grows
        while the failures last (a due step the store cannot record would otherwise be retried at once).
        """
        try:
            await self.escalation.start_callouts(None)
        except Exception as exc:
            self._failed("callout_sweep", exc)
        while True:
            try:
                await self.tick()
            except Exception as exc:
                self._failed("tick", exc)
                await self._pause(self._backoff.next_delay())
                continue
            self._fault("tick").recovered()
            await self._sleep()

    def _fault(self, stage: str) -> FaultLog:
        fault = self._faults.get(stage)
        if fault is None:
            fault = self._faults[stage] = FaultLog(
                log, STAGES[stage], traceback=True, every_s=ECHO_SUMMARY_EVERY_S
            )
        return fault

    def _failed(self, stage: str, exc: BaseException, about: str = "") -> None:
        """Log a failure of ``stage`` as its fault (the traceback when it starts) and count it."""
        fault = self._fault(stage)
        if fault.failed(exc) and about:
            log.error("%s: it was %s", STAGES[stage], about)
        self.metrics.loop_errors.labels(stage).inc()

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if an acknowledgement or resolution wakes the loop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    async def _sleep(self) -> None:
        delay = self._poll_s
        try:
            due = await self.escalation.next_due()
        except Exception as exc:
            self._failed("next_due", exc)
            delay = max(delay, self._backoff.next_delay())
        else:
            self._fault("next_due").recovered()
            self._backoff.reset()
            if due is not None:
                delay = min(delay, max(0.0, due - self.escalation.clock()) + 0.01)
        if delay > 0:
            await self._pause(delay)
        else:
            self._wake.clear()

    async def tick(self) -> None:
        """One pass: stop, call out, measure, perform due steps, send due notifications."""
        stop, self._stop_ids = self._stop_ids, set()
        resolved, self._resolved_ids = self._resolved_ids, set()
        acked, self._acked_ids = self._acked_ids, set()
        if stop:
            await self.escalation.stop_for(stop)
            if self.notifier is not None:
                await self._stop_ringing(stop)
        if resolved:
            await self.escalation.start_callouts(resolved)
        if acked:
            await self._observe_acks(acked)
        while await self.escalation.run_due_steps() >= STEPS_PER_PASS:
            pass
        if self.notifier is not None and not self._closing:
            notes = await self.escalation.claim_notifications()
            groups: dict[str, list[Notification]] = {}
            for note in notes:
                groups.setdefault(note.alert_id, []).append(note)
            for group in groups.values():
                task = asyncio.create_task(self._deliver_all(group), name=f"notify-{group[0].alert_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if time.monotonic() - self._metrics_at > METRICS_EVERY_S:
            self._metrics_at = time.monotonic()
            await self.refresh_metrics()
        self.passes += 1

    async def _stop_ringing(self, alert_ids: set[str]) -> None:
        """Calls placed for alerts now acknowledged or resolved, still ringing: stopped at Twilio."""
        assert self.notifier is not None
        for sid in await self.escalation.ringing_calls(alert_ids):
            try:
                await self.notifier.stop_call(sid)
            except DeliveryFailed as exc:
                log.warning("call %s could not be stopped ringing: %s", sid, exc)
                self.metrics.loop_errors.labels("stop_ringing").inc()
            else:
                self.metrics.notifications.labels("call", "any", "stopped_ringing").inc()

    async def _observe_acks(self, ids: set[str]) -> None:
        for priority, seconds in await acknowledge_delays(self.escalation.store, ids):
            self.metrics.ack_seconds.labels(str(priority)).observe(seconds)

    async def refresh_metrics(self) -> None:
        tallies = await window_tallies(self.escalation.store, seconds=86400.0)
        for priority, tally in tallies.items():
            self.metrics.counted.labels(str(priority)).set(tally.alerts)
            for t in THRESHOLDS:
                share = tally.share(t)
                self.metrics.share.labels(str(priority), str(t)).set(1.0 if share is None else share)
        counts = await self.escalation.pending_counts()
        for kind, n in counts.items():
            self.metrics.pending.labels(kind).set(n)

    async def _deliver_all(self, group: list[Notification]) -> None:
        """One alert's notifications in order (the SMS before the call)."""
        for n, note in enumerate(group):
            if self._closing and n > 0:
                for left in group[n:]:
                    try:
                        await self.escalation.release(left)
                    except Exception as exc:  # its lease runs out and another claim retries it
                        self._failed("release", exc, f"notification {left.id}")
                return
            try:
                await self.deliver(note)
            except Exception as exc:
                self._failed("deliver", exc, f"notification {note.id}")
            else:
                self._fault("deliver").recovered()

    async def deliver(self, note: Notification) -> None:
        """Send one SMS or call and record the result on the alert's timeline."""
        assert self.notifier is not None
        void = await self.escalation.void_reason(note)
        if void is not None:  # acknowledged or resolved after the claim: nobody is woken for nothing
            self.metrics.notifications.labels(note.channel, note.purpose, "cancelled").inc()
            log.info("notification %s not sent: %s", note.id, void)
            return
        base = self._public_url().rstrip("/")
        try:
            if note.channel is Channel.SMS:
                sent = await self.notifier.send_sms(
                    to=note.to, body=note.body, status_callback=base + "/twilio/status"
                )
            else:
                sent = await self.notifier.place_call(
                    to=note.to,
                    text=note.body,
                    gather_action=base + "/twilio/voice",
                    status_callback=base + "/twilio/status",
                )
        except DeliveryFailed as exc:
            self.metrics.notifications.labels(note.channel, note.purpose, "failed").inc()
            await self.escalation.notification_failed(
                note, error=str(exc), retryable=exc.retryable, code=exc.code
            )
            return
        self.metrics.notifications.labels(note.channel, note.purpose, "sent").inc()
        await self.escalation.notification_sent(note, sid=sent.sid, status=sent.status)


#: The running loop, on the app: tests wait for its passes after moving the clock.
ESCALATION_RUNNER: web.AppKey[EscalationRunner] = web.AppKey("escalation_runner", EscalationRunner)
