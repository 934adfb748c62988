"""Service levels: the share of priority-1 and priority-2 alerts acknowledged within 60 s and 180 s.

The standard operators are held to is 97.5 % within 60 s and 99 % within 180 s. For each threshold an
alert is:
- **met** when it was acknowledged within the threshold;
- **missed** when it was acknowledged later, or was still unacknowledged when the threshold passed;
- **pending** while it is unacknowledged and the threshold has not passed yet (left out of the share);
- **excluded** when the system resolved it before anyone acknowledged it and before the threshold (the
  unit cleared it: nobody needed to answer). Test alerts are always left out.

Days are calendar days in the configured time zone. Per operator means the operator who acknowledged.

:class:`ServiceLevelRoutes` serves the report (JSON, CSV, the supervisors' console page, whose body
:func:`render_report` builds) and the escalation policies in force.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web

from alarm_centre.alerts.model import Role, User, iso
from alarm_centre.escalation import store as sql
from alarm_centre.escalation.engine import Escalation
from alarm_centre.escalation.policy import POLICY_SCHEMA, PolicyStep, parse_steps
from alarm_centre.http.api import USER_KEY, require
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.http.inputs import read_json
from alarm_centre.http.openapi import operation, query
from alarm_centre.ids import row_id
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import InvalidRequest, Row
from devices.csv_yaml import safe_cell
from devices.numbers import whole_number
from devices.vocabulary import PRIORITIES as ALERT_PRIORITIES

THRESHOLDS: tuple[int, ...] = (60, 180)
TARGETS: dict[int, float] = {60: 0.975, 180: 0.99}
PRIORITIES: tuple[int, ...] = (1, 2)
MAX_DAYS = 366
UNANSWERED = ""
SERVICE_LEVEL_RIGHT = "service_levels:read"
POLICY_WRITE_RIGHT = "escalation:write"  # admins always may; grant it to other roles in ROLE_RIGHTS

Verdict = Literal["met", "missed", "pending", "excluded"]


def classify(
    raised_at: float, acknowledged_at: float | None, resolved_at: float | None, now: float, threshold: float
) -> Verdict:
    """How one alert stands against one threshold (see the module docstring)."""
    if acknowledged_at is not None:
        return "met" if acknowledged_at - raised_at <= threshold else "missed"
    if resolved_at is not None and resolved_at - raised_at <= threshold:
        return "excluded"
    return "missed" if now - raised_at > threshold else "pending"


@dataclass(slots=True)
class Tally:
    """Counts for one group of alerts."""

    alerts: int = 0
    met: dict[int, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))
    missed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))
    pending: dict[int, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))

    def add(self, row: Row, now: float) -> None:
        self.alerts += 1
        for t in THRESHOLDS:
            verdict = classify(float(row["raised_at"]), row["acknowledged_at"], row["resolved_at"], now, t)
            if verdict == "met":
                self.met[t] += 1
            elif verdict == "missed":
                self.missed[t] += 1
            elif verdict == "pending":
                self.pending[t] += 1

    def share(self, threshold: int) -> float | None:
        """Met over met + missed; None when nothing counts yet."""
        counted = self.met[threshold] + self.missed[threshold]
        return None if counted == 0 else self.met[threshold] / counted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alerts": self.alerts}
        for t in THRESHOLDS:
            share = self.share(t)
            out[f"within_{t}s"] = self.met[t]
            out[f"late_{t}s"] = self.missed[t]
            out[f"pending_{t}s"] = self.pending[t]
            out[f"share_{t}s"] = None if share is None else round(share, 4)
            out[f"meets_target_{t}s"] = None if share is None else share >= TARGETS[t]
        return out


@dataclass(frozen=True, slots=True)
class ServiceLevelReport:
    start: date
    end: date
    timezone: str
    generated_at: float
    by_day: dict[tuple[str, int], Tally]
    by_operator: dict[tuple[str, int], Tally]
    totals: dict[int, Tally]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "timezone": self.timezone,
            "generated_at": iso(self.generated_at),
            "thresholds_s": list(THRESHOLDS),
            "targets": {f"{t}s": TARGETS[t] for t in THRESHOLDS},
            "priorities": list(PRIORITIES),
            "days": [{"day": d, "priority": p, **t.to_json()} for (d, p), t in sorted(self.by_day.items())],
            "operators": [
                {"operator": o or None, "priority": p, **t.to_json()}
                for (o, p), t in sorted(self.by_operator.items())
            ],
            "totals": [{"priority": p, **t.to_json()} for p, t in sorted(self.totals.items())],
        }

    def to_csv(self) -> str:
        """One row per (scope, day or operator, priority); shares as fractions, blank when nothing counts."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        head = ["scope", "day", "operator", "priority", "alerts"]
        for t in THRESHOLDS:
            head += [f"within_{t}s", f"late_{t}s", f"pending_{t}s", f"share_{t}s"]
        writer.writerow([safe_cell(c) for c in head])

        def line(scope: str, day: str, operator: str, priority: int, tally: Tally) -> list[str]:
            cells = [scope, day, operator, str(priority), str(tally.alerts)]
            for t in THRESHOLDS:
                share = tally.share(t)
                cells += [
                    str(tally.met[t]),
                    str(tally.missed[t]),
                    str(tally.pending[t]),
                    "" if share is None else f"{share:.4f}",
                ]
            return [safe_cell(c) for c in cells]

        for (d, p), tally in sorted(self.by_day.items()):
            writer.writerow(line("day", d, "", p, tally))
        for (o, p), tally in sorted(self.by_operator.items()):
            writer.writerow(line("operator", "", o or "(unanswered)", p, tally))
        for p, tally in sorted(self.totals.items()):
            writer.writerow(line("total", "", "", p, tally))
        return buf.getvalue()


def build_report(
    rows: Iterable[Row], *, start: date, end: date, tz: ZoneInfo, now: float
) -> ServiceLevelReport:
    """Group alert rows (raised_at, acknowledged_at, acknowledged_by, resolved_at, priority) into tallies."""
    by_day: dict[tuple[str, int], Tally] = {}
    by_operator: dict[tuple[str, int], Tally] = {}
    totals: dict[int, Tally] = {p: Tally() for p in PRIORITIES}
    for row in rows:
        priority = int(row["priority"])
        day = datetime.fromtimestamp(float(row["raised_at"]), tz).date().isoformat()
        operator = str(row["acknowledged_by"] or UNANSWERED)
        by_day.setdefault((day, priority), Tally()).add(row, now)
        by_operator.setdefault((operator, priority), Tally()).add(row, now)
        totals.setdefault(priority, Tally()).add(row, now)
    return ServiceLevelReport(start, end, str(tz), now, by_day, by_operator, totals)


def day_bounds(start: date, end: date, tz: ZoneInfo) -> tuple[float, float]:
    """Epoch seconds from the start of ``start`` to the end of ``end`` in ``tz``."""
    lo = datetime.combine(start, datetime.min.time(), tz).timestamp()
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), tz).timestamp()
    return lo, hi


async def service_levels(
    store: AlertStore,
    *,
    start: date,
    end: date,
    tz: ZoneInfo,
    priorities: Sequence[int] = PRIORITIES,
    now: float | None = None,
) -> ServiceLevelReport:
    """The report for alerts raised from ``start`` to ``end`` (inclusive days in ``tz``)."""
    if end < start:
        raise InvalidRequest("'to' must not be before 'from'")
    if (end - start).days >= MAX_DAYS:
        raise InvalidRequest(f"at most {MAX_DAYS} days at a time")
    lo, hi = day_bounds(start, end, tz)
    rows = await _rows(store, lo, hi, priorities)
    return build_report(rows, start=start, end=end, tz=tz, now=time.time() if now is None else now)


async def window_tallies(
    store: AlertStore, *, seconds: float, now: float | None = None, priorities: Sequence[int] = PRIORITIES
) -> dict[int, Tally]:
    """Tallies per priority over the last ``seconds`` (for the /metrics gauges)."""
    at = time.time() if now is None else now
    tallies = {p: Tally() for p in priorities}
    for row in await _rows(store, at - seconds, at + 1, priorities):
        tallies.setdefault(int(row["priority"]), Tally()).add(row, at)
    return tallies


async def _rows(store: AlertStore, lo: float, hi: float, priorities: Sequence[int]) -> list[Row]:
    async with store.read() as tx:
        return await sql.raised_between(tx, lo, hi, priorities)


async def acknowledge_delays(store: AlertStore, alert_ids: Iterable[str]) -> list[tuple[int, float]]:
    """(priority, seconds from raised to acknowledged) of these alerts, tests and unacknowledged left out."""
    ids = [k for k in map(row_id, alert_ids) if k is not None]
    if not ids:
        return []
    async with store.read() as tx:
        rows = await sql.acknowledgements(tx, ids)
    return [
        (int(row["priority"]), max(0.0, float(row["acknowledged_at"]) - float(row["raised_at"])))
        for row in rows
        if not row["test"] and row["acknowledged_at"] is not None
    ]


def parse_day(text: str | None, default: date, name: str) -> date:
    if not text:
        return default
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    # Years the arithmetic of a report (a week before, a day after, in any zone) stays inside.
    if day is None or not 1970 <= day.year <= 2999:
        raise InvalidRequest(f"{name} must be a date like 2026-01-31, from 1970 to 2999")
    return day


_DAY = {"type": "string", "format": "date"}
_REPORT_QUERY = (
    query("from", _DAY, "first day (default: six days before 'to')"),
    query("to", _DAY, "last day (default: today)"),
    query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}),
)


# -- the HTTP edge: reports, policies, the supervisors' page --------------------------------------
class ServiceLevelRoutes:
    """``/api/v1/service-levels`` (JSON, CSV), ``/api/v1/escalation/policies`` and the console page."""

    def __init__(
        self, escalation: Escalation, tz: ZoneInfo, policies: Mapping[int, Sequence[PolicyStep]]
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

    @operation(
        "Service levels: share of P1/P2 alerts acknowledged within 60 s and 180 s",
        right=SERVICE_LEVEL_RIGHT,
        query=_REPORT_QUERY,
        answer_types=("application/json", "text/csv"),
    )
    async def json_report(self, request: web.Request) -> web.StreamResponse:
        report = await self.report(request)
        if request.query.get("format") == "csv":
            return self._csv(report)
        return json_response(report.to_json())

    @operation(
        "Service levels as CSV",
        right=SERVICE_LEVEL_RIGHT,
        query=_REPORT_QUERY[:2],
        answer_types=("text/csv",),
    )
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
        priority = whole_number(raw, low=min(ALERT_PRIORITIES), high=max(ALERT_PRIORITIES))
        if priority is None:
            raise web.HTTPNotFound(
                text=json.dumps(
                    {
                        "error": "not found",
                        "detail": f"no priority {raw[:40]!r}; alert priorities are 1, 2 and 3",
                    }
                ),
                content_type="application/json",
            )
        return priority

    @operation(
        "Replace one priority's escalation policy (admins, or roles granted escalation:write)",
        right=POLICY_WRITE_RIGHT,
        body=POLICY_SCHEMA,
    )
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
        return json_response(policies.get(priority, {"priority": priority, "steps": [], "source": "none"}))

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
        # A narrow screen scrolls the table inside its own focusable box, never the page (WCAG 1.4.10).
        return (
            f'<div class="table-wrap" role="region" tabindex="0" aria-label="{escape(caption)}">'
            f'<table class="service-levels data-table"><caption>{escape(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body) or EMPTY_ROW}</tbody></table></div>"
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
