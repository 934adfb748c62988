"""Reading a request's input: path ids by the one id rule, bounded query numbers, strict JSON bodies
validated by a model. Each failure is a JSON 4xx naming what is wrong."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from alarm_centre.http.errors import json_exception
from alarm_centre.ids import row_id
from devices import strict_json
from devices.events import DEVICE_ID_RE
from devices.numbers import whole_number
from devices.registry import errors_of


def path_id(request: web.Request, name: str, what: str) -> int:
    """The row id in path segment ``name`` (ASCII digits, 1 to 2**63-1); a JSON 404 naming ``what`` if not."""
    raw = request.match_info[name]
    key = row_id(raw)
    if key is None:
        raise json_exception(web.HTTPNotFound, "not found", f"no {what} {raw[:40]!r}")
    return key


def path_name(request: web.Request, name: str, what: str) -> str:
    """The device or resident id in path segment ``name`` (the device-id rule: 1-64 of ``A-Za-z0-9._-``);
    a JSON 404 naming ``what`` if it breaks the rule (no such row can exist)."""
    raw = request.match_info[name]
    if DEVICE_ID_RE.fullmatch(raw) is None:
        raise json_exception(web.HTTPNotFound, "not found", f"no {what} {raw[:64]!r}")
    return raw


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as a whole number from ``low`` to ``high`` (``default`` when absent);
    a JSON 422 naming the parameter otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = whole_number(raw, low=low, high=high)
    if value is None:
        raise json_exception(
            web.HTTPUnprocessableEntity,
            "invalid request",
            f"{name} must be a whole number from {low} to {high}",
        )
    return value


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400/415 naming what is wrong."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": "unsupported media type", "detail": "send application/json"}),
            content_type="application/json",
        )
    try:
        body = strict_json.loads(await request.read())
    except strict_json.JSONRefused as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "malformed JSON", "detail": exc.message}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "malformed JSON", "detail": "expected an object"}),
            content_type="application/json",
        )
    return body


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        # errors_of: field and message only, never the input (a phone number, a note) echoed back.
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"error": "invalid request", "detail": errors_of(exc)}),
            content_type="application/json",
        ) from None
