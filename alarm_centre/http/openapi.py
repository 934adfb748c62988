"""The OpenAPI 3.1 description served at ``/api/v1/openapi.json``, built from the routes the app serves.

Each handler states what it takes and answers with :func:`operation`, beside its code; :func:`describe`
walks the router, so the description is the API: a route served without a description is listed as
undocumented (and a test fails) rather than silently missing. Request bodies come from the same pydantic
models the handlers validate with. The errors every operation can answer follow from what it reads: a
bearer token (401, 403), a path id (404), a JSON body (400, 413, 415, 422), query parameters (422).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from alarm_centre.alerts.lifecycle import OPERATOR_OUTCOMES, OUTCOME_MEANINGS, AlertState, Outcome
from alarm_centre.alerts.model import ROLE_RIGHTS
from devices.events import DEVICE_ID_RE
from devices.vocabulary import ALERT_TYPES, PRIORITIES

Schema = Mapping[str, Any] | type[BaseModel]
H = TypeVar("H", bound=Callable[..., Any])

#: A row id in a path: ASCII digits only, at most a signed 64-bit integer (alarm_centre/ids.py).
ROW_ID: dict[str, Any] = {"type": "string", "pattern": "^[0-9]{1,19}$"}
#: The device-id rule, which resident ids follow too (devices/events.py).
DEVICE_ID: dict[str, Any] = {"type": "string", "pattern": f"^{DEVICE_ID_RE.pattern}$"}
PRIORITY: dict[str, Any] = {"type": "integer", "enum": list(PRIORITIES)}

#: Every path parameter the API uses: its schema and what a 404 for it means.
PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "alert_id": (ROW_ID, "no such alert"),
    "incident_id": (ROW_ID, "no such incident"),
    "device_id": (DEVICE_ID, "no such device"),
    "resident_id": (DEVICE_ID, "no such resident"),
    "priority": (PRIORITY, "not an alert priority (1, 2 or 3)"),
    "call_id": (ROW_ID, "no such call"),
    "recording_id": (ROW_ID, "no such recording (or its audio was deleted)"),
    "review_id": (ROW_ID, "no such call review"),
}


def outcome_guide() -> str:
    """The outcome codes with their meanings, as Markdown for people reading the description."""
    return "\n".join(f"- `{code.value}`: {meaning}" for code, meaning in OUTCOME_MEANINGS.items())


@dataclass(frozen=True, slots=True)
class Body:
    """A request body: its schema and media types; ``partial`` for a PATCH (any subset of the fields)."""

    schema: Schema
    required: bool = True
    media_types: tuple[str, ...] = ("application/json",)
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    #: The right the caller's role needs (alarm_centre/alerts/model.py); None for a public route.
    right: str | None
    body: Body | None = None
    query: tuple[dict[str, Any], ...] = ()
    status: int = 200
    answer: Schema | None = None
    answer_types: tuple[str, ...] = ("application/json",)
    errors: Mapping[int, str] = field(default_factory=dict)
    #: Responses that are not the usual JSON error, as OpenAPI response objects.
    other: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    #: Public routes that authenticate their own way (a signature), documented as such.
    signed: str | None = None


_OPERATIONS: dict[Any, Operation] = {}


def operation(
    summary: str | None = None, *, right: str | None, body: Body | Schema | None = None, **details: Any
) -> Callable[[H], H]:
    """Describe a handler for the API description (``summary`` defaults to its docstring's first line)."""

    def mark(handler: H) -> H:
        doc = inspect.getdoc(handler) or ""
        text = summary or (doc.splitlines()[0] if doc else handler.__name__)
        request_body = body if body is None or isinstance(body, Body) else Body(body)
        _OPERATIONS[handler] = Operation(text, right, request_body, **details)
        return handler

    return mark


def query(name: str, schema: Mapping[str, Any], description: str = "") -> dict[str, Any]:
    """A query parameter for :func:`operation`'s ``query``."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": dict(schema),
        "description": description,
    }


def ref(name: str) -> dict[str, Any]:
    """A reference to one of the shared schemas (:data:`SCHEMAS`)."""
    return {"$ref": f"#/components/schemas/{name}"}


def described(handler: Callable[..., Any]) -> Operation | None:
    """The description of a route's handler (a bound method is looked up by its function)."""
    return _OPERATIONS.get(getattr(handler, "__func__", handler))


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_NULLABLE_TEXT = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {}},
        "description": "Every error: a short kind and a detail naming what was wrong (a field, a rule).",
    },
    "Alert": {
        "type": "object",
        "required": [
            "id",
            "device_id",
            "resident_id",
            "type",
            "priority",
            "state",
            "raised_at",
            "acknowledged_by",
            "outcome",
            "repeat_count",
            "test",
            "unregistered",
        ],
        "properties": {
            "id": {"type": "string"},
            "device_id": {"type": "string"},
            "resident_id": _NULLABLE_TEXT,
            "type": {
                "type": "string",
                "enum": [t.value for t in ALERT_TYPES],
                "description": "the event vocabulary's alert types; an `unknown_signal` shows the protocol "
                "and raw code the unit sent in `data.event_data.protocol` and `data.event_data.code`",
            },
            "priority": {**PRIORITY, "description": "1 emergency, 2 urgent, 3 technical"},
            "state": {"type": "string", "enum": [s.value for s in AlertState]},
            "raised_at": _TIME,
            "acknowledged_at": _NULLABLE_TIME,
            "acknowledged_by": _NULLABLE_TEXT,
            "resolved_at": _NULLABLE_TIME,
            "resolved_by": _NULLABLE_TEXT,
            "outcome": {"enum": [*(o.value for o in Outcome), None], "description": outcome_guide()},
            "note": _NULLABLE_TEXT,
            "repeat_count": {"type": "integer", "minimum": 0},
            "test": {"type": "boolean"},
            "unregistered": {"type": "boolean"},
            "clock_skew": {"type": "boolean"},
            "updated_at": _NULLABLE_TIME,
            "data": {"type": "object"},
        },
    },
    "TimelineEntry": {
        "type": "object",
        "required": ["at", "action", "actor", "source", "detail"],
        "properties": {
            "at": _TIME,
            "action": {"type": "string"},
            "actor": {"type": "string"},
            "source": {"type": "string", "enum": ["console", "api", "device", "voice", "sms", "system"]},
            "detail": {},
        },
    },
    "AlertWithTimeline": {
        "allOf": [
            {"$ref": "#/components/schemas/Alert"},
            {
                "type": "object",
                "required": ["timeline"],
                "properties": {
                    "timeline": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineEntry"}}
                },
            },
        ]
    },
    "AlertPage": {
        "type": "object",
        "required": ["alerts", "next_cursor"],
        "properties": {
            "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
            "next_cursor": _NULLABLE_TEXT,
        },
    },
    "OutcomeCode": {
        "type": "string",
        "enum": list(OPERATOR_OUTCOMES),
        "description": "Why an alert was resolved:\n" + outcome_guide(),
    },
}

#: Routes left out of the description: the console's pages, its static files and its sign-in.
_UNDESCRIBED = ("/console", "/static", "/login", "/logout")


def _roles_with(right: str) -> str:
    return ", ".join(role.value for role, rights in ROLE_RIGHTS.items() if right in rights)


def _responses(op: Operation, path_params: list[str], answer: dict[str, Any] | None) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "success"}
    if answer is not None or op.answer_types != ("application/json",):
        ok["content"] = {t: {"schema": copy.deepcopy(answer or {})} for t in op.answer_types}
    responses: dict[str, Any] = {str(op.status): ok}
    if op.right is not None:
        responses["401"] = _error("no bearer token (or session), or an unknown or disabled one")
        responses["403"] = _error(f"the caller's role lacks {op.right} (held by: {_roles_with(op.right)})")
    if path_params:
        responses["404"] = _error("; ".join(PATH_PARAMETERS[p][1] for p in path_params))
    if op.body is not None:
        responses["413"] = _error("the request body is too large")
        responses["422"] = _error("a field breaks its rule; detail names the field")
        if op.body.media_types == ("application/json",):
            responses["400"] = _error("malformed JSON, or not a JSON object")
            responses["415"] = _error("the body is not application/json")
    if op.query:
        responses["422"] = _error("a query parameter breaks its rule; detail names it")
    for status, description in op.errors.items():
        responses[str(status)] = _error(description)
    for status, response in op.other.items():
        responses[str(status)] = copy.deepcopy(dict(response))
    return dict(sorted(responses.items()))


def describe(app: web.Application) -> dict[str, Any]:
    """The description of every route ``app`` serves (features add theirs at start-up)."""
    described_ops: list[tuple[str, str, Operation | None, Callable[..., Any]]] = []
    for route in app.router.routes():
        method = route.method.lower()
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if method in ("head", "*") or not path or path == "/" or path.startswith(_UNDESCRIBED):
            continue
        described_ops.append((path, method, described(route.handler), route.handler))

    models: list[type[BaseModel]] = []
    for _, _, op, _ in described_ops:
        for schema in (op.body.schema if op and op.body else None, op.answer if op else None):
            if isinstance(schema, type) and schema not in models:
                models.append(schema)
    refs, generated = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas = {**copy.deepcopy(SCHEMAS), **generated.get("$defs", {})}

    def resolve(schema: Schema | None, *, partial: bool = False) -> dict[str, Any] | None:
        if schema is None:
            return None
        if not isinstance(schema, type):
            return copy.deepcopy(dict(schema))
        ref: dict[str, Any] = dict(refs[(schema, "validation")])
        if not partial:
            return ref
        name = ref["$ref"].rsplit("/", 1)[-1]
        changes = {k: v for k, v in copy.deepcopy(schemas[name]).items() if k != "required"}
        changes["description"] = f"Any of {name}'s fields; the others keep their values."
        changes["minProperties"] = 1
        schemas[f"{name}Changes"] = changes
        return {"$ref": f"#/components/schemas/{name}Changes"}

    paths: dict[str, Any] = {}
    for path, method, op, handler in described_ops:
        operations = paths.setdefault(path, {})
        if method in operations:
            continue
        names = [p.strip("{}").split(":")[0] for p in path.split("/") if p.startswith("{")]
        parameters = [
            {"name": n, "in": "path", "required": True, "schema": dict(PATH_PARAMETERS[n][0])} for n in names
        ]
        if op is None:
            doc = inspect.getdoc(handler) or ""
            operations[method] = {
                "summary": doc.splitlines()[0] if doc else f"{method.upper()} {path}",
                "x-undocumented": True,
                "responses": {"200": {"description": "success"}, "4XX": _error("a JSON error")},
                **({"parameters": parameters} if parameters else {}),
            }
            continue
        entry: dict[str, Any] = {"summary": op.summary, "operationId": f"{method}_{path.strip('/')}"}
        if op.description:
            entry["description"] = op.description
        if op.right is None:
            entry["security"] = []
            if op.signed:
                entry["description"] = entry.get("description", "") + f"\n\nAuthenticated by {op.signed}."
        else:
            entry["x-right"] = op.right
        if parameters or op.query:
            entry["parameters"] = [*parameters, *copy.deepcopy(list(op.query))]
        if op.body is not None:
            schema = resolve(op.body.schema, partial=op.body.partial)
            entry["requestBody"] = {
                "required": op.body.required,
                "content": {t: {"schema": copy.deepcopy(schema)} for t in op.body.media_types},
            }
        entry["responses"] = _responses(op, names, resolve(op.answer))
        operations[method] = entry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Telecare bridge API",
            "version": "1",
            "description": "Alerts, the registry of units and residents, escalation and voice links. "
            'Errors are JSON `{"error": str, "detail": ...}`; a method a path does not serve is a 405 '
            "with an `Allow` header.\n\nOutcome codes (resolving an alert):\n" + outcome_guide(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
