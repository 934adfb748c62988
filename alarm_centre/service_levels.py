"""Service levels: the share of priority-1 and priority-2 alerts acknowledged within 60 s and 180 s.

The standard operators are held to is 97.5 % within 60 s and 99 % within 180 s. For each threshold an
alert is:
- **met** when it was acknowledged within the threshold;
- **missed** when it was acknowledged later, or was still unacknowledged when the threshold passed;
- **pending** while it is unacknowledged and the threshold has not passed yet (left out of the share);
- **excluded** when the system resolved it before anyone acknowledged it and before the threshold (the
  unit cleared it: nobody needed to answer). Test alerts are always left out.

Days are calendar days in the configured time zone. Per operator means the operator who acknowledged.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from alarm_centre.alerts.model import iso
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import InvalidRequest, Row
from devices.csv_yaml import safe_cell

THRESHOLDS: tuple[int, ...] = (60, 180)
TARGETS: dict[int, float] = {60: 0.975, 180: 0.99}
PRIORITIES: tuple[int, ...] = (1, 2)
MAX_DAYS = 366
UNANSWERED = ""

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
    marks = ", ".join("?" for _ in priorities)
    async with store.read() as tx:
        return await tx.fetchall(
            "SELECT priority, raised_at, acknowledged_at, acknowledged_by, resolved_at FROM alerts "
            f"WHERE raised_at >= ? AND raised_at < ? AND test = 0 AND priority IN ({marks}) "
            "ORDER BY raised_at",
            lo,
            hi,
            *priorities,
        )


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
