"""HTTP routes for installers: residents, devices, links, commissioning, remote configuration, credentials,
bulk import and export. Installers and admins write; operators and supervisors read.

Mounted by ``bridge/feature_registry.py`` with :func:`add_registry_routes`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alarm_centre.http.api import require, source_of, viewer
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.http.inputs import path_name, read_json, validated
from alarm_centre.http.openapi import Body, operation, query
from alarm_centre.privacy import disclosure as disclose
from alarm_centre.privacy.need_to_know import hidden_keys
from alarm_centre.registry.service import Registry
from devices.csv_yaml import MalformedFile, parse_csv, parse_yaml, to_csv, to_yaml
from devices.registry import Device, Resident, UnitSettings, errors_of, merge


class CredentialIssuer(Protocol):
    """Issues per-device MQTT credentials and keeps the broker's files in step (bridge/credentials.py)."""

    async def issue(self, device_id: str, *, actor: str, source: str) -> str: ...
    async def sync(self) -> None: ...


@dataclass
class RegistryOptions:
    commissioning_minutes: float = 30.0
    max_commissioning_minutes: float = 240.0
    credentials: CredentialIssuer | None = None
    #: The MQTT username a unit uses (its device id) and the topic it publishes events on, for the answer.
    topic_root: str = "telecare"


REGISTRY: web.AppKey[Registry] = web.AppKey("device_registry", Registry)
OPTIONS: web.AppKey[RegistryOptions] = web.AppKey("registry_options", RegistryOptions)


def _unprocessable(detail: Any) -> web.HTTPUnprocessableEntity:
    return web.HTTPUnprocessableEntity(
        text=json.dumps({"error": "invalid request", "detail": detail}), content_type="application/json"
    )


def _merged(model: type[Device] | type[Resident], current: Device | Resident, changes: dict[str, Any]) -> Any:
    try:
        return merge(model, current, changes)
    except ValidationError as exc:
        raise _unprocessable(errors_of(exc)) from None
    except ValueError as exc:
        raise _unprocessable([{"field": "id", "message": str(exc)}]) from None


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(min_length=1, max_length=64)
    resident_id: str | None = Field(None, max_length=64)


class RetireBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500)


class VisitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: float | None = Field(None, gt=0)
    peripherals: list[str] | None = None


class FinishBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=2000)


class ConfigBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: UnitSettings


def _device_id(request: web.Request) -> str:
    """The ``{device_id}`` of the path, checked by the device-id rule (a JSON 404 if it breaks it)."""
    return path_name(request, "device_id", "device")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    return await read_json(request)


_FILE_TYPES = ("text/csv", "application/yaml")
_STATUS = query("status", {"type": "string", "enum": ["active", "retired", "all"], "default": "active"})


# -- residents -----------------------------------------------------------------------------------
@operation(
    "Register a resident",
    right="residents:write",
    body=Resident,
    status=201,
    errors={409: "a resident with this id exists"},
)
async def create_resident(request: web.Request) -> web.Response:
    user = require(request, "residents:write")
    who = viewer(request, "residents:write")
    resident = validated(Resident, await read_json(request))
    registry = request.app[REGISTRY]
    await registry.create_resident(resident, actor=user.name, source=source_of(request))
    shown = await disclose.resident(
        registry.store, who, resident.model_dump(mode="json"), purpose="api.resident_created"
    )
    return json_response(shown, status=201)


@operation(
    "Residents, each with how many devices it has (the fields your role may see; docs/data-protection.md)",
    right="residents:read",
)
async def list_residents(request: web.Request) -> web.Response:
    who = viewer(request, "residents:read")
    registry = request.app[REGISTRY]
    rows = await registry.list_residents()
    records = [{**r.model_dump(mode="json"), "devices": n} for r, n in rows]
    return json_response(
        {"residents": await disclose.residents(registry.store, who, records, purpose="api.residents")}
    )


@operation("One resident with its devices (the fields your role may see)", right="residents:read")
async def get_resident(request: web.Request) -> web.Response:
    who = viewer(request, "residents:read")
    registry = request.app[REGISTRY]
    resident = await registry.get_resident(path_name(request, "resident_id", "resident"))
    devices = await registry.list_devices(resident_id=resident.id)
    record = {**resident.model_dump(mode="json"), "devices": devices}
    return json_response(await disclose.resident(registry.store, who, record, purpose="api.resident"))


@operation(
    "Change some of a resident's fields (fields your role may not see are write-only)",
    right="residents:write",
    body=Body(Resident, partial=True),
)
async def edit_resident(request: web.Request) -> web.Response:
    user = require(request, "residents:write")
    who = viewer(request, "residents:write")
    registry = request.app[REGISTRY]
    current = await registry.get_resident(path_name(request, "resident_id", "resident"))
    resident = _merged(Resident, current, await read_json(request))
    await registry.update_resident(resident, actor=user.name, source=source_of(request))
    shown = await disclose.resident(
        registry.store, who, resident.model_dump(mode="json"), purpose="api.resident_updated"
    )
    return json_response(shown)


# -- devices -------------------------------------------------------------------------------------
@operation(
    "Register a device",
    right="devices:write",
    body=Device,
    status=201,
    errors={409: "a device with this id (or address) exists"},
)
async def create_device(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    device = validated(Device, await read_json(request))
    body = await request.app[REGISTRY].create_device(device, actor=user.name, source=source_of(request))
    return json_response(body, status=201)


@operation(
    "Devices, optionally one resident's",
    right="devices:read",
    query=(query("resident_id", {"type": "string"}), _STATUS),
)
async def list_devices(request: web.Request) -> web.Response:
    require(request, "devices:read")
    devices = await request.app[REGISTRY].list_devices(
        resident_id=request.query.get("resident_id") or None, status=request.query.get("status", "active")
    )
    return json_response({"devices": devices})


@operation("One device with its recent history", right="devices:read")
async def get_device(request: web.Request) -> web.Response:
    require(request, "devices:read")
    registry = request.app[REGISTRY]
    device_id = _device_id(request)
    body = await registry.get_device(device_id)
    body["history"] = await registry.history(f"device:{device_id}", 50)
    return json_response(body)


@operation(
    "Change some of a device's fields",
    right="devices:write",
    body=Body(Device, partial=True),
    errors={409: "retired, or the new address is another device's"},
)
async def edit_device(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    registry = request.app[REGISTRY]
    current = await registry.device_model(_device_id(request))
    device = _merged(Device, current, await read_json(request))
    body = await registry.update_device(device, actor=user.name, source=source_of(request))
    return json_response(body)


@operation(
    "Retire a device (it stays in the records)",
    right="devices:write",
    body=Body(RetireBody, required=False),
    errors={409: "already retired"},
)
async def retire_device(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    body = validated(RetireBody, await _body(request))
    result = await request.app[REGISTRY].retire(
        _device_id(request), actor=user.name, source=source_of(request), reason=body.reason
    )
    credentials = request.app[OPTIONS].credentials
    if credentials is not None:
        await credentials.sync()
    return json_response(result)


@operation(
    "Link a device to a resident (or unlink it with resident_id null)", right="devices:write", body=LinkBody
)
async def link(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    body = validated(LinkBody, await read_json(request))
    result = await request.app[REGISTRY].link(
        body.device_id, body.resident_id, actor=user.name, source=source_of(request)
    )
    return json_response(result)


@operation(
    "Issue the device's MQTT password (shown once; no body)",
    right="devices:write",
    status=201,
    errors={409: "this bridge does not manage broker credentials"},
)
async def issue_credential(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    options = request.app[OPTIONS]
    device_id = _device_id(request)
    if options.credentials is None:
        return json_error(
            409,
            "conflict",
            {
                "message": "this bridge does not manage broker credentials (credentials.enabled is false)",
                "holder": None,
            },
        )
    password = await options.credentials.issue(device_id, actor=user.name, source=source_of(request))
    return json_response(
        {
            "device_id": device_id,
            "username": device_id,
            "password": password,
            "publish_topic": f"{options.topic_root}/v1/{device_id}/event",
            "note": "shown once; store it in the unit now",
        },
        status=201,
    )


# -- remote configuration ------------------------------------------------------------------------
@operation(
    "Send settings to a unit (applied when it confirms)",
    right="devices:write",
    body=ConfigBody,
    status=202,
    errors={409: "the device is retired or cannot be configured remotely"},
)
async def set_config(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    body = validated(ConfigBody, await read_json(request))
    status = await request.app[REGISTRY].request_config(
        _device_id(request), body.settings, actor=user.name, source=source_of(request)
    )
    return json_response(status, status=202)


@operation("The unit's settings: confirmed and pending", right="devices:read")
async def get_config(request: web.Request) -> web.Response:
    require(request, "devices:read")
    return json_response(await request.app[REGISTRY].config_status(_device_id(request)))


# -- commissioning -------------------------------------------------------------------------------
@operation(
    "Start a commissioning visit (the unit's alarms are tests meanwhile)",
    right="devices:write",
    body=Body(VisitBody, required=False),
    status=201,
    errors={409: "a visit is already open"},
)
async def start_visit(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    body = validated(VisitBody, await _body(request))
    options = request.app[OPTIONS]
    minutes = body.minutes or options.commissioning_minutes
    if minutes > options.max_commissioning_minutes:
        raise _unprocessable(
            [
                {
                    "field": "minutes",
                    "message": f"at most {options.max_commissioning_minutes:g} minutes of test mode",
                }
            ]
        )
    visit = await request.app[REGISTRY].start_visit(
        _device_id(request), installer=user.name, minutes=minutes, peripherals=body.peripherals
    )
    return json_response(visit, status=201)


@operation("The commissioning visit: which alarms the centre has confirmed", right="devices:read")
async def get_visit(request: web.Request) -> web.Response:
    require(request, "devices:read")
    return json_response(await request.app[REGISTRY].visit(_device_id(request)))


@operation(
    "Finish the commissioning visit",
    right="devices:write",
    body=Body(FinishBody, required=False),
    errors={409: "no open visit"},
)
async def finish_visit(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    body = validated(FinishBody, await _body(request))
    visit = await request.app[REGISTRY].finish_visit(_device_id(request), actor=user.name, note=body.note)
    return json_response(visit)


# -- bulk ----------------------------------------------------------------------------------------
def _format(request: web.Request) -> tuple[str, str]:
    fmt = request.query.get("format", "yaml")
    kind = request.query.get("kind", "")
    if fmt not in ("csv", "yaml"):
        raise _unprocessable([{"field": "format", "message": "must be csv or yaml"}])
    if fmt == "csv" and kind not in ("residents", "devices"):
        raise _unprocessable([{"field": "kind", "message": "CSV needs kind=residents or kind=devices"}])
    return fmt, kind


_FORMAT = query("format", {"type": "string", "enum": ["yaml", "csv"], "default": "yaml"})
_KIND = query("kind", {"type": "string", "enum": ["residents", "devices"]}, "which table, for CSV")
_FLAG = {"type": "string", "enum": ["1", "true", "yes", "0", "false", "no"]}


@operation(
    "Import residents and devices from YAML or CSV (installer or admin)",
    right="devices:write",
    body=Body({"type": "string"}, media_types=_FILE_TYPES),
    query=(
        _FORMAT,
        _KIND,
        query("dry_run", _FLAG, "check only"),
        query("update", _FLAG, "change existing rows"),
    ),
    description="Needs devices:write and residents:write. The body is the file (text/csv or "
    "application/yaml).",
    other={
        422: {
            "description": "a malformed file, or a report naming every row's problems",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def import_registry(request: web.Request) -> web.Response:
    user = require(request, "devices:write")
    require(request, "residents:write")
    fmt, kind = _format(request)
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise _unprocessable([{"field": "(file)", "message": "the file is not UTF-8 text"}]) from None
    try:
        batch = parse_csv(text, kind) if fmt == "csv" else parse_yaml(text)  # type: ignore[arg-type]
    except MalformedFile as exc:
        return json_response({"error": "malformed file", "detail": str(exc)}, status=422)
    report = await request.app[REGISTRY].import_batch(
        batch,
        dry_run=request.query.get("dry_run", "") in ("1", "true", "yes"),
        update=request.query.get("update", "") in ("1", "true", "yes"),
        actor=user.name,
        source=source_of(request),
        # What the role may not see was left out of its export: an update keeps the stored values.
        keep=hidden_keys(user.role),
    )
    return json_response(report.to_json(), status=422 if report.errors else 200)


@operation(
    "Export residents and devices as YAML or CSV",
    right="devices:read",
    answer_types=_FILE_TYPES,
    query=(_FORMAT, _KIND),
    description="Needs devices:read and residents:read. Resident fields your role may not see are left "
    "out (docs/data-protection.md); each resident exported is recorded in the audit of reads.",
)
async def export_registry(request: web.Request) -> web.Response:
    require(request, "devices:read")
    who = viewer(request, "residents:read")
    fmt, kind = _format(request)
    registry = request.app[REGISTRY]
    residents, devices = await registry.export()
    omit = hidden_keys(who.role)
    if fmt == "yaml" or kind == "residents":
        # Each exported resident is a read of the fields the export carries.
        records = [r.model_dump(mode="json", exclude=set(omit)) for r in residents]
        await disclose.residents(registry.store, who, records, purpose=f"api.registry_export.{fmt}")
    private = {"Cache-Control": "no-store"}  # personal data: never kept by a proxy or a browser
    if fmt == "yaml":
        return web.Response(
            text=to_yaml(residents, devices, omit=omit), content_type="application/yaml", headers=private
        )
    text = to_csv("residents", residents, omit=omit) if kind == "residents" else to_csv("devices", devices)
    return web.Response(text=text, content_type="text/csv", headers=private)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_registry_routes(app: web.Application, registry: Registry, options: RegistryOptions) -> None:
    app[REGISTRY] = registry
    app[OPTIONS] = options
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/api/v1/residents", create_resident),
        ("GET", "/api/v1/residents", list_residents),
        ("GET", "/api/v1/residents/{resident_id}", get_resident),
        ("PATCH", "/api/v1/residents/{resident_id}", edit_resident),
        ("POST", "/api/v1/devices", create_device),
        ("GET", "/api/v1/devices", list_devices),
        ("GET", "/api/v1/devices/{device_id}", get_device),
        ("PATCH", "/api/v1/devices/{device_id}", edit_device),
        ("POST", "/api/v1/devices/{device_id}/retire", retire_device),
        ("POST", "/api/v1/devices/{device_id}/credential", issue_credential),
        ("POST", "/api/v1/devices/{device_id}/config", set_config),
        ("GET", "/api/v1/devices/{device_id}/config", get_config),
        ("POST", "/api/v1/links", link),
        ("POST", "/api/v1/commissioning/{device_id}", start_visit),
        ("GET", "/api/v1/commissioning/{device_id}", get_visit),
        ("POST", "/api/v1/commissioning/{device_id}/finish", finish_visit),
        ("POST", "/api/v1/registry/import", import_registry),
        ("GET", "/api/v1/registry/export", export_registry),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
