"""Telephony's console pages: call answer times (supervisors) and the monthly call audit (reviewers).

Both are plain server-rendered HTML in the console's layout (every value escaped); the audit page's
buttons and forms are driven by ``static/audit.js`` through the API, with the session's CSRF token. The
queue page also loads ``static/calls.js`` (the incoming-call banner, live call state, click to dial).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from alarm_centre.console import ConsolePage, Safe, add_console_page, escape, page_response, require_page
from alarm_centre.console.pages import QUEUE_SCRIPTS
from alarm_centre.escalation.service_levels import SERVICE_LEVEL_RIGHT, parse_day
from alarm_centre.telephony import service_levels
from alarm_centre.telephony.audit import CallAudit, parse_month
from alarm_centre.telephony.calls import Telephony
from alarm_centre.telephony.routes import REVIEW
from alarm_centre.telephony.states import Verdict

CALLS_SCRIPT = "/static/telephony/calls.js"
AUDIT_SCRIPT = "/static/telephony/audit.js"
VERDICT_WORDS = {
    Verdict.MEETS: "Meets the standard",
    Verdict.IMPROVE: "Needs improvement",
    Verdict.CONCERN: "Cause for concern",
}


class TelephonyPages:
    def __init__(self, telephony: Telephony, audit: CallAudit, tz: ZoneInfo) -> None:
        self.telephony = telephony
        self.audit = audit
        self.tz = tz

    def add(self, app: web.Application, *, calls_on_queue: bool) -> None:
        """The two pages; and, when calls are taken, the call script on the queue page."""
        add_console_page(
            app, ConsolePage("/console/calls", "Call answer times", SERVICE_LEVEL_RIGHT, 61), self.calls
        )
        add_console_page(app, ConsolePage("/console/call-audit", "Call audit", REVIEW, 62), self.audit_page)
        if calls_on_queue:
            app[QUEUE_SCRIPTS] = (*app.get(QUEUE_SCRIPTS, ()), CALLS_SCRIPT)

    async def calls(self, request: web.Request) -> web.StreamResponse:
        require_page(request, SERVICE_LEVEL_RIGHT)
        today = datetime.now(self.tz).date()
        end = parse_day(request.query.get("to"), today, "to")
        start = parse_day(request.query.get("from"), end - timedelta(days=6), "from")
        report = await service_levels.call_service_levels(
            self.telephony.store, start=start, end=end, tz=self.tz
        )
        body = service_levels.render(report, links=(("/console/call-audit", "Call audit"),))
        return page_response(request, title="Call answer times", body=body)

    async def audit_page(self, request: web.Request) -> web.StreamResponse:
        require_page(request, REVIEW)
        raw = request.query.get("month") or datetime.now(self.tz).strftime("%Y-%m")
        try:
            month = parse_month(raw)
        except ValueError:
            month = datetime.now(self.tz).strftime("%Y-%m")
        found = await self.audit.month(month)
        return page_response(
            request,
            title=f"Call audit {month}",
            body=render_audit(found.to_json(), found.handlers_without_calls),
            scripts=(AUDIT_SCRIPT,),
        )


def render_audit(data: dict[str, Any], undrawn: list[str]) -> Safe:
    """The audit page: the month picker, the draw, and per handler the drawn calls with their recording
    (played through the bridge) and a review form each."""
    month = str(data["month"])
    parts = [
        '<link rel="stylesheet" href="/static/telephony/calls.css">',
        '<section class="call-audit" aria-labelledby="audit-heading">',
        f'<h1 id="audit-heading">Call audit, {escape(month)}</h1>',
        '<div id="audit-status" class="status" role="status" aria-live="polite"></div>',
        '<form class="audit-month" method="get" action="/console/call-audit">',
        '<label for="audit-month">Month</label> ',
        f'<input id="audit-month" name="month" type="month" value="{escape(month)}" required> ',
        '<button type="submit">Show</button></form>',
        f"<p>{escape(data['drawn'])} calls drawn, {escape(data['reviewed'])} reviewed. Each handler gets at "
        "least two of the month's calls, one with the emergency services where they had one. ",
        f'<a href="/api/v1/call-audit.csv?month={escape(month)}">Export the month (CSV)</a></p>',
    ]
    if undrawn:
        draw = escape(month)
        button = f'<button type="button" id="audit-draw" data-month="{draw}">Draw calls to review</button>'
        parts.append(f"<p>Handlers with calls but none drawn yet: {escape(', '.join(undrawn))}. {button}</p>")
    for handler in data["handlers"]:
        name = str(handler["handler"])
        label = escape("Calls of " + name)
        parts.append(f'<section class="audit-handler" aria-label="{label}"><h2>{escape(name)}</h2>')
        parts.append('<ol class="audit-calls">')
        for call in handler["calls"]:
            parts.append(_review_item(call))
        parts.append("</ol></section>")
    if not data["handlers"] and not undrawn:
        parts.append("<p>No answered calls this month.</p>")
    parts.append("</section>")
    return Safe("".join(parts))


def _review_item(call: dict[str, Any]) -> str:
    review_id = escape(call["id"])
    heading = (
        f"Call {call['call_id']} on alert {call['alert_id']} ({call['direction']}), "
        f"{'emergency services, ' if call['emergency'] else ''}drawn: {str(call['reason']).replace('_', ' ')}"
    )
    audio = (
        "".join(
            f'<audio controls preload="none" src="/api/v1/recordings/{escape(rec)}/audio" '
            f'aria-label="{escape("Recording " + rec + " of call " + str(call["call_id"]))}"></audio>'
            for rec in call["recordings"]
        )
        or '<p class="muted">No recording (not recorded, or deleted after the retention period).</p>'
    )
    options = "".join(
        f'<option value="{escape(v.value)}"{" selected" if call["verdict"] == v.value else ""}>'
        f"{escape(words)}</option>"
        for v, words in VERDICT_WORDS.items()
    )
    done = (
        f'<p class="reviewed">Reviewed by {escape(call["reviewer"])} at '
        f'<time datetime="{escape(call["reviewed_at"])}" data-local>{escape(call["reviewed_at"])}</time></p>'
        if call["reviewed_at"]
        else ""
    )
    started = escape(call["started_at"])
    alert = escape(call["alert_id"])
    findings = escape(call["findings"] or "")
    return (
        f'<li class="audit-call" id="review-{review_id}"><h3>{escape(heading)}</h3>'
        f'<p>Started <time datetime="{started}" data-local>{started}</time>. '
        f'<a href="/console#alert-{alert}">Alert {alert}</a></p>{audio}'
        f'<form class="audit-review" data-review="{review_id}">'
        f'<label for="verdict-{review_id}">Verdict</label> '
        f'<select id="verdict-{review_id}" name="verdict" required>{options}</select>'
        f'<label for="findings-{review_id}">Findings</label>'
        f'<textarea id="findings-{review_id}" name="findings" maxlength="4000" rows="3">{findings}</textarea>'
        f'<button type="submit">Save review</button></form>{done}</li>'
    )
