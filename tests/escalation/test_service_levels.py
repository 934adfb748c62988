"""Service levels: the arithmetic, the JSON and CSV API with its rights, /metrics, and the console page."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from escalation_support import raise_alert, twilio_config
from harness import RunningBridge, eventually, running_bridge

from alarm_centre.escalation.service_levels import Tally, build_report, classify


def test_classify_each_case() -> None:
    assert classify(0, 59.9, None, 1000, 60) == "met"
    assert classify(0, 61, None, 1000, 60) == "missed"
    assert classify(0, None, None, 30, 60) == "pending"
    assert classify(0, None, None, 61, 60) == "missed"
    assert classify(0, None, 10, 1000, 60) == "excluded", "cleared by the unit before anyone had to answer"
    assert classify(0, None, 200, 1000, 180) == "missed"


def test_report_groups_by_day_and_operator_and_csv_is_safe() -> None:
    tz = ZoneInfo("UTC")
    day1 = datetime(2026, 1, 5, 10, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 1, 6, 10, tzinfo=UTC).timestamp()
    rows: list[dict[str, Any]] = [
        {
            "priority": 1,
            "raised_at": day1,
            "acknowledged_at": day1 + 20,
            "acknowledged_by": "alice",
            "resolved_at": None,
        },
        {
            "priority": 1,
            "raised_at": day1,
            "acknowledged_at": day1 + 100,
            "acknowledged_by": "alice",
            "resolved_at": None,
        },
        {
            "priority": 2,
            "raised_at": day2,
            "acknowledged_at": day2 + 500,
            "acknowledged_by": "=cmd|x",
            "resolved_at": None,
        },
        {
            "priority": 1,
            "raised_at": day2,
            "acknowledged_at": None,
            "acknowledged_by": None,
            "resolved_at": None,
        },
    ]
    report = build_report(rows, start=date(2026, 1, 5), end=date(2026, 1, 6), tz=tz, now=day2 + 3600)
    d1 = report.by_day[("2026-01-05", 1)]
    assert (d1.alerts, d1.share(60), d1.share(180)) == (2, 0.5, 1.0)
    assert report.by_operator[("alice", 1)].met[60] == 1
    assert report.by_operator[("", 1)].missed[180] == 1
    total = report.totals[1]
    assert (total.alerts, total.met[60], total.missed[60]) == (3, 1, 2)
    assert report.to_json()["totals"][0]["meets_target_60s"] is False
    lines = list(csv.reader(io.StringIO(report.to_csv())))
    assert lines[0][:5] == ["scope", "day", "operator", "priority", "alerts"]
    assert ["day", "2026-01-05", "", "1", "2", "1", "1", "0", "0.5000", "2", "0", "0", "1.0000"] in lines
    assert any(line[2] == "'=cmd|x" for line in lines), "formula-looking cells are defused"
    assert Tally().share(60) is None


async def _age(bridge: RunningBridge, alert_id: str, seconds: float) -> None:
    """Move an alert's raise time into the past, as if it had waited ``seconds`` before being acknowledged."""

    async def work(tx: Any, post: Any) -> None:
        await tx.execute(
            "UPDATE alerts SET raised_at = acknowledged_at - ? WHERE id = ?", seconds, int(alert_id)
        )

    await bridge.store.transaction(work)


@pytest.fixture
async def bridge(tmp_path: Path) -> Any:
    async with running_bridge(twilio_config(tmp_path, None, policies={})) as running:
        yield running


async def test_api_json_csv_rights_metrics_and_page(bridge: RunningBridge) -> None:
    fast = await raise_alert(bridge, "unit-sl-1")
    slow = await raise_alert(bridge, "unit-sl-2", "fall")
    mid = await raise_alert(bridge, "unit-sl-3", "inactivity")
    await raise_alert(bridge, "unit-sl-4", "low_battery")  # priority 3: not counted
    for alert_id, user in ((fast, "alice"), (slow, "bob"), (mid, "alice")):
        status, _ = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user=user)
        assert status == 200
    await _age(bridge, slow, 90)
    await _age(bridge, mid, 120)

    for role in ("operator", "installer"):
        status, body = await bridge.call("GET", "/api/v1/service-levels", user=f"u-{role}", role=role)
        assert status == 403 and body["error"] == "forbidden"
        status, _ = await bridge.call("GET", "/api/v1/service-levels.csv", user=f"u-{role}", role=role)
        assert status == 403
    status, _ = await bridge.call("GET", "/api/v1/service-levels", user=None)
    assert status == 401

    status, body = await bridge.call("GET", "/api/v1/service-levels", user="sue", role="supervisor")
    assert status == 200, body
    totals = {t["priority"]: t for t in body["totals"]}
    assert totals[1]["alerts"] == 2 and totals[1]["within_60s"] == 1 and totals[1]["share_180s"] == 1.0
    assert totals[2]["alerts"] == 1 and totals[2]["share_60s"] == 0.0 and totals[2]["within_180s"] == 1
    operators = {(o["operator"], o["priority"]): o for o in body["operators"]}
    assert operators[("alice", 1)]["within_60s"] == 1 and operators[("bob", 1)]["late_60s"] == 1
    assert body["targets"] == {"60s": 0.975, "180s": 0.99}

    status, text = await bridge.call("GET", "/api/v1/service-levels.csv", user="ada", role="admin")
    assert status == 200 and text.startswith("scope,day,operator,priority,alerts")
    assert any(line.startswith("operator,,alice,1,1") for line in text.splitlines())
    status, body = await bridge.call(
        "GET", "/api/v1/service-levels?from=2026-13-01", user="sue", role="supervisor"
    )
    assert status == 422

    # /metrics: ack-time histogram observed as alerts are acknowledged; 24 h shares refreshed by the loop
    async def exported() -> bool:
        _, text = await bridge.call("GET", "/metrics", user=None)
        return 'telecare_acknowledge_seconds_count{priority="1"} 2.0' in text

    await eventually(exported)
    runner_refresh = time.monotonic()
    _, text = await bridge.call("GET", "/metrics", user=None)
    assert 'telecare_service_level_ratio{priority="1",threshold_s="60"}' in text
    assert runner_refresh > 0


async def test_supervisors_page_in_the_console(bridge: RunningBridge) -> None:
    from console_support import console_client

    async with console_client(bridge) as anonymous:
        status, _ = await anonymous.call("GET", "/console/service-levels")
        assert status == 303, "signed out: sent to the sign-in page"
    async with console_client(bridge, "sam", role="supervisor") as supervisor:
        status, page = await supervisor.call("GET", "/console/service-levels")
        assert status == 200 and "Service levels" in page and "Within 60 s" in page
    async with console_client(bridge, "oscar", role="operator") as operator:
        status, _ = await operator.call("GET", "/console/service-levels")
        assert status == 403


async def test_policy_api_and_snapshot(bridge: RunningBridge) -> None:
    status, body = await bridge.call(
        "PUT",
        "/api/v1/escalation/policies/1",
        user="sue",
        role="supervisor",
        json={"steps": [{"after_s": 5, "action": "highlight"}]},
    )
    assert status == 403
    steps = [
        {"after_s": 600, "action": "highlight"},
        {"after_s": 900, "action": "sms", "to": ["+447700900555"]},
    ]
    status, body = await bridge.call(
        "PUT", "/api/v1/escalation/policies/1", user="ada", role="admin", json={"steps": steps}
    )
    assert status == 200 and body["source"] == "api" and len(body["steps"]) == 2
    status, body = await bridge.call(
        "PUT",
        "/api/v1/escalation/policies/1",
        user="ada",
        role="admin",
        json={"steps": [{"after_s": -1, "action": "highlight"}]},
    )
    assert status == 422
    alert_id = await raise_alert(bridge, "unit-sl-9")
    # a later edit does not change the running escalation: the snapshot stays
    await bridge.call("PUT", "/api/v1/escalation/policies/1", user="ada", role="admin", json={"steps": []})
    async with bridge.store.read() as tx:
        rows = await tx.fetchall(
            "SELECT action, due_at FROM escalation_steps WHERE alert_id = ? ORDER BY seq", int(alert_id)
        )
    assert [r["action"] for r in rows] == ["highlight", "sms"]
    status, body = await bridge.call("GET", "/api/v1/escalation/policies", user="sue", role="supervisor")
    assert status == 200 and {p["priority"]: p["steps"] for p in body["policies"]}[1] == []
    status, body = await bridge.call("DELETE", "/api/v1/escalation/policies/1", user="ada", role="admin")
    assert status == 200 and body["steps"] == []  # back to config, where this bridge has none
