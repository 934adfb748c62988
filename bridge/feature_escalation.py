"""Escalation, Twilio and service levels wired into the bridge.

``start(host, stack)``: snapshot policies at raise (a store raise hook), run the escalation loop
(due steps, responder call-outs, SMS and calls through :class:`~alarm_centre.notify.Notifier`), serve
the Twilio webhooks ``/twilio/sms``, ``/twilio/voice``, ``/twilio/status`` (404 while twilio is
disabled), ``/api/v1/service-levels`` (JSON, ``.csv``), ``/api/v1/escalation/policies`` and, when the
console is present, the supervisors' page ``/console/service-levels``. Metrics go on the bridge's registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram
from twilio.request_validator import RequestValidator

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.model import AlertChange, Role, User
from alarm_centre.escalation import (
    POLICY_SCHEMA,
    Escalation,
    EscalationSettings,
    Notification,
    PolicyStep,
    parse_steps,
)
from alarm_centre.host import HookOrder
from alarm_centre.http.api import USER_KEY, require
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.http.inputs import read_json
from alarm_centre.http.openapi import Body, operation, query
from alarm_centre.ids import row_id
from alarm_centre.notify import DeliveryFailed, Notifier
from alarm_centre.service_levels import (
    THRESHOLDS,
    ServiceLevelReport,
    parse_day,
    service_levels,
    window_tallies,
)
from alarm_centre.twilio_webhooks import (
    StoredReplayGuard,
    parse_gather,
    parse_inbound_sms,
    parse_status,
    read_verified_webhook,
    sms_reply_twiml,
    twiml_response,
    voice_say_twiml,
)
from devices.numbers import whole_number
from devices.vocabulary import PRIORITIES

if TYPE_CHECKING:
    from bridge.config import EscalationConfig, TwilioConfig
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)

SERVICE_LEVEL_RIGHT = "service_levels:read"
POLICY_WRITE_RIGHT = "escalation:write"  # admins always may; grant it to other roles in ROLE_RIGHTS
METRICS_EVERY_S = 10.0
DRAIN_S = 10.0

SMS_ANSWERS: dict[str, str | None] = {
    "accepted": "Thank you, you have accepted. The control centre has been told.",
    "declined": "Thank you. The control centre will contact someone else.",
    "unreadable": "Sorry, we did not understand. Reply YES to accept or NO to decline.",
    "late": "Thank you. Someone else has already accepted this call-out.",
    "supervisor": "Noted on the alert's timeline.",
    "ignored": None,
}
#: What a call hears after pressing a key, by what the key press did. A call the bridge does not know
#: (or whose alert is gone) hears a neutral goodbye: nothing was accepted, so nothing may say it was.
VOICE_ANSWERS: dict[str, str] = {
    "accepted": "Thank you. You have accepted this alert and the control centre has been told.",
    "declined": "Thank you. The control centre will contact someone else.",
    "unreadable": "Sorry, that key was not recognised. The control centre will contact you again.",
    "late": "Thank you. Someone else has already accepted this call-out.",
    "supervisor": "Thank you. Your answer is noted on the alert.",
    "ignored": "Thank you. Goodbye.",
}


def config_policies(cfg: EscalationConfig) -> dict[int, list[PolicyStep]]:
    return {
        priority: [PolicyStep(s.after_s, s.action, tuple(s.to)) for s in steps]
        for priority, steps in cfg.policies.items()
    }


class EscalationMetrics:
    """Service levels and escalation traffic on the bridge's registry."""

    def __init__(self, registry: Any) -> None:
        self.ack_seconds = Histogram(
            "telecare_acknowledge_seconds",
            "From an alert being raised to its acknowledgement (test alerts left out)",
            ["priority"],
            registry=registry,
            buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800),
        )
        self.share = Gauge(
            "telecare_service_level_ratio",
            "Share of alerts raised in the last 24 h acknowledged within the threshold (met / (met + late))",
            ["priority", "threshold_s"],
            registry=registry,
        )
        self.counted = Gauge(
            "telecare_service_level_alerts",
            "Alerts raised in the last 24 h (tests left out)",
            ["priority"],
            registry=registry,
        )
        self.notifications = Counter(
            "telecare_notifications",
            "SMS and calls attempted, by result",
            ["channel", "purpose", "result"],
            registry=registry,
        )
        self.pending = Gauge(
            "telecare_escalation_pending",
            "Pending escalation steps and notifications",
            ["kind"],
            registry=registry,
        )
        self.webhooks = Counter(
            "telecare_twilio_webhooks",
            "Twilio webhooks by route and result",
            ["route", "result"],
            registry=registry,
        )


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
        """Until cancelled: a sweep for call-outs a restart missed, then tick on wake-ups and due times."""
        with contextlib.suppress(Exception):
            await self.escalation.start_callouts(None)
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("escalation tick failed; retrying")
            await self._sleep()

    async def _sleep(self) -> None:
        delay = self._poll_s
        with contextlib.suppress(Exception):
            due = await self.escalation.next_due()
            if due is not None:
                delay = min(delay, max(0.0, due - self.escalation.clock()) + 0.01)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        self._wake.clear()

    async def tick(self) -> None:
        """One pass: stop, call out, measure, perform due steps, send due notifications."""
        stop, self._stop_ids = self._stop_ids, set()
        resolved, self._resolved_ids = self._resolved_ids, set()
        acked, self._acked_ids = self._acked_ids, set()
        if stop:
            await self.escalation.stop_for(stop)
        if resolved:
            await self.escalation.start_callouts(resolved)
        if acked:
            await self._observe_acks(acked)
        while await self.escalation.run_due_steps() >= 100:
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

    async def _observe_acks(self, ids: set[str]) -> None:
        marks = ", ".join("?" for _ in ids)
        async with self.escalation.store.read() as tx:
            rows = await tx.fetchall(
                f"SELECT priority, raised_at, acknowledged_at, test FROM alerts WHERE id IN ({marks})",
                *[k for k in map(row_id, ids) if k is not None],
            )
        for row in rows:
            if not row["test"] and row["acknowledged_at"] is not None:
                self.metrics.ack_seconds.labels(str(row["priority"])).observe(
                    max(0.0, float(row["acknowledged_at"]) - float(row["raised_at"]))
                )

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
                    with contextlib.suppress(Exception):
                        await self.escalation.release(left)
                return
            try:
                await self.deliver(note)
            except Exception:
                log.exception("notification %s could not be recorded", note.id)

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
            if note.channel == "sms":
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


_DAY = {"type": "string", "format": "date"}
_REPORT_QUERY = (
    query("from", _DAY, "first day (default: six days before 'to')"),
    query("to", _DAY, "last day (default: today)"),
    query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}),
)
_FORM = ("application/x-www-form-urlencoded",)
_TWILIO_SIGNED = "Twilio's X-Twilio-Signature header (HMAC-SHA1 with the account's auth token)"
_TWILIO_ERRORS = {
    400: "a field Twilio always sends is missing or malformed",
    403: "no valid signature, or a replay",
    404: "Twilio is not enabled on this bridge",
}


def _form(*fields: str) -> Body:
    """A Twilio webhook's form fields (all text)."""
    return Body({"type": "object", "properties": {f: {"type": "string"} for f in fields}}, media_types=_FORM)


ESCALATION_RUNNER: web.AppKey[EscalationRunner] = web.AppKey("escalation_runner", EscalationRunner)


# -- Twilio webhooks --------------------------------------------------------------------------------
class TwilioRoutes:
    def __init__(
        self,
        cfg: TwilioConfig,
        escalation: Escalation,
        metrics: EscalationMetrics,
        public_url: Callable[[], str],
    ) -> None:
        self.enabled = cfg.enabled
        self.language = cfg.language
        self.validator = RequestValidator(cfg.auth_token) if cfg.enabled else None
        self.guard = StoredReplayGuard(escalation.store, window=cfg.replay_window)
        self.escalation = escalation
        self.metrics = metrics
        self.public_url = public_url

    def _check(self) -> RequestValidator:
        if not self.enabled or self.validator is None:
            raise web.HTTPNotFound()
        return self.validator

    async def _guarded(
        self,
        route: str,
        request: web.Request,
        act: Callable[[], Awaitable[web.Response]],
        key: tuple[str, ...],
    ) -> web.Response:
        try:
            response = await act()
        except BaseException:
            try:
                await self.guard.release(key)
            except Exception as exc:  # the store is failing too: Twilio's retry is refused as a replay
                log.warning("could not release twilio webhook %s for a retry: %s", key, exc)
            self.metrics.webhooks.labels(route, "error").inc()
            raise
        self.metrics.webhooks.labels(route, "ok").inc()
        return response

    async def _read(self, route: str, request: web.Request, parse: Callable[[Mapping[str, str]], Any]) -> Any:
        validator = self._check()
        try:
            return await read_verified_webhook(request, validator, self.public_url(), parse, self.guard)
        except web.HTTPException as exc:
            self.metrics.webhooks.labels(route, f"refused_{exc.status}").inc()
            log.warning("twilio webhook %s refused (%s): %s", route, exc.status, exc.text)
            raise

    @operation("Twilio: an SMS reply from a supervisor or responder (YES / NO)", right=None,
               body=_form("From", "To", "Body", "MessageSid", "AccountSid"),
               answer_types=("application/xml",), signed=_TWILIO_SIGNED, errors=_TWILIO_ERRORS)
    async def sms(self, request: web.Request) -> web.Response:
        value = await self._read("sms", request, parse_inbound_sms)

        async def act() -> web.Response:
            outcome = await self.escalation.on_reply(
                from_number=value.from_number, reply=value.reply.value, via="sms", ref=value.message_sid
            )
            return twiml_response(sms_reply_twiml(SMS_ANSWERS.get(outcome.recorded)))

        return await self._guarded("sms", request, act, value.replay_key)

    @operation("Twilio: keys pressed on a call-out (1 accept, 2 decline)", right=None,
               body=_form("CallSid", "Digits", "From", "To", "Direction", "AccountSid"),
               answer_types=("application/xml",), signed=_TWILIO_SIGNED, errors=_TWILIO_ERRORS)
    async def voice(self, request: web.Request) -> web.Response:
        value = await self._read("voice", request, parse_gather)

        async def act() -> web.Response:
            outcome = await self.escalation.on_digits(
                call_sid=value.call_sid, reply=value.reply.value, digits=value.digits
            )
            spoken = VOICE_ANSWERS.get(outcome.recorded, VOICE_ANSWERS["ignored"])
            return twiml_response(voice_say_twiml(spoken, language=self.language))

        return await self._guarded("voice", request, act, value.replay_key)

    @operation("Twilio: delivery status of an SMS or call", right=None,
               body=_form("MessageSid", "MessageStatus", "SmsStatus", "CallSid", "CallStatus", "ErrorCode",
                               "To", "AccountSid"),
               answer_types=("application/xml",), signed=_TWILIO_SIGNED, errors=_TWILIO_ERRORS)
    async def status(self, request: web.Request) -> web.Response:
        value = await self._read("status", request, parse_status)

        async def act() -> web.Response:
            await self.escalation.on_status(
                sid=value.sid,
                status=value.status,
                failed=value.failed,
                final=value.final,
                error_code=value.error_code,
            )
            return twiml_response("<Response/>")

        return await self._guarded("status", request, act, value.replay_key)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/twilio/sms", self.sms)
        app.router.add_post("/twilio/voice", self.voice)
        app.router.add_post("/twilio/status", self.status)


# -- service levels and policies --------------------------------------------------------------------
class ServiceLevelRoutes:
    def __init__(
        self, escalation: Escalation, tz: ZoneInfo, policies: Mapping[int, list[PolicyStep]]
    ) -> None:
        self.escalation = escalation
        self.tz = tz
        self.config_policies = policies

    async def report(self, request: web.Request) -> ServiceLevelReport:
        require(request, SERVICE_LEVEL_RIGHT)
        today = datetime.now(self.tz).date()
        end = parse_day(request.query.get("to"), today, "to")
        start = parse_day(request.query.get("from"), end - timedelta(days=6), "from")
        return await service_levels(self.escalation.store, start=start, end=end, tz=self.tz)

    @operation("Service levels: share of P1/P2 alerts acknowledged within 60 s and 180 s",
               right=SERVICE_LEVEL_RIGHT, query=_REPORT_QUERY, answer_types=("application/json", "text/csv"))
    async def json_report(self, request: web.Request) -> web.StreamResponse:
        report = await self.report(request)
        if request.query.get("format") == "csv":
            return self._csv(report)
        return json_response(report.to_json())

    @operation("Service levels as CSV", right=SERVICE_LEVEL_RIGHT, query=_REPORT_QUERY[:2],
               answer_types=("text/csv",))
    async def csv_report(self, request: web.Request) -> web.StreamResponse:
        return self._csv(await self.report(request))

    @staticmethod
    def _csv(report: ServiceLevelReport) -> web.Response:
        name = f"service-levels-{report.start.isoformat()}-{report.end.isoformat()}.csv"
        return web.Response(
            text=report.to_csv(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @operation("Escalation policies in force, by priority", right=SERVICE_LEVEL_RIGHT)
    async def get_policies(self, request: web.Request) -> web.Response:
        require(request, SERVICE_LEVEL_RIGHT)
        policies = await self.escalation.policies()
        return json_response({"policies": [policies[p] for p in sorted(policies)]})

    @staticmethod
    def _may_write(request: web.Request) -> User:
        user: User | None = request.get(USER_KEY)
        if user is not None and user.role is Role.ADMIN:
            return user
        return require(request, POLICY_WRITE_RIGHT)

    def _priority(self, request: web.Request) -> int:
        raw = request.match_info["priority"]
        priority = whole_number(raw, low=min(PRIORITIES), high=max(PRIORITIES))
        if priority is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "not found",
                                 "detail": f"no priority {raw[:40]!r}; alert priorities are 1, 2 and 3"}),
                content_type="application/json")
        return priority

    @operation("Replace one priority's escalation policy (admins, or roles granted escalation:write)",
               right=POLICY_WRITE_RIGHT, body=POLICY_SCHEMA)
    async def put_policy(self, request: web.Request) -> web.Response:
        user = self._may_write(request)
        priority = self._priority(request)
        body = await read_json(request)
        if set(body) != {"steps"}:
            return json_error(422, "invalid request", 'send {"steps": [{"after_s", "action", "to"}, ...]}')
        steps = parse_steps(body["steps"])
        await self.escalation.set_policy(priority, steps, actor=user.name)
        policies = await self.escalation.policies()
        return json_response(policies[priority])

    @operation("Go back to the configured policy for one priority", right=POLICY_WRITE_RIGHT)
    async def reset_policy(self, request: web.Request) -> web.Response:
        self._may_write(request)
        priority = self._priority(request)
        await self.escalation.forget_policy(priority)
        await self.escalation.sync_policies(self.config_policies)
        policies = await self.escalation.policies()
        return json_response(
            policies.get(priority, {"priority": priority, "steps": [], "source": "none"})
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/service-levels", self.json_report)
        app.router.add_get("/api/v1/service-levels.csv", self.csv_report)
        app.router.add_get("/api/v1/escalation/policies", self.get_policies)
        app.router.add_put("/api/v1/escalation/policies/{priority}", self.put_policy)
        app.router.add_delete("/api/v1/escalation/policies/{priority}", self.reset_policy)
        self._add_console_page(app)

    def _add_console_page(self, app: web.Application) -> None:
        try:
            from alarm_centre.console import ConsolePage, add_console_page
        except ImportError:
            return
        add_console_page(
            app,
            ConsolePage("/console/service-levels", "Service levels", SERVICE_LEVEL_RIGHT, 60),
            self.console_page,
        )

    async def console_page(self, request: web.Request) -> web.StreamResponse:
        """The supervisors' service-level page (signed-out visitors go to the sign-in page)."""
        from alarm_centre.console import page_response
        from alarm_centre.console.pages import require_page

        require_page(request, SERVICE_LEVEL_RIGHT)
        report = await self.report(request)
        return page_response(request, title="Service levels", body=render_report(report))


def render_report(report: ServiceLevelReport) -> Any:
    """The supervisors' page body: totals, days and operators as plain tables (every value escaped)."""
    from alarm_centre.console import Safe, escape

    EMPTY_ROW = '<tr><td colspan="7">No alerts</td></tr>'

    def pct(share: float | None) -> str:
        return "-" if share is None else f"{share * 100:.1f} %"

    def table(caption: str, first: str, rows: list[tuple[str, int, Any]]) -> str:
        head = "".join(
            f'<th scope="col">{escape(h)}</th>'
            for h in (first, "Priority", "Alerts", "Within 60 s", "Within 180 s", "Late (60 s)", "Pending")
        )
        body = []
        for label, priority, tally in rows:
            cells = [
                label,
                str(priority),
                str(tally.alerts),
                pct(tally.share(60)),
                pct(tally.share(180)),
                str(tally.missed[60]),
                str(tally.pending[60]),
            ]
            body.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
        return (
            f'<table class="service-levels"><caption>{escape(caption)}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body) or EMPTY_ROW}</tbody></table>"
        )

    period = f"{report.start.isoformat()} to {report.end.isoformat()} ({report.timezone})"
    parts = [
        f"<section><h1>Service levels</h1><p>Priority 1 and 2 alerts acknowledged within 60 s "
        f"(target 97.5 %) and 180 s (target 99 %), {escape(period)}; test alerts left out. "
        f'<a href="/api/v1/service-levels.csv?from={escape(report.start.isoformat())}'
        f'&amp;to={escape(report.end.isoformat())}">Download CSV</a></p>',
        table("Totals", "Period", [(period, p, t) for p, t in sorted(report.totals.items())]),
        table("Per day", "Day", [(d, p, t) for (d, p), t in sorted(report.by_day.items())]),
        table(
            "Per operator",
            "Operator",
            [(o or "(unanswered)", p, t) for (o, p), t in sorted(report.by_operator.items())],
        ),
        "</section>",
    ]
    return Safe("".join(parts))


# -- the feature ------------------------------------------------------------------------------------
async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Wire escalation, Twilio and service levels in through ``host`` (see the module docstring)."""
    cfg = host.config.escalation
    tw = host.config.twilio
    tz = ZoneInfo(cfg.timezone)

    def public_url() -> str:
        return tw.public_url or host.config.http.public_url or host.http_url

    settings = EscalationSettings(
        supervisor_numbers=tuple(tw.supervisor_numbers),
        twilio_enabled=tw.enabled,
        responder_wait_s=cfg.responder_wait_s,
        retry_s=tuple(cfg.retry_s),
        max_attempts=cfg.max_attempts,
        lease_s=cfg.lease_s,
        node=host.node,
    )
    escalation = Escalation(host.store, settings, clock=host.clock)
    metrics = EscalationMetrics(host.metrics_registry)
    policies = config_policies(cfg)
    ServiceLevelRoutes(escalation, tz, policies).add_routes(host.app)
    TwilioRoutes(tw, escalation, metrics, public_url).add_routes(host.app)
    if not cfg.enabled:
        return
    await escalation.sync_policies(policies)
    host.add_raise_hook(escalation.on_raise, HookOrder.ESCALATION)
    notifier: Notifier | None = None
    if tw.enabled:
        notifier = await stack.enter_async_context(
            Notifier(
                account_sid=tw.account_sid,
                auth_token=tw.auth_token,
                from_number=tw.from_number,
                api_base_url=tw.base_url,
                request_timeout=tw.request_timeout,
                max_attempts=tw.max_attempts,
                language=tw.language,
            )
        )
    runner = await stack.enter_async_context(
        EscalationRunner(escalation, notifier, metrics, public_url=public_url, poll_s=cfg.poll_s, tz=tz)
    )
    host.app[ESCALATION_RUNNER] = runner
    host.add_loop("escalation", runner.run)
