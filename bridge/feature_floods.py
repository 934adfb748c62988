"""Alarm floods feature: group many units' technical alarms into incidents (``floods:`` config).

API (``alerts:read``):
  ``GET /api/v1/incidents?state=open|closed|all&limit=N`` -- incidents with live count, open count and
  the first units; ``GET /api/v1/incidents/{id}`` -- one incident with every unit;
  ``GET /api/v1/queue?limit=N`` -- the operator's queue with each open incident collapsed into one line
  (``"kind": "incident"``) among the single alerts (``"kind": "alert"``), priority first, so a ``fall``
  stays at the top however many ``mains_fail`` arrive. Grouped alerts carry ``data.incident_id``.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from aiohttp import web

from alarm_centre.floods import FloodGrouper, FloodRules
from alarm_centre.http.api import require
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.http.inputs import path_id, query_int
from alarm_centre.http.openapi import operation, query

if TYPE_CHECKING:
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)

FLOODS: web.AppKey[FloodGrouper] = web.AppKey("floods", FloodGrouper)


_LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "how many")


@operation("Incidents (floods of one alarm type), newest first", right="alerts:read", query=(
    query("state", {"type": "string", "enum": ["open", "closed", "all"], "default": "open"}), _LIMIT))
async def list_incidents(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    state = request.query.get("state", "open")
    if state not in ("open", "closed", "all"):
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


@operation("The operator's queue: alerts, with each open incident as one line", right="alerts:read",
           query=(_LIMIT,))
async def queue(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    limit = query_int(request, "limit", 100, 1, 1000)
    return json_response({"lines": await request.app[FLOODS].queue(limit=limit)})


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    cfg = host.config.floods
    grouper = FloodGrouper(host.store, FloodRules(threshold=cfg.threshold, window_s=cfg.window_s,
                                                    types=frozenset(cfg.types)))
    if cfg.enabled:
        grouper.install()
        log.info("alarm floods: %d or more of one type within %.0f s become an incident (%s)", cfg.threshold,
                 cfg.window_s, ", ".join(sorted(cfg.types)))
    host.app[FLOODS] = grouper
    host.app.router.add_get("/api/v1/incidents", list_incidents)
    host.app.router.add_get("/api/v1/incidents/{incident_id}", get_incident)
    host.app.router.add_get("/api/v1/queue", queue)
