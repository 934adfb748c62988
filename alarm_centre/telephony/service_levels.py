"""Answer-time service levels from call events: how soon calls were answered, per operator and per day.

Two measures, each against 60 s and 180 s:

- **offered → answered**: an inbound call, from the moment it reached the centre to the moment someone
  (an operator, or the overflow centre) answered it.
- **signal → speech**: an alert, from its signal (the alarm the unit sent, or the call itself when the
  call raised it) to the first call on it in which the resident or caller and the centre were speaking.

Each is read against two views of the standard: **97.5 % within 60 s and 99 % within 180 s**, and the
stricter **98.5 % within 60 s** some services commit to. The verdict of one call or alert against one
threshold is the escalation's rule (:func:`alarm_centre.escalation.service_levels.classify`): met, missed,
pending (still ringing, threshold not passed: left out), excluded (the caller hung up, or the alert was
resolved, before the threshold and before any answer: counted as *abandoned*, not in the share). Test
alerts are left out. Days are calendar days in the escalation's time zone; "per operator" is whoever
answered (``overflow:+44...`` for the partner centre, "(unanswered)" for nobody).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from alarm_centre.alerts.model import iso
from alarm_centre.escalation.service_levels import MAX_DAYS, UNANSWERED, classify, day_bounds
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import InvalidRequest, Row
from alarm_centre.telephony import store as sql
from alarm_centre.telephony.states import Direction
from devices.csv_yaml import safe_cell

THRESHOLDS: tuple[int, ...] = (60, 180)
#: The views of the standard: name -> the share each threshold must reach.
VIEWS: dict[str, dict[int, float]] = {
    "97.5% in 60 s, 99% in 180 s": {60: 0.975, 180: 0.99},
    "98.5% in 60 s": {60: 0.985},
}
Measure = Literal["offered", "speech"]
MEASURES: tuple[Measure, ...] = ("offered", "speech")
MEASURE_WORDS: dict[Measure, str] = {
    "offered": "Calls answered (offered to answered)",
    "speech": "Speech established (signal to speech)",
}


def view_key(threshold: int, target: float) -> str:
    """``meets_97_5_in_60s``: the JSON key of one view's verdict."""
    return f"meets_{f'{target * 100:g}'.replace('.', '_')}_in_{threshold}s"


@dataclass(slots=True)
class CallTally:
    """Counts for one group of calls (or alerts, for the speech measure)."""

    count: int = 0
    abandoned: int = 0
    met: dict[int, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))
    missed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))
    pending: dict[int, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))

    def add(self, start: float, answered: float | None, gave_up: float | None, now: float) -> None:
        self.count += 1
        if answered is None and gave_up is not None:
            self.abandoned += 1
        for t in THRESHOLDS:
            verdict = classify(start, answered, gave_up, now, t)
            if verdict == "met":
                self.met[t] += 1
            elif verdict == "missed":
                self.missed[t] += 1
            elif verdict == "pending":
                self.pending[t] += 1

    def share(self, threshold: int) -> float | None:
        counted = self.met[threshold] + self.missed[threshold]
        return None if counted == 0 else self.met[threshold] / counted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "abandoned": self.abandoned}
        for t in THRESHOLDS:
            share = self.share(t)
            out[f"within_{t}s"] = self.met[t]
            out[f"late_{t}s"] = self.missed[t]
            out[f"pending_{t}s"] = self.pending[t]
            out[f"share_{t}s"] = None if share is None else round(share, 4)
        for targets in VIEWS.values():
            for t, target in targets.items():
                share = self.share(t)
                out[view_key(t, target)] = None if share is None else share >= target
        return out


@dataclass(slots=True)
class MeasureReport:
    by_day: dict[str, CallTally] = field(default_factory=dict)
    by_operator: dict[str, CallTally] = field(default_factory=dict)
    total: CallTally = field(default_factory=CallTally)

    def add(
        self, day: str, operator: str, start: float, answered: float | None, gave_up: float | None, now: float
    ) -> None:
        for tally in (
            self.by_day.setdefault(day, CallTally()),
            self.by_operator.setdefault(operator, CallTally()),
            self.total,
        ):
            tally.add(start, answered, gave_up, now)


@dataclass(frozen=True, slots=True)
class CallServiceLevels:
    start: date
    end: date
    timezone: str
    generated_at: float
    measures: dict[Measure, MeasureReport]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "timezone": self.timezone,
            "generated_at": iso(self.generated_at),
            "thresholds_s": list(THRESHOLDS),
            "views": [
                {"name": name, "targets": {f"{t}s": target for t, target in targets.items()}}
                for name, targets in VIEWS.items()
            ],
            "measures": {
                measure: {
                    "total": report.total.to_json(),
                    "days": [{"day": d, **t.to_json()} for d, t in sorted(report.by_day.items())],
                    "operators": [
                        {"operator": o or None, **t.to_json()} for o, t in sorted(report.by_operator.items())
                    ],
                }
                for measure, report in self.measures.items()
            },
        }

    def to_csv(self) -> str:
        """One row per (measure, scope, day or operator); shares as fractions, blank when nothing counts."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        head = ["measure", "scope", "day", "operator", "count", "abandoned"]
        for t in THRESHOLDS:
            head += [f"within_{t}s", f"late_{t}s", f"pending_{t}s", f"share_{t}s"]
        writer.writerow([safe_cell(c) for c in head])

        def line(measure: str, scope: str, day: str, operator: str, tally: CallTally) -> list[str]:
            cells = [measure, scope, day, operator, str(tally.count), str(tally.abandoned)]
            for t in THRESHOLDS:
                share = tally.share(t)
                cells += [
                    str(tally.met[t]),
                    str(tally.missed[t]),
                    str(tally.pending[t]),
                    "" if share is None else f"{share:.4f}",
                ]
            return [safe_cell(c) for c in cells]

        for measure, report in self.measures.items():
            for d, tally in sorted(report.by_day.items()):
                writer.writerow(line(measure, "day", d, "", tally))
            for o, tally in sorted(report.by_operator.items()):
                writer.writerow(line(measure, "operator", "", o or "(unanswered)", tally))
            writer.writerow(line(measure, "total", "", "", report.total))
        return buf.getvalue()


def build(rows: Iterable[Row], *, start: date, end: date, tz: ZoneInfo, now: float) -> CallServiceLevels:
    """Group call rows (:func:`alarm_centre.telephony.store.calls_between`) into both measures."""
    offered = MeasureReport()
    alerts: dict[int, list[Row]] = {}
    for row in rows:
        if row["test"]:
            continue
        alerts.setdefault(int(row["alert_id"]), []).append(row)
        if row["direction"] != Direction.INBOUND:
            continue
        day = datetime.fromtimestamp(float(row["started_at"]), tz).date().isoformat()
        gave_up = row["ended_at"] if row["answered_at"] is None else None
        offered.add(
            day,
            str(row["operator"] or UNANSWERED),
            float(row["started_at"]),
            row["answered_at"],
            gave_up,
            now,
        )
    speech = MeasureReport()
    for calls in alerts.values():
        first = calls[0]
        signal = float(first["signal_at"] if first["signal_at"] is not None else first["raised_at"])
        spoken = [c for c in calls if c["speech_at"] is not None]
        talk = min(spoken, key=lambda c: float(c["speech_at"])) if spoken else None
        day = datetime.fromtimestamp(signal, tz).date().isoformat()
        operator = str(talk["operator"] or UNANSWERED) if talk is not None else UNANSWERED
        gave_up = None
        if talk is None:
            over = [float(c["ended_at"]) for c in calls if c["ended_at"] is not None]
            resolved = first["resolved_at"]
            if resolved is not None or (over and all(c["ended_at"] is not None for c in calls)):
                gave_up = float(resolved) if resolved is not None else max(over)
        speech.add(day, operator, signal, None if talk is None else float(talk["speech_at"]), gave_up, now)
    return CallServiceLevels(start, end, str(tz), now, {"offered": offered, "speech": speech})


async def call_service_levels(
    store: AlertStore, *, start: date, end: date, tz: ZoneInfo, now: float | None = None
) -> CallServiceLevels:
    """The report for calls started from ``start`` to ``end`` (inclusive days in ``tz``)."""
    if end < start:
        raise InvalidRequest("'to' must not be before 'from'")
    if (end - start).days >= MAX_DAYS:
        raise InvalidRequest(f"at most {MAX_DAYS} days at a time")
    lo, hi = day_bounds(start, end, tz)
    async with store.read() as tx:
        rows = await sql.calls_between(tx, lo, hi)
    return build(rows, start=start, end=end, tz=tz, now=time.time() if now is None else now)


async def window(store: AlertStore, *, seconds: float, now: float, tz: ZoneInfo) -> CallServiceLevels:
    """Both measures over the last ``seconds`` (the /metrics gauges)."""
    async with store.read() as tx:
        rows = await sql.calls_between(tx, now - seconds, now + 1)
    today = datetime.fromtimestamp(now, tz).date()
    return build(rows, start=today, end=today, tz=tz, now=now)


def render(report: CallServiceLevels, *, links: Sequence[tuple[str, str]] = ()) -> Any:
    """The supervisors' page body: per measure, totals, days and operators against both views."""
    from alarm_centre.console import Safe, escape

    def pct(share: float | None) -> str:
        return "-" if share is None else f"{share * 100:.1f} %"

    def verdict(tally: CallTally) -> str:
        words = []
        for name, targets in VIEWS.items():
            shares = [tally.share(t) for t in targets]
            if any(s is None for s in shares):
                continue
            ok = all(
                s is not None and s >= target for s, target in zip(shares, targets.values(), strict=True)
            )
            words.append(f"{'meets' if ok else 'misses'} {name}")
        return "; ".join(words) or "nothing to count yet"

    head_cells = (
        "",
        "Count",
        "Within 60 s",
        "Within 180 s",
        "Late (60 s)",
        "Abandoned",
        "Pending",
        "Standard",
    )

    def table(caption: str, first: str, rows: list[tuple[str, CallTally]]) -> str:
        head = "".join(f'<th scope="col">{escape(h or first)}</th>' for h in head_cells)
        body = []
        for label, tally in rows:
            cells = [
                label,
                str(tally.count),
                pct(tally.share(60)),
                pct(tally.share(180)),
                str(tally.missed[60]),
                str(tally.abandoned),
                str(tally.pending[60]),
                verdict(tally),
            ]
            row_head = f'<th scope="row">{escape(cells[0])}</th>'
            body.append("<tr>" + row_head + "".join(f"<td>{escape(c)}</td>" for c in cells[1:]) + "</tr>")
        empty = f'<tr><td colspan="{len(head_cells)}">No calls</td></tr>'
        return (
            f'<table class="service-levels"><caption>{escape(caption)}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body) or empty}</tbody></table>"
        )

    period = f"{report.start.isoformat()} to {report.end.isoformat()} ({report.timezone})"
    parts = [
        "<section aria-labelledby='call-sl-heading'><h1 id='call-sl-heading'>Call answer times</h1>",
        f"<p>{escape(period)}. Views: {escape('; '.join(VIEWS))}. Test alerts left out; calls abandoned "
        "before the threshold are counted apart, not in the share. "
        f'<a href="/api/v1/calls/service-levels.csv?from={escape(report.start.isoformat())}'
        f'&amp;to={escape(report.end.isoformat())}">Download CSV</a>'
        + "".join(f' · <a href="{escape(href)}">{escape(text)}</a>' for href, text in links)
        + "</p>",
    ]
    for measure, words in MEASURE_WORDS.items():
        data = report.measures[measure]
        parts.append(f"<h2>{escape(words)}</h2>")
        parts.append(table(f"{words}: total", "Period", [(period, data.total)]))
        parts.append(table(f"{words}: per day", "Day", sorted(data.by_day.items())))
        parts.append(
            table(
                f"{words}: per operator",
                "Operator",
                [(o or "(unanswered)", t) for o, t in sorted(data.by_operator.items())],
            )
        )
    parts.append("</section>")
    return Safe("".join(parts))
