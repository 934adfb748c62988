"""The monthly call audit: for each call handler and month, the calls a supervisor reviews.

The draw takes, per handler (the operator who answered the call, or who dialled it), at least
``audit_calls_per_handler`` of their answered calls of the month, at random (``secrets``), one of them
involving the emergency services whenever the handler had such a call (a party dialled was the emergency
number, or the alert was resolved as ambulance, fire service or police). A draw is made once: drawing
again only adds handlers who had no calls drawn yet, so the record cannot be re-rolled. Each drawn call
gets the reviewer's verdict and findings; the month exports as CSV.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from alarm_centre.alerts.lifecycle import Outcome
from alarm_centre.alerts.model import iso
from alarm_centre.escalation.service_levels import day_bounds
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import InvalidRequest, NotFound, PostCommit, Row, Tx
from alarm_centre.telephony import store as sql
from alarm_centre.telephony.states import DrawReason, Verdict
from devices.csv_yaml import safe_cell

MONTH_RE = re.compile(r"(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])")
MAX_FINDINGS = 4000
#: Outcomes that mean the emergency services were involved.
EMERGENCY_OUTCOMES = frozenset({Outcome.AMBULANCE, Outcome.FIRE_SERVICE, Outcome.POLICE})


def parse_month(text: str | None) -> str:
    """``YYYY-MM`` (1970-2999); InvalidRequest naming the rule otherwise."""
    if not isinstance(text, str) or MONTH_RE.fullmatch(text) is None:
        raise InvalidRequest("month must be a month like 2026-05")
    return text


def month_bounds(month: str, tz: ZoneInfo) -> tuple[float, float]:
    year, number = (int(part) for part in month.split("-"))
    first = date(year, number, 1)
    last = date(year + (number == 12), number % 12 + 1, 1).toordinal() - 1
    return day_bounds(first, date.fromordinal(last), tz)


def involves_emergency(row: Row) -> bool:
    return bool(row["emergency"]) or row["outcome"] in EMERGENCY_OUTCOMES


def draw(
    calls: Sequence[Row],
    *,
    per_handler: int,
    already: set[str],
    pick: Callable[[int], int] = secrets.randbelow,
) -> list[tuple[str, int, DrawReason]]:
    """``(handler, call id, reason)`` for every handler not in ``already``: one emergency call when they
    had any, then others at random, ``per_handler`` in all (every call when they had fewer)."""
    by_handler: dict[str, list[Row]] = {}
    for row in calls:
        handler = row["operator"]
        if handler and not str(handler).startswith("overflow:") and str(handler) not in already:
            by_handler.setdefault(str(handler), []).append(row)
    drawn: list[tuple[str, int, DrawReason]] = []
    for handler, rows in sorted(by_handler.items()):
        left = list(rows)
        chosen: list[tuple[int, DrawReason]] = []
        emergencies = [r for r in left if involves_emergency(r)]
        if emergencies:
            one = emergencies[pick(len(emergencies))]
            chosen.append((int(one["id"]), DrawReason.EMERGENCY))
            left.remove(one)
        while left and len(chosen) < per_handler:
            one = left.pop(pick(len(left)))
            chosen.append((int(one["id"]), DrawReason.RANDOM))
        drawn.extend((handler, call_id, reason) for call_id, reason in chosen)
    return drawn


@dataclass(frozen=True, slots=True)
class AuditMonth:
    month: str
    reviews: list[dict[str, Any]]
    handlers_without_calls: list[str]

    def to_json(self) -> dict[str, Any]:
        handlers: dict[str, list[dict[str, Any]]] = {}
        for review in self.reviews:
            handlers.setdefault(review["handler"], []).append(review)
        return {
            "month": self.month,
            "handlers": [{"handler": h, "calls": calls} for h, calls in sorted(handlers.items())],
            "drawn": len(self.reviews),
            "reviewed": sum(1 for r in self.reviews if r["reviewed_at"] is not None),
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        head = [
            "month", "handler", "review_id", "call_id", "alert_id", "direction", "started_at", "emergency",
            "reason", "recordings", "verdict", "findings", "reviewer", "reviewed_at",
        ]  # fmt: skip
        writer.writerow([safe_cell(c) for c in head])
        for r in self.reviews:
            cells = [
                self.month,
                r["handler"],
                r["id"],
                r["call_id"],
                r["alert_id"],
                r["direction"],
                r["started_at"] or "",
                "yes" if r["emergency"] else "no",
                r["reason"],
                " ".join(r["recordings"]),
                r["verdict"] or "",
                r["findings"] or "",
                r["reviewer"] or "",
                r["reviewed_at"] or "",
            ]
            writer.writerow([safe_cell(c) for c in cells])
        return buf.getvalue()


class CallAudit:
    """Draws, reviews and exports; ``tz`` decides where a month begins."""

    def __init__(
        self, store: AlertStore, *, per_handler: int, tz: ZoneInfo, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.per_handler = per_handler
        self.tz = tz
        self.clock = clock

    async def draw(self, month: str, *, by: str) -> AuditMonth:
        """Draw the month's calls for every handler who has none drawn yet (see the module docstring)."""
        lo, hi = month_bounds(parse_month(month), self.tz)

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            calls = [
                row
                for row in await sql.calls_between(tx, lo, hi)
                if row["answered_at"] is not None and row["ended_at"] is not None and not row["test"]
            ]
            already = {str(r["handler"]) for r in await sql.reviews_of_month(tx, month)}
            for handler, call_id, reason in draw(calls, per_handler=self.per_handler, already=already):
                await sql.add_review(
                    tx, month=month, handler=handler, call_id=call_id, reason=reason, drawn_by=by, now=now
                )

        await self.store.transaction(work)
        return await self.month(month)

    async def month(self, month: str) -> AuditMonth:
        parse_month(month)
        lo, hi = month_bounds(month, self.tz)
        async with self.store.read() as tx:
            rows = await sql.reviews_of_month(tx, month)
            recordings: dict[int, list[str]] = {}
            for rec in await sql.recordings_of_calls(tx, [int(r["call_id"]) for r in rows]):
                if rec["deleted_at"] is None:
                    recordings.setdefault(int(rec["call_id"]), []).append(str(rec["id"]))
            handlers = {
                str(r["operator"])
                for r in await sql.calls_between(tx, lo, hi)
                if r["operator"]
                and not str(r["operator"]).startswith("overflow:")
                and r["answered_at"] is not None
            }
        reviews = [
            {
                "id": str(r["id"]),
                "handler": r["handler"],
                "call_id": str(r["call_id"]),
                "alert_id": str(r["alert_id"]),
                "direction": r["direction"],
                "started_at": iso(r["started_at"]),
                "answered_at": iso(r["answered_at"]),
                "ended_at": iso(r["ended_at"]),
                "emergency": bool(r["emergency"]),
                "reason": r["reason"],
                "recordings": recordings.get(int(r["call_id"]), []),
                "verdict": r["verdict"],
                "findings": r["findings"],
                "reviewer": r["reviewer"],
                "reviewed_at": iso(r["reviewed_at"]),
                "drawn_at": iso(r["drawn_at"]),
                "drawn_by": r["drawn_by"],
            }
            for r in rows
        ]
        drawn = {r["handler"] for r in reviews}
        return AuditMonth(month, reviews, sorted(handlers - drawn))

    async def review(self, review_id: int, *, verdict: str, findings: str, reviewer: str) -> dict[str, Any]:
        """Record a reviewer's verdict and findings on one drawn call (a later review replaces it)."""
        try:
            checked = Verdict(verdict)
        except ValueError:
            raise InvalidRequest(f"verdict must be one of {', '.join(v.value for v in Verdict)}") from None
        if len(findings) > MAX_FINDINGS:
            raise InvalidRequest(f"findings are at most {MAX_FINDINGS} characters")

        async def work(tx: Tx, post: PostCommit) -> str:
            row = await sql.review(tx, review_id)
            if row is None:
                raise NotFound(f"no review {review_id}")
            await sql.set_review(
                tx, review_id, verdict=checked.value, findings=findings, reviewer=reviewer, now=self.clock()
            )
            return str(row["month"])

        month: str = await self.store.transaction(work)
        found = await self.month(month)
        return next(r for r in found.reviews if r["id"] == str(review_id))
