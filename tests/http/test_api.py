"""The HTTP API: contract shapes, auth and roles, and a JSON error with the right code for bad requests."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import RunningBridge

from devices.events import DeviceEvent
from devices.vocabulary import EventType


async def raise_alert(bridge: RunningBridge, device_id: str, event_type: str = "pendant") -> str:
    result = await bridge.bridge.intake.submit(
        DeviceEvent(
            device_id,
            f"{device_id}-{event_type}-{datetime.now(UTC).timestamp()}",
            EventType(event_type),
            datetime.now(UTC),
        )
    )
    assert result.alert_id is not None
    return result.alert_id


async def test_unknown_path_is_json_404(embedded_bridge: RunningBridge) -> None:
    status, body = await embedded_bridge.call("GET", "/api/v1/nothing-here")
    assert status == 404 and body["error"] == "not found"
    status, body = await embedded_bridge.call("DELETE", "/api/v1/alerts")
    assert status == 405 and body["error"] == "method not allowed"


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer short", "Basic dXNlcjpwYXNz", "Bearer " + "A" * 43]
)
async def test_bad_tokens_are_401(embedded_bridge: RunningBridge, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    status, body = await embedded_bridge.call("GET", "/api/v1/alerts", user=None, headers=headers)
    assert status == 401 and body["error"] == "unauthorized"


async def test_installer_cannot_handle_alerts(embedded_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(embedded_bridge, "unit-a")
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="ian", role="installer"
    )
    assert status == 403 and "installer" in body["detail"]
    status, body = await embedded_bridge.call(
        "POST", "/api/v1/devices", user="olive", role="operator", json={"id": "u9", "kind": "gsm_unit"}
    )
    assert status == 403


async def test_malformed_json_and_wrong_types(embedded_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(embedded_bridge, "unit-b")
    await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
    path = f"/api/v1/alerts/{alert_id}/resolve"
    status, body = await embedded_bridge.call(
        "POST", path, data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["error"] == "malformed JSON"
    status, body = await embedded_bridge.call(
        "POST", path, data=b"[]", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    status, body = await embedded_bridge.call(
        "POST", path, data=b"outcome=ok", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415
    status, body = await embedded_bridge.call("POST", path, json={"outcome": 5})
    assert status == 422 and body["detail"][0]["field"] == "outcome"
    status, body = await embedded_bridge.call("POST", path, json={"outcome": "teleported"})
    assert status == 422 and "unknown outcome" in body["detail"]
    status, body = await embedded_bridge.call("POST", path, json={"outcome": "resident_ok", "extra": 1})
    assert status == 422 and body["detail"][0]["field"] == "extra"


async def test_oversized_body_is_413(embedded_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(embedded_bridge, "unit-c")
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/notes", json={"note": "x" * 200_000}
    )
    assert status == 413 and body["error"] == "request body too large"


async def test_illegal_transitions_are_409(embedded_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(embedded_bridge, "unit-d")
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "resident_ok"}
    )
    assert status == 409 and body["error"] == "illegal transition" and body["detail"]["state"] == "raised"
    await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
    status, _ = await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
    assert status == 200, "acknowledging again as the holder is harmless"
    await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/resolve", json={"outcome": "false_alarm"})
    status, body = await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
    assert status == 409 and body["detail"]["state"] == "resolved"


@pytest.mark.parametrize("alert_id", ["999999", "abc", "1%20OR%201=1"])
async def test_unknown_alert_ids_are_404(embedded_bridge: RunningBridge, alert_id: str) -> None:
    status, body = await embedded_bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 404 and body["error"] == "not found"
    status, body = await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
    assert status == 404


async def test_paging_with_cursor_keeps_queue_order(embedded_bridge: RunningBridge) -> None:
    ids = [await raise_alert(embedded_bridge, f"unit-p{n}", "low_battery") for n in range(5)]
    urgent = await raise_alert(embedded_bridge, "unit-p9", "fall")
    seen: list[str] = []
    cursor = None
    while True:
        query = "/api/v1/alerts?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body = await embedded_bridge.call("GET", query)
        assert status == 200 and len(body["alerts"]) <= 2
        seen += [a["id"] for a in body["alerts"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [urgent, *ids]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "state=lost", "cursor=%%%"])
async def test_bad_list_parameters_are_422(embedded_bridge: RunningBridge, query: str) -> None:
    status, body = await embedded_bridge.call("GET", f"/api/v1/alerts?{query}")
    assert status == 422, body


@pytest.mark.parametrize("device_id", ["bad id", "x" * 65, "", "a/b"])
async def test_device_id_rule_is_422_naming_the_field(embedded_bridge: RunningBridge, device_id: str) -> None:
    status, body = await embedded_bridge.call(
        "POST", "/api/v1/devices", user="ian", role="installer", json={"id": device_id, "kind": "gsm_unit"}
    )
    assert status == 422 and body["detail"][0]["field"] == "id"


async def test_device_registration(embedded_bridge: RunningBridge) -> None:
    status, _ = await embedded_bridge.call(
        "POST", "/api/v1/residents", user="ian", role="installer", json={"id": "res-x", "name": "Rose"}
    )
    assert status == 201
    status, body = await embedded_bridge.call(
        "POST",
        "/api/v1/devices",
        user="ian",
        role="installer",
        json={"id": "unit-x", "kind": "gsm_unit", "resident_id": "res-x"},
    )
    assert status == 201 and body["kind"] == "gsm_unit"
    alert_id = await raise_alert(embedded_bridge, "unit-x")
    alert, _ = await embedded_bridge.store.get_alert(alert_id)
    assert alert.resident_id == "res-x" and not alert.unregistered


async def test_health_metrics_and_openapi(embedded_bridge: RunningBridge) -> None:
    status, body = await embedded_bridge.call("GET", "/healthz", user=None)
    assert status == 200 and body == {"status": "ready"}
    await raise_alert(embedded_bridge, "unit-m")  # the open-alert gauge is read from the store at the scrape
    status, text = await embedded_bridge.call("GET", "/metrics", user=None)
    assert status == 200
    assert "telecare_ack_latency_seconds" in text
    assert 'telecare_commit_seconds_count{lane="help"} 1.0' in text  # the pendant's transaction
    assert 'telecare_open_alerts{priority="1",state="raised"} 1.0' in text
    status, spec = await embedded_bridge.call("GET", "/api/v1/openapi.json", user=None)
    assert status == 200 and "/api/v1/alerts/{alert_id}/acknowledge" in spec["paths"]
    served = {
        (r.method.lower(), r.get_info().get("formatter") or r.get_info().get("path"))
        for r in embedded_bridge.bridge.app.router.routes()
    }
    for method, path in served:
        if path and path.startswith("/api/") and method != "head":
            assert method in spec["paths"].get(path, {}), f"{method} {path} is not described"


async def test_stream_shows_changes_live(embedded_bridge: RunningBridge) -> None:
    token = await embedded_bridge.token("watcher")
    async with embedded_bridge.session.get(
        embedded_bridge.url + "/api/v1/stream", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        await resp.content.readline()
        alert_id = await raise_alert(embedded_bridge, "unit-s")
        async with asyncio.timeout(10):
            while True:
                line = (await resp.content.readline()).decode()
                if line.startswith("data: ") and json.loads(line[6:]).get("id") == alert_id:
                    break


async def test_supervisor_reassigns_and_operator_cannot(embedded_bridge: RunningBridge) -> None:
    alert_id = await raise_alert(embedded_bridge, "unit-r")
    await embedded_bridge.token("bob")
    await embedded_bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="alice")
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/reassign", user="alice", json={"to": "bob"}
    )
    assert status == 403
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/reassign", user="sue", role="supervisor", json={"to": "nobody"}
    )
    assert status == 422
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/reassign", user="sue", role="supervisor", json={"to": "bob"}
    )
    assert status == 200 and body["acknowledged_by"] == "bob"
    status, body = await embedded_bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/resolve", user="bob", json={"outcome": "resident_ok"}
    )
    assert status == 200
    _, detail = await embedded_bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    moves = [t for t in detail["timeline"] if t["action"] == "reassigned"]
    assert moves[0]["actor"] == "sue" and moves[0]["detail"] == {"from": "alice", "to": "bob"}


async def test_a_stream_with_a_backlog_gives_the_loop_turns(
    embedded_bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream writing out a backlog (a flood) lets other tasks run every STREAM_SHARE messages: in a
    storm, one step writing hundreds held the loop 60-140 ms, with a fall's ack waiting behind it."""
    from alarm_centre.http import api

    turns = 0
    written_at: list[int] = []  # the loop turns counted when each message was encoded
    real_dumps = api.strict_json.safe_dumps

    def dumps(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, dict) and str(value.get("device_id", "")).startswith("bk"):
            written_at.append(turns)
        return real_dumps(value, *args, **kwargs)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(api.strict_json, "safe_dumps", dumps)
    token = await embedded_bridge.token("watcher")
    now = datetime.now(UTC)
    flood = [
        DeviceEvent(f"bk{k:03d}", f"bk-{k}", EventType.MAINS_FAIL, now, source="test") for k in range(100)
    ]
    async with embedded_bridge.session.get(
        embedded_bridge.url + "/api/v1/stream", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        await resp.content.readline()
        counter = asyncio.create_task(count_turns())
        try:
            await embedded_bridge.bridge.intake.submit_many(flood)
            seen: set[str] = set()
            async with asyncio.timeout(10):
                while len(seen) < len(flood):
                    line = (await resp.content.readline()).decode()
                    if line.startswith("data: "):
                        seen.add(json.loads(line[6:])["device_id"])
        finally:
            counter.cancel()
    longest = max(sum(1 for _ in run) for _, run in itertools.groupby(written_at))
    assert len(written_at) >= len(flood)
    assert longest <= api.STREAM_SHARE, f"{longest} messages written in one step"
