"""HTTP API of data protection (docs/data-protection.md); mounted by ``bridge/feature_privacy.py``.

- ``GET /api/v1/privacy/reads`` -- the audit of reads, JSON or CSV (supervisors and admins);
- ``GET /api/v1/privacy/residents/{resident_id}/export`` -- a subject access export, JSON or Markdown;
- ``POST /api/v1/privacy/residents/{resident_id}/erase`` -- erasure on request (409 while an alert is open);
- ``GET /api/v1/privacy/erasures`` -- the erasures done;
- ``GET /api/v1/privacy/retention``, ``POST /api/v1/privacy/retention/run`` -- the policy, the last runs,
  a run now.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from alarm_centre.http.api import STORE, source_of, viewer
from alarm_centre.http.errors import json_exception, json_response
from alarm_centre.http.inputs import path_name, query_int, read_json, validated
from alarm_centre.http.openapi import operation, query
from alarm_centre.ids import row_id
from alarm_centre.privacy.disclosure import read_by, record
from alarm_centre.privacy.erasure import erase_resident, erasures
from alarm_centre.privacy.need_to_know import ResidentField
from alarm_centre.privacy.reads import ReadQuery, query_reads, reads_csv
from alarm_centre.privacy.retention import RetentionJob, RetentionKind, RetentionPolicy, recent_runs
from alarm_centre.privacy.subject_access import subject_access, summary_markdown


@dataclass(frozen=True, slots=True)
class Privacy:
    """What the routes need: the retention kinds and policy, and the job (to run it now)."""

    kinds: Sequence[RetentionKind]
    policy: RetentionPolicy
    job: RetentionJob | None


PRIVACY: web.AppKey[Privacy] = web.AppKey("privacy", Privacy)


class EraseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The request's reference in the council's own log (a case number); recorded with the erasure.
    reference: str = Field(min_length=1, max_length=200)
    #: The resident's id again, so a slip of the finger in the path erases nobody.
    confirm: str = Field(min_length=1, max_length=64)


def _time(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return datetime.fromisoformat(raw[:40].replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise json_exception(
            web.HTTPUnprocessableEntity,
            "invalid request",
            f"{name} must be an RFC 3339 time like 2026-05-01T00:00:00Z",
        ) from None


@operation(
    "The audit of reads of residents' personal data, newest first (JSON, or CSV with format=csv)",
    right="privacy:audit",
    answer_types=("application/json", "text/csv"),
    query=(
        query("resident_id", {"type": "string"}, "one resident's reads"),
        query("actor", {"type": "string"}, "one member of staff's reads"),
        query("since", {"type": "string", "format": "date-time"}),
        query("until", {"type": "string", "format": "date-time"}),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 500}),
        query("cursor", {"type": "string"}, "next_cursor from the previous page"),
        query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}),
    ),
)
async def list_reads(request: web.Request) -> web.StreamResponse:
    viewer(request, "privacy:audit")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise json_exception(web.HTTPUnprocessableEntity, "invalid request", "format must be json or csv")
    cursor = request.query.get("cursor")
    before = None
    if cursor:
        before = row_id(cursor)
        if before is None:
            raise json_exception(web.HTTPUnprocessableEntity, "invalid request", "cursor is not one we gave")
    page, next_cursor = await query_reads(
        request.app[STORE],
        ReadQuery(
            resident_id=request.query.get("resident_id") or None,
            actor=request.query.get("actor") or None,
            since=_time(request, "since"),
            until=_time(request, "until"),
            limit=query_int(request, "limit", 500, 1, 5000),
            before_id=before,
        ),
    )
    if fmt == "csv":
        headers = {"Content-Disposition": 'attachment; filename="reads.csv"', "Cache-Control": "no-store"}
        return web.Response(text=reads_csv(page), content_type="text/csv", headers=headers)
    return json_response({"reads": page, "next_cursor": next_cursor})


@operation(
    "Everything held about one resident (subject access): JSON, or a readable summary with format=markdown",
    right="privacy:subject_access",
    answer_types=("application/json", "text/markdown"),
    query=(query("format", {"type": "string", "enum": ["json", "markdown"], "default": "json"}),),
)
async def export_resident(request: web.Request) -> web.StreamResponse:
    who = viewer(request, "privacy:subject_access")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "markdown"):
        raise json_exception(
            web.HTTPUnprocessableEntity, "invalid request", "format must be json or markdown"
        )
    resident_id = path_name(request, "resident_id", "resident")
    privacy = request.app[PRIVACY]
    store = request.app[STORE]
    doc = await subject_access(
        store, resident_id, requested_by=who.name, kinds=privacy.kinds, policy=privacy.policy
    )
    await record(store, [read_by(who, resident_id, set(ResidentField), "subject_access")])
    name = f"subject-access-{resident_id}"
    if fmt == "markdown":
        return web.Response(
            text=summary_markdown(doc),
            content_type="text/markdown",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.md"', "Cache-Control": "no-store"},
        )
    return json_response(doc, headers={"Content-Disposition": f'attachment; filename="{name}.json"'})


@operation(
    "Erase a resident on request (their record deleted, their alerts anonymised)",
    right="privacy:erase",
    body=EraseBody,
    errors={
        404: "no such resident",
        409: "the resident has an open alert (named): resolve it first",
        422: "confirm is not the resident's id, or a field breaks its rule",
    },
)
async def erase(request: web.Request) -> web.Response:
    who = viewer(request, "privacy:erase")
    resident_id = path_name(request, "resident_id", "resident")
    body = validated(EraseBody, await read_json(request))
    if body.confirm != resident_id:
        raise json_exception(
            web.HTTPUnprocessableEntity,
            "invalid request",
            [{"field": "confirm", "message": "must be the id of the resident being erased"}],
        )
    done = await erase_resident(
        request.app[STORE],
        resident_id,
        actor=who.name,
        source=str(source_of(request)),
        reference=body.reference,
        now=time.time(),
    )
    return json_response(done.to_json())


@operation("The erasures done, newest first", right="privacy:erase")
async def list_erasures(request: web.Request) -> web.Response:
    viewer(request, "privacy:erase")
    return json_response({"erasures": await erasures(request.app[STORE])})


@operation("The retention policy (days per kind of record) and the job's latest runs", right="privacy:audit")
async def retention(request: web.Request) -> web.Response:
    viewer(request, "privacy:audit")
    privacy = request.app[PRIVACY]
    limit = query_int(request, "limit", 20, 1, 500)
    return json_response(
        {
            "policy": privacy.policy.describe(privacy.kinds),
            "enabled": privacy.job is not None,
            "runs": await recent_runs(request.app[STORE], limit),
        }
    )


@operation(
    "Run the retention job now (no body; its report: counts per kind)",
    right="privacy:retention",
    errors={409: "retention is disabled (retention.enabled: false)"},
)
async def run_retention(request: web.Request) -> web.Response:
    viewer(request, "privacy:retention")
    job = request.app[PRIVACY].job
    if job is None:
        raise json_exception(
            web.HTTPConflict,
            "conflict",
            {"message": "retention is disabled (retention.enabled: false)", "holder": None},
        )
    report = await job.run_once()
    return json_response(report.to_json())


def add_privacy_routes(app: web.Application, privacy: Privacy) -> None:
    app[PRIVACY] = privacy
    app.router.add_get("/api/v1/privacy/reads", list_reads)
    app.router.add_get("/api/v1/privacy/residents/{resident_id}/export", export_resident)
    app.router.add_post("/api/v1/privacy/residents/{resident_id}/erase", erase)
    app.router.add_get("/api/v1/privacy/erasures", list_erasures)
    app.router.add_get("/api/v1/privacy/retention", retention)
    app.router.add_post("/api/v1/privacy/retention/run", run_retention)
