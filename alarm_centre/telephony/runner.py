"""The telephony loop: stops offers that rang out, rings the overflow centre, offers waiting calls, and
performs at Twilio what the engine decided (place a leg, stop one ringing, hang one up), then deletes
recordings past retention and refreshes the metrics.

It listens to the store (after commit, on every node) for call entries on alerts' timelines and for
acknowledgements (a call may now go to the operator who holds its alert), and wakes on them and on the
next deadline. Every failure is logged with its traceback, counted by stage, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Self
from zoneinfo import ZoneInfo

from aiohttp import web

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.model import AlertChange
from alarm_centre.escalation.notify import DeliveryFailed
from alarm_centre.faults import ECHO_SUMMARY_EVERY_S, LOOP_RETRY_FIRST_S, LOOP_RETRY_MAX_S, Backoff, FaultLog
from alarm_centre.telephony import service_levels
from alarm_centre.telephony import store as sql
from alarm_centre.telephony.calls import PARTY_RING_S, LegWork, Telephony
from alarm_centre.telephony.dialler import HANG_UP, STOP_RINGING, Dialler
from alarm_centre.telephony.metrics import TelephonyMetrics
from alarm_centre.telephony.recordings import Recordings
from alarm_centre.telephony.states import CallState, LegRole, LegState
from alarm_centre.telephony.twiml import conference_options, party_twiml, staff_twiml, status_url

log = logging.getLogger(__name__)


def _current_exception() -> BaseException | str:
    """The exception being handled (``_failed`` is called from ``except`` blocks)."""
    exc = sys.exc_info()[1]
    return exc if exc is not None else "failed"


METRICS_EVERY_S = 10.0
DRAIN_S = 10.0
#: Shortest time between two passes: fifty calls at once change something every few milliseconds, and
#: one pass acts on everything due, so the loop gathers them rather than running once per webhook.
MIN_GAP_S = 0.05
#: Seconds before a REST call Twilio refused for a passing reason is tried again, by attempt.
RETRY_S = (2.0, 5.0, 15.0, 30.0)
MAX_ATTEMPTS = 5
WAKING = frozenset({AuditAction.ACKNOWLEDGED, AuditAction.REASSIGNED}) | {
    action for action in AuditAction if action.value.startswith("call_")
}


class TelephonyRunner:
    """The loop that carries out the centre's calls at Twilio; drains in-flight requests on exit."""

    def __init__(
        self,
        telephony: Telephony,
        recordings: Recordings,
        dialler: Dialler,
        metrics: TelephonyMetrics,
        *,
        public_url: Callable[[], str],
        tz: ZoneInfo,
        poll_s: float = 1.0,
    ) -> None:
        self.telephony = telephony
        self.recordings = recordings
        self.dialler = dialler
        self.metrics = metrics
        self._public_url = public_url
        self._tz = tz
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._backoff = Backoff(LOOP_RETRY_FIRST_S, LOOP_RETRY_MAX_S)
        self._faults: dict[str, FaultLog] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._metrics_at = 0.0
        self._observed: set[str] = set()
        self._answered_alerts: set[str] = set()
        #: Completed passes, so a test that moved the clock can wait for the next ones.
        self.passes = 0

    async def __aenter__(self) -> Self:
        self.telephony.store.add_listener(self.on_changes)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self.telephony.store.remove_listener(self.on_changes)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def on_changes(self, changes: Sequence[AlertChange]) -> None:
        """Store listener (after commit): wake for anything a call may depend on."""
        if any(change.action in WAKING for change in changes):
            self._wake.set()
        for change in changes:
            if change.action in (AuditAction.CALL_ANSWERED, AuditAction.CALL_PARTY_ANSWERED):
                self._answered_alerts.add(change.alert_id)

    def wake(self) -> None:
        self._wake.set()

    @property
    def working(self) -> int:
        """REST calls to Twilio in flight."""
        return len(self._tasks)

    async def run(self) -> None:
        """Until cancelled: tick on wake-ups and deadlines; nothing but cancellation stops it.

        A failed pass is logged as a fault (the traceback when it starts, a summary at most every
        10 s, a line when it ends) and waited out with a growing back-off, so a store outage neither
        spins the loop nor floods the log (issue 17)."""
        while True:
            try:
                await self.tick()
            except Exception as exc:
                self._failed("tick", "telephony pass failed", exc=exc)
                await self._pause(self._backoff.next_delay())
                continue
            self._fault("tick", "").recovered()
            await self._sleep()

    def _fault(self, stage: str, what: str) -> FaultLog:
        fault = self._faults.get(stage)
        if fault is None:
            fault = self._faults[stage] = FaultLog(
                log, what or f"telephony {stage}", traceback=True, every_s=ECHO_SUMMARY_EVERY_S
            )
        return fault

    def _failed(self, stage: str, message: str, *args: object, exc: BaseException | None = None) -> None:
        """Log a failure of ``stage`` as its fault (the traceback when it starts) and count it."""
        problem = exc if exc is not None else _current_exception()
        self._fault(stage, message % args if args else message).failed(problem)
        self.metrics.loop_errors.labels(stage).inc()

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if a change wakes the loop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    async def _sleep(self) -> None:
        await asyncio.sleep(MIN_GAP_S)
        delay = self._poll_s
        try:
            async with self.telephony.store.read() as tx:
                due = await sql.next_due(tx)
        except Exception as exc:
            self._failed("next_due", "could not read when telephony is next due; polling", exc=exc)
            delay = max(delay, self._backoff.next_delay())
        else:
            self._fault("next_due", "").recovered()
            self._backoff.reset()
            if due is not None:
                delay = min(delay, max(0.0, due - self.telephony.clock()) + 0.01)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        self._wake.clear()

    async def tick(self) -> None:
        """One pass: deadlines, waiting calls, legs to act on, recordings due, metrics."""
        await self.telephony.time_out_offers()
        await self.telephony.overflow_due()
        await self.telephony.route_waiting()
        if not self._closing:
            for work in await self.telephony.claim_leg_work():
                task = asyncio.create_task(self._perform(work), name=f"call-leg-{work.leg_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            for due in await self.recordings.claim_due():
                task = asyncio.create_task(
                    self._delete(due.recording_id, due.sid), name=f"recording-{due.sid}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await self._observe_answers()
        if time.monotonic() - self._metrics_at > METRICS_EVERY_S:
            self._metrics_at = time.monotonic()
            try:
                await self.refresh_metrics()
            except Exception:
                self._failed("metrics", "call metrics could not be refreshed")
        self.passes += 1

    async def _perform(self, work: LegWork) -> None:
        try:
            await self._act(work)
        except DeliveryFailed as exc:
            retry = exc.retryable and work.attempts < MAX_ATTEMPTS
            result = "retry" if retry else "failed"
            self.metrics.legs.labels(work.role.value, result).inc()
            log.warning("call leg %s (%s): %s", work.leg_id, work.state.value, exc)
            try:
                await self.telephony.leg_failed(
                    work.leg_id,
                    error=str(exc),
                    retry_in=RETRY_S[min(work.attempts, len(RETRY_S)) - 1] if retry else None,
                )
            except Exception:
                self._failed("leg_failed", "call leg %s failure could not be recorded", work.leg_id)
        except Exception:
            self._failed("leg", "call leg %s could not be carried out", work.leg_id)

    async def _act(self, work: LegWork) -> None:
        if work.state is LegState.QUEUED:
            sid = await self._place(work)
            self.metrics.legs.labels(work.role.value, "placed").inc()
            if await self.telephony.leg_placed(work.leg_id, sid) is LegState.CANCELLING:
                await self.dialler.stop_call(sid, status=STOP_RINGING)
                await self.telephony.leg_stopped(work.leg_id)
            return
        assert work.sid is not None
        status = STOP_RINGING if work.state is LegState.CANCELLING else HANG_UP
        await self.dialler.stop_call(work.sid, status=status)
        self.metrics.legs.labels(work.role.value, "stopped" if status == STOP_RINGING else "hung_up").inc()
        await self.telephony.leg_stopped(work.leg_id)

    async def _place(self, work: LegWork) -> str:
        settings = self.telephony.settings
        base = self._public_url()
        options = conference_options(settings, base, work.call_id)
        if work.role is LegRole.PARTY:
            twiml, ring = party_twiml(options, work.leg_id), PARTY_RING_S
        else:
            twiml, ring = staff_twiml(options, work.leg_id), int(settings.ring_s) + 10
        caller_id = settings.numbers[0] if settings.numbers else settings.from_number
        return await self.dialler.place_leg(
            to=work.address,
            from_=caller_id,
            twiml=twiml,
            status_callback=status_url(base, work.leg_id),
            timeout=ring,
        )

    async def _delete(self, recording_id: int, sid: str) -> None:
        try:
            await self.dialler.delete_recording(sid)
            await self.recordings.deleted(recording_id)
            self.metrics.recordings.labels("deleted").inc()
        except DeliveryFailed as exc:
            log.warning("recording %s could not be deleted yet: %s", sid, exc)
            self.metrics.loop_errors.labels("retention").inc()
        except Exception:
            self._failed("retention", "recording %s could not be deleted", sid)

    async def _observe_answers(self) -> None:
        """Answer times of calls answered since the last pass into the histogram (once each)."""
        alerts, self._answered_alerts = self._answered_alerts, set()
        if not alerts:
            return
        try:
            async with self.telephony.store.read() as tx:
                answered = [
                    c for a in sorted(alerts) if a.isdigit() for c in await sql.calls_of_alert(tx, int(a))
                ]
        except Exception:
            self._failed("observe", "could not read the calls to measure")
            return
        for call in answered:
            key = str(call["id"])
            if key in self._observed:
                continue
            if call["direction"] == "inbound" and call["answered_at"] is not None:
                self._observed.add(key)
                self.metrics.answer_seconds.labels("offered").observe(
                    float(call["answered_at"]) - float(call["started_at"])
                )
            if call["speech_at"] is not None and call["signal_at"] is not None:
                self._observed.add(key)
                self.metrics.answer_seconds.labels("speech").observe(
                    float(call["speech_at"]) - float(call["signal_at"])
                )
        if len(self._observed) > 10_000:
            self._observed = {str(c["id"]) for c in answered}

    async def refresh_metrics(self) -> None:
        now = self.telephony.clock()
        async with self.telephony.store.read() as tx:
            live = await sql.live_calls(tx)
        by_state: dict[str, int] = {}
        for call in live:
            by_state[str(call["state"])] = by_state.get(str(call["state"]), 0) + 1
        for state in CallState:
            if state is not CallState.ENDED:
                self.metrics.live.labels(state.value).set(by_state.get(state.value, 0))
        report = await service_levels.window(self.telephony.store, seconds=86400.0, now=now, tz=self._tz)
        for measure, data in report.measures.items():
            total = data.total
            self.metrics.counted.labels(measure, "all").set(total.count)
            self.metrics.counted.labels(measure, "abandoned").set(total.abandoned)
            for t in service_levels.THRESHOLDS:
                share = total.share(t)
                self.metrics.share.labels(measure, str(t)).set(1.0 if share is None else share)
            for name, targets in service_levels.VIEWS.items():
                shares = [total.share(t) for t in targets]
                ok = all(s is None or s >= target for s, target in zip(shares, targets.values(), strict=True))
                self.metrics.meets.labels(measure, name).set(1.0 if ok else 0.0)


#: The running loop, on the app: tests wait for its passes after moving the clock.
TELEPHONY_RUNNER: web.AppKey[TelephonyRunner] = web.AppKey("telephony_runner", TelephonyRunner)
