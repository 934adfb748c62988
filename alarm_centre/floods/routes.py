"""HTTP routes of the alarm floods feature; mounted by ``bridge/feature_floods.py`` with :func:`add_routes`.

API (``alerts:read``):
  ``GET /api/v1/incidents?state=open|closed|all&limit=N`` -- incidents with live count, open count and
  the first units; ``GET /api/v1/incidents/{id}`` -- one incident with every unit;
  ``GET /api/v1/queue?limit=N`` -- the operator's queue with each open incident collapsed into one line
  (``"kind": "incident"``) among the single alerts (``"kind": "alert"``), priority first, so a ``fall``
  stays at the top however many ``mains_fail`` arrive. Grouped alerts carry ``data.incident_id``.
"""

from __future__ import annotations

from aiohttp import web

from alarm_centre.floods.grouping import FloodGrouper
from alarm_centre.floods.model import IncidentFilter
from alarm_centre.http.api import require
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.http.inputs import path_id, query_int
from alarm_centre.http.openapi import operation, query

FLOODS: web.AppKey[FloodGrouper] = web.AppKey("floods", FloodGrouper)


_LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "how many")


@operation(
    "Incidents (floods of one alarm type), newest first",
    right="alerts:read",
    query=(
        query("state", {"type": "string", "enum": [f.value for f in IncidentFilter], "default": "open"}),
        _LIMIT,
    ),
)
async def list_incidents(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    state = request.query.get("state", IncidentFilter.OPEN.value)
    if state not in tuple(IncidentFilter):
        return json_error(422, "invalid request", "state must be open, closed or all")
    limit = query_int(request, "limit", 100, 1, 1000)
    incidents = await request.app[FLOODS].list_incidents(state=state, limit=limit)
    return json_response({"incidents": [i.to_json() for i in incidents]})


@operation("One incident with every unit in it", right="alerts:read")
async def get_incident(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    key = path_id(request, "incident_id", "incident")
    incident = await request.app[FLOODS].get_incident(str(key))
    if incident is None:
        return json_error(404, "not found", f"no incident {key}")
    return json_response(incident.to_json())


@operation(
    "The operator's queue: alerts, with each open incident as one line", right="alerts:read", query=(_LIMIT,)
)
async def queue(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    limit = query_int(request, "limit", 100, 1, 1000)
    return json_response({"lines": await request.app[FLOODS].queue(limit=limit)})


def add_routes(app: web.Application, grouper: FloodGrouper) -> None:
    """Serve the incidents and the queue of ``grouper`` on ``app``."""
    app[FLOODS] = grouper
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{incident_id}", get_incident)
    app.router.add_get("/api/v1/queue", queue)
