"""Installers' HTTP routes of the voice feature: Echo links and check-in schedules (``/alexa`` itself is
``skills/endpoint.py``). Mounted by ``bridge/feature_voice.py`` with :func:`add_installer_routes`; always
served, so installers may link Echos before the skill goes live.

API (installer or admin rights; bad input is a 422 naming the field):
  ``GET /api/v1/alexa-links``, ``POST /api/v1/alexa-links`` ``{"device_id", "alexa_device_id",
  "resident_id", "alexa_user_id"?}``, ``DELETE /api/v1/alexa-links/{device_id}``;
  ``GET /api/v1/check-in-schedules``, ``PUT /api/v1/check-in-schedules/{resident_id}``
  ``{"deadline": "HH:MM", "timezone": "Europe/London"}``, ``DELETE /api/v1/check-in-schedules/{resident_id}``.
"""

from __future__ import annotations

import json
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from alarm_centre.http.api import require
from alarm_centre.http.errors import json_response
from alarm_centre.http.inputs import path_name, read_json, validated
from alarm_centre.http.openapi import operation
from devices.events import DEVICE_ID_CHARS, DEVICE_ID_RULE, device_id_ok
from skills.voice import ALEXA_ID_RE, DEADLINE_RE, LinkError, VoiceService

VOICE: web.AppKey[VoiceService] = web.AppKey("voice", VoiceService)


def _device_id(value: str) -> str:
    if not device_id_ok(value):
        raise ValueError(f"must be {DEVICE_ID_RULE}")
    return value


#: An id under the one device-id rule (devices/events.py): the schema's pattern, then the full check.
DeviceId = Annotated[str, Field(pattern=f"^{DEVICE_ID_CHARS}$"), AfterValidator(_device_id)]


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: DeviceId
    alexa_device_id: str = Field(pattern=f"^{ALEXA_ID_RE.pattern}$")
    resident_id: DeviceId
    alexa_user_id: str | None = Field(None, pattern=f"^{ALEXA_ID_RE.pattern}$")


class ScheduleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deadline: str = Field(pattern=f"^{DEADLINE_RE.pattern}$")
    timezone: str = Field(min_length=1, max_length=64)


def _unprocessable(exc: LinkError) -> web.HTTPUnprocessableEntity:
    return web.HTTPUnprocessableEntity(
        text=json.dumps(
            {"error": "invalid request", "detail": [{"field": exc.field, "message": exc.message}]}
        ),
        content_type="application/json",
    )


@operation("Link an Echo to a resident's unit", right="devices:write", body=LinkBody, status=201)
async def create_link(request: web.Request) -> web.Response:
    require(request, "devices:write")
    body = validated(LinkBody, await read_json(request))
    try:
        link = await request.app[VOICE].link_echo(
            body.device_id, body.alexa_device_id, body.resident_id, body.alexa_user_id
        )
    except LinkError as exc:
        raise _unprocessable(exc) from None
    return json_response(link, status=201)


@operation("Echo links", right="devices:read")
async def list_links(request: web.Request) -> web.Response:
    require(request, "devices:read")
    return json_response({"links": await request.app[VOICE].list_links()})


@operation("Remove an Echo link", right="devices:write")
async def delete_link(request: web.Request) -> web.Response:
    require(request, "devices:write")
    if not await request.app[VOICE].unlink_echo(path_name(request, "device_id", "Echo link")):
        return json_response({"error": "not found", "detail": "no such Echo link"}, status=404)
    return json_response({"ok": True})


@operation("Set a resident's daily check-in deadline", right="residents:write", body=ScheduleBody)
async def put_schedule(request: web.Request) -> web.Response:
    require(request, "residents:write")
    body = validated(ScheduleBody, await read_json(request))
    try:
        schedule = await request.app[VOICE].set_check_in_schedule(
            path_name(request, "resident_id", "resident"), body.deadline, body.timezone
        )
    except LinkError as exc:
        raise _unprocessable(exc) from None
    return json_response(schedule)


@operation("Check-in schedules", right="residents:read")
async def list_schedules(request: web.Request) -> web.Response:
    require(request, "residents:read")
    return json_response({"schedules": await request.app[VOICE].list_check_in_schedules()})


@operation("Clear a resident's check-in schedule", right="residents:write")
async def delete_schedule(request: web.Request) -> web.Response:
    require(request, "residents:write")
    if not await request.app[VOICE].clear_check_in_schedule(path_name(request, "resident_id", "resident")):
        return json_response({"error": "not found", "detail": "no check-in schedule"}, status=404)
    return json_response({"ok": True})


def add_installer_routes(app: web.Application, service: VoiceService) -> None:
    """Serve the Echo links and check-in schedules of ``service`` on ``app``."""
    app[VOICE] = service
    app.router.add_get("/api/v1/alexa-links", list_links)
    app.router.add_post("/api/v1/alexa-links", create_link)
    app.router.add_delete("/api/v1/alexa-links/{device_id}", delete_link)
    app.router.add_get("/api/v1/check-in-schedules", list_schedules)
    app.router.add_put("/api/v1/check-in-schedules/{resident_id}", put_schedule)
    app.router.add_delete("/api/v1/check-in-schedules/{resident_id}", delete_schedule)
