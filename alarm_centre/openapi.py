"""The OpenAPI description served at ``/api/v1/openapi.json``."""

from __future__ import annotations

import copy
import inspect
from typing import Any

from aiohttp import web


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_ALERT_ID = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMON_ERRORS = {
    "401": _error("no or bad bearer token"),
    "403": _error("the role lacks the right"),
    "404": _error("no such alert"),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Telecare bridge API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "detail": {}},
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
                    "resident_id": {"type": "string", "nullable": True},
                    "type": {"type": "string"},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 3},
                    "state": {"type": "string", "enum": ["raised", "acknowledged", "resolved"]},
                    "raised_at": {"type": "string", "format": "date-time"},
                    "acknowledged_by": {"type": "string", "nullable": True},
                    "outcome": {"type": "string", "nullable": True},
                    "repeat_count": {"type": "integer"},
                    "test": {"type": "boolean"},
                    "unregistered": {"type": "boolean"},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/alerts": {
            "get": {
                "summary": "Alerts in queue order (priority, then age)",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": ["open", "raised", "acknowledged", "resolved", "all"],
                        },
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "a page of alerts",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "alerts": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Alert"},
                                        },
                                        "next_cursor": {"type": "string", "nullable": True},
                                    },
                                }
                            }
                        },
                    },
                    "422": _error("bad state, limit or cursor"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/alerts/{alert_id}": {
            "get": {
                "summary": "One alert with its timeline",
                "parameters": [_ALERT_ID],
                "responses": {"200": {"description": "the alert"}, **_COMMON_ERRORS},
            }
        },
        "/api/v1/alerts/{alert_id}/acknowledge": {
            "post": {
                "summary": "Claim an alert",
                "parameters": [_ALERT_ID],
                "responses": {
                    "200": {"description": "acknowledged"},
                    "409": _error("held by another operator, or already resolved"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/alerts/{alert_id}/resolve": {
            "post": {
                "summary": "Resolve an acknowledged alert with an outcome code",
                "parameters": [_ALERT_ID],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["outcome"],
                                "properties": {"outcome": {"type": "string"}, "note": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": {"description": "resolved"},
                    "409": _error("not held by you, or not open"),
                    "422": _error("unknown outcome"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/alerts/{alert_id}/reassign": {
            "post": {
                "summary": "Hand an alert to another operator (supervisor, admin)",
                "parameters": [_ALERT_ID],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["to"],
                                "properties": {"to": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": {"description": "reassigned"},
                    "409": _error("already resolved"),
                    "422": _error("no such operator"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/alerts/{alert_id}/notes": {
            "post": {
                "summary": "Add a note to the timeline",
                "parameters": [_ALERT_ID],
                "responses": {"201": {"description": "noted"}, **_COMMON_ERRORS},
            }
        },
        "/api/v1/stream": {
            "get": {
                "summary": "Server-sent events of alert changes",
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
        "/api/v1/devices": {
            "post": {
                "summary": "Register a device (installer, admin)",
                "responses": {
                    "201": {"description": "registered"},
                    "422": _error("a field breaks the rules"),
                },
            }
        },
        "/api/v1/residents": {
            "post": {
                "summary": "Register a resident (installer, admin)",
                "responses": {"201": {"description": "registered"}},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Ready: subscribed to device events and the store accepts writes",
                "security": [],
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready, with reasons"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "text format"}},
            }
        },
    },
}


#: Routes left out of the description: the console's pages and its static files.
_UNDESCRIBED = ("/console", "/static", "/login", "/logout", "/")


def describe(app: web.Application) -> dict[str, Any]:
    """The hand-written description above, plus every other route the app serves (features add
    theirs at start-up), each summarised by its handler's docstring."""
    spec = copy.deepcopy(OPENAPI)
    paths: dict[str, Any] = spec["paths"]
    for route in app.router.routes():
        method = route.method.lower()
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if method in ("head", "*") or not path or path == "/" or path.startswith(_UNDESCRIBED[:-1]):
            continue
        operations = paths.setdefault(path, {})
        if method in operations:
            continue
        doc = inspect.getdoc(route.handler) or ""
        operation: dict[str, Any] = {
            "summary": doc.splitlines()[0] if doc else f"{method.upper()} {path}",
            "responses": {"200": {"description": "success"}, "4XX": _error("a JSON error")},
        }
        params = [p.strip("{}").split(":")[0] for p in path.split("/") if p.startswith("{")]
        if params:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in params
            ]
        if path in ("/alexa",) or path.startswith("/twilio/"):
            operation["security"] = []
        operations[method] = operation
    return spec
