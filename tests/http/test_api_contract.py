"""The API description is the API: every write states its body, closed values are enums, errors are
documented where they occur; 405 names the allowed methods; JSON answers are neither sniffed nor cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge

from alarm_centre.alerts.lifecycle import OPERATOR_OUTCOMES, Outcome

#: Writes that take no body: claiming an alert, issuing a unit's MQTT password.
BODILESS = {
    ("post", "/api/v1/alerts/{alert_id}/acknowledge"),
    ("post", "/api/v1/devices/{device_id}/credential"),
    ("post", "/api/v1/privacy/retention/run"),
    ("post", "/api/v1/calls/{call_id}/hangup"),
    ("post", "/api/v1/calls/{call_id}/decline"),
}


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


async def served_spec(bridge: RunningBridge) -> dict[str, Any]:
    status, spec = await bridge.call("GET", "/api/v1/openapi.json", user=None)
    assert status == 200 and spec["openapi"].startswith("3.1")
    return spec


async def test_every_route_is_described_and_every_write_has_a_body(embedded_bridge: RunningBridge) -> None:
    spec = await served_spec(embedded_bridge)
    writes = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert not op.get("x-undocumented"), f"{method} {path} has no description beside its handler"
            if method in ("post", "put", "patch") and (method, path) not in BODILESS:
                writes += 1
                content = op.get("requestBody", {}).get("content", {})
                assert content, f"{method} {path} does not describe its request body"
                for media in content.values():
                    assert resolve(spec, media["schema"]), f"{method} {path}: empty body schema"
    assert writes >= 15


async def test_errors_are_documented_where_they_occur(embedded_bridge: RunningBridge) -> None:
    spec = await served_spec(embedded_bridge)
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            where = f"{method} {path}"
            if op.get("security") != []:
                assert {"401", "403"} <= codes, where
            if "{" in path:
                assert "404" in codes, where
            body = op.get("requestBody", {}).get("content", {})
            if "application/json" in body:
                assert {"400", "413", "415", "422"} <= codes, where
            if any(p["in"] == "query" for p in op.get("parameters", [])):
                assert "422" in codes, where
    acknowledge = spec["paths"]["/api/v1/alerts/{alert_id}/acknowledge"]["post"]["responses"]
    assert "409" in acknowledge and "held by another operator" in acknowledge["409"]["description"]


async def test_outcome_codes_and_priorities_are_enums(embedded_bridge: RunningBridge) -> None:
    spec = await served_spec(embedded_bridge)
    resolve_body = resolve(
        spec,
        spec["paths"]["/api/v1/alerts/{alert_id}/resolve"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"],
    )
    outcome = resolve_body["properties"]["outcome"]
    assert outcome["enum"] == list(OPERATOR_OUTCOMES) and "cleared_by_device" not in outcome["enum"]
    for code in Outcome:  # explained for people, not only listed
        assert f"`{code.value}`:" in spec["info"]["description"]
    alert = resolve(spec, {"$ref": "#/components/schemas/Alert"})
    assert alert["properties"]["priority"]["enum"] == [1, 2, 3]
    types = alert["properties"]["type"]["enum"]  # every type that raises an alert, and only those
    assert "unknown_signal" in types and "pendant" in types and "no_heartbeat" in types
    assert not {"heartbeat", "restored", "mains_restored", "cancel"} & set(types)
    for method in ("put", "delete"):
        params = spec["paths"]["/api/v1/escalation/policies/{priority}"][method]["parameters"]
        assert params[0]["schema"] == {"type": "integer", "enum": [1, 2, 3]}
    steps = resolve(
        spec,
        spec["paths"]["/api/v1/escalation/policies/{priority}"]["put"]["requestBody"]["content"][
            "application/json"
        ]["schema"],
    )["properties"]["steps"]
    assert steps["items"]["properties"]["action"]["enum"] == ["highlight", "sms", "call"]
    device = resolve(
        spec, spec["paths"]["/api/v1/devices"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    kinds = resolve(spec, device["properties"]["kind"])["enum"]
    assert kinds == ["gsm_unit", "ip_unit", "serial_unit", "alexa"]


async def test_priority_4_policy_is_refused(embedded_bridge: RunningBridge) -> None:
    status, body = await embedded_bridge.call(
        "PUT",
        "/api/v1/escalation/policies/4",
        user="ada",
        role="admin",
        json={"steps": [{"after_s": 30, "action": "highlight"}]},
    )
    assert 400 <= status < 500 and body["error"] == "not found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/alerts", {"GET"}),
        ("PUT", "/api/v1/alerts/1/acknowledge", {"POST"}),
        ("POST", "/api/v1/escalation/policies/1", {"PUT", "DELETE"}),
        ("PATCH", "/healthz", {"GET"}),
    ],
)
async def test_405_names_the_allowed_methods(
    embedded_bridge: RunningBridge, method: str, path: str, allowed: set[str]
) -> None:
    token = await embedded_bridge.token("ada", "admin")
    async with embedded_bridge.session.request(
        method, embedded_bridge.url + path, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        body = await resp.json()
        assert resp.status == 405 and body["error"] == "method not allowed"
        allow = {m.strip() for m in resp.headers["Allow"].split(",")}
        assert allowed == allow - {"HEAD"} and set(body["detail"]["allowed"]) == allow


@pytest.mark.parametrize(
    ("method", "path", "user", "status"),
    [
        ("GET", "/api/v1/alerts", "op1", 200),
        ("GET", "/api/v1/openapi.json", None, 200),
        ("GET", "/healthz", None, 200),
        ("GET", "/api/v1/alerts", None, 401),
        ("GET", "/api/v1/alerts/42", "op1", 404),
        ("GET", "/api/v1/alerts?limit=0", "op1", 422),
        ("POST", "/api/v1/devices", "op1", 403),
        ("DELETE", "/api/v1/alerts", "op1", 405),
    ],
)
async def test_json_answers_are_not_sniffed_or_cached(
    embedded_bridge: RunningBridge, method: str, path: str, user: str | None, status: int
) -> None:
    headers = {"Authorization": f"Bearer {await embedded_bridge.token(user)}"} if user else {}
    async with embedded_bridge.session.request(method, embedded_bridge.url + path, headers=headers) as resp:
        await resp.read()
        assert resp.status == status and resp.content_type == "application/json"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"


async def test_other_answers_are_not_sniffed(embedded_bridge: RunningBridge) -> None:
    async with embedded_bridge.session.get(embedded_bridge.url + "/metrics") as resp:
        await resp.read()
        assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"


def test_operating_guide_lists_every_outcome_code() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "operating.md").read_text()
    for code in Outcome:
        assert f"`{code.value}`" in guide, f"docs/operating.md does not explain outcome {code.value}"


async def test_the_right_each_operation_names_is_the_one_it_checks(embedded_bridge: RunningBridge) -> None:
    """x-right in the description and require() in the handler agree, for every role."""
    from alarm_centre.alerts.model import ROLE_RIGHTS, Role

    spec = await served_spec(embedded_bridge)
    filled = {
        "alert_id": "1",
        "incident_id": "1",
        "device_id": "unit-z",
        "resident_id": "res-z",
        "priority": "3",
        "call_id": "1",
        "recording_id": "1",
        "review_id": "1",
    }
    checked = 0
    for path, operations in spec["paths"].items():
        url = path.format(**filled)
        for method, op in operations.items():
            right = op.get("x-right")
            if right is None or path == "/api/v1/stream":
                continue
            for role in Role:
                status, body = await embedded_bridge.call(
                    method.upper(), url, user=f"r-{role.value}", role=role.value, json={}
                )
                holds = right in ROLE_RIGHTS[role]
                assert (status == 403) is not holds, (method, path, role.value, status, body)
                checked += 1
    assert checked >= 150
