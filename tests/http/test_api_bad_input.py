"""Bad path ids and query numbers answer a clear 4xx on both stores (never a 500 with a traceback), and
every write of an alert priority keeps to 1-3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge, make_config, postgres_database, running_bridge

from bridge.config import ConfigError, load_config
from devices.events import DeviceEvent
from devices.vocabulary import EventType

#: Texts ``str.isdigit`` or ``int`` accept that are not an id: superscripts, other scripts' digits,
#: signs, spaces, underscores, and numbers past a signed 64-bit integer.
NOT_IDS = [
    "³",
    "%C2%B2",
    "%D9%A3",
    "+7",
    "%207",
    "1_0",
    "0",
    "99999999999999999999",
    "9223372036854775808",
    "-1",
    "%00",
]


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store_bridge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A bridge on its embedded broker, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        async with running_bridge(make_config(tmp_path)) as running:
            yield running
        return
    async with (
        postgres_database() as url,
        running_bridge(make_config(tmp_path, TELECARE_STORE__URL=url)) as running,
    ):
        yield running


@pytest.mark.parametrize("bad", NOT_IDS)
async def test_alert_and_incident_ids_are_404(any_store_bridge: RunningBridge, bad: str) -> None:
    for method, path in [
        ("GET", f"/api/v1/alerts/{bad}"),
        ("POST", f"/api/v1/alerts/{bad}/acknowledge"),
        ("GET", f"/api/v1/incidents/{bad}"),
    ]:
        status, body = await any_store_bridge.call(method, path)
        assert status == 404, (path, status, body)
        assert body["error"] == "not found" and "no " in body["detail"], body


@pytest.mark.parametrize("bad", ["³", "%D9%A3", "+5", "%205", "1_0", "99999999999999999999", "0", "1001", ""])
async def test_query_limits_are_422_naming_the_parameter(any_store_bridge: RunningBridge, bad: str) -> None:
    for path in ["/api/v1/alerts", "/api/v1/incidents", "/api/v1/queue"]:
        status, body = await any_store_bridge.call("GET", f"{path}?limit={bad}")
        assert status == 422, (path, status, body)
        assert "limit must be a whole number from 1 to 1000" in str(body["detail"])


@pytest.mark.parametrize(
    "cursor", ["WzEsMS4wLDk5OTk5OTk5OTk5OTk5OTk5OTk5OTldCg", "WzEsIkluZmluaXR5IiwxXQ", "WzEsMSx0cnVlXQ"]
)
async def test_forged_cursors_are_422(any_store_bridge: RunningBridge, cursor: str) -> None:
    """``[1,1.0,99999999999999999999]``, a time that is not a number, an id that is a boolean."""
    status, body = await any_store_bridge.call("GET", f"/api/v1/alerts?cursor={cursor}")
    assert status == 422 and "cursor" in body["detail"], body


@pytest.mark.parametrize("bad", ["%00", "a%20b", "x" * 65, "%E2%80%8B"])
async def test_device_and_resident_ids_breaking_the_rule_are_404(
    any_store_bridge: RunningBridge, bad: str
) -> None:
    for method, path in [
        ("GET", f"/api/v1/devices/{bad}"),
        ("GET", f"/api/v1/devices/{bad}/config"),
        ("POST", f"/api/v1/devices/{bad}/retire"),
        ("GET", f"/api/v1/residents/{bad}"),
        ("DELETE", f"/api/v1/alexa-links/{bad}"),
        ("DELETE", f"/api/v1/check-in-schedules/{bad}"),
    ]:
        status, body = await any_store_bridge.call(method, path, user="ian", role="admin")
        assert status == 404, (path, status, body)
        assert body["error"] == "not found", body


@pytest.mark.parametrize("priority", ["4", "0", "9", "²", "99999999999999999999", "%D9%A1"])
async def test_policy_priorities_outside_1_to_3_are_404(
    embedded_bridge: RunningBridge, priority: str
) -> None:
    path = f"/api/v1/escalation/policies/{priority}"
    status, body = await embedded_bridge.call(
        "PUT", path, user="ada", role="admin", json={"steps": [{"after_s": 30, "action": "highlight"}]}
    )
    assert status == 404 and "alert priorities are 1, 2 and 3" in body["detail"], body
    status, body = await embedded_bridge.call("DELETE", path, user="ada", role="admin")
    assert status == 404, body
    _, policies = await embedded_bridge.call("GET", "/api/v1/escalation/policies", user="ada", role="admin")
    assert {p["priority"] for p in policies["policies"]} <= {1, 2, 3}


async def test_policy_priorities_1_to_3_are_written(embedded_bridge: RunningBridge) -> None:
    status, body = await embedded_bridge.call(
        "PUT",
        "/api/v1/escalation/policies/3",
        user="ada",
        role="admin",
        json={"steps": [{"after_s": 30, "action": "highlight"}]},
    )
    assert status == 200 and body["priority"] == 3


async def test_store_refuses_a_policy_for_priority_4(embedded_bridge: RunningBridge) -> None:
    from alarm_centre.store.tx import InvalidRequest

    routes = embedded_bridge.bridge.app.router.routes()  # reach the feature's Escalation
    handler = next(r.handler for r in routes if getattr(r.handler, "__name__", "") == "put_policy")
    with pytest.raises(InvalidRequest, match="priority must be one of 1, 2, 3"):
        await handler.__self__.escalation.set_policy(4, [], actor="test")  # type: ignore[attr-defined]


def test_config_refuses_a_policy_for_priority_4(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("escalation:\n  policies:\n    4:\n      - {after_s: 30, action: highlight}\n")
    with pytest.raises(ConfigError, match="alert priorities are 1, 2, 3"):
        load_config(config, environ={})


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/residents", {"id": "r-nul", "name": "Rose\u0000"}),
        ("POST", "/api/v1/alerts/{alert}/reassign", {"to": "bob\u0000"}),
        ("GET", "/api/v1/devices?resident_id=%00", None),
    ],
)
async def test_nul_in_text_is_422(any_store_bridge: RunningBridge, method: str, path: str, body: Any) -> None:
    """PostgreSQL text cannot hold U+0000; it is refused as bad input on that store (SQLite stores it)."""
    result = await any_store_bridge.bridge.intake.submit(
        DeviceEvent("unit-nul", "nul-1", EventType.PENDANT, datetime.now(UTC))
    )
    status, answer = await any_store_bridge.call(
        method, path.format(alert=result.alert_id), user="ada", role="admin", json=body
    )
    assert status < 500, answer
    if any_store_bridge.bridge.store.dialect == "postgresql":
        assert status == 422 and "NUL" in answer["detail"], answer


@pytest.mark.parametrize("code", ["99999999999999999999", "\u0663", "+5", " 5", "1_0", "\u00b3"])
def test_twilio_error_codes_follow_the_number_rule(code: str) -> None:
    from alarm_centre.escalation.twilio import WebhookRejected, parse_status

    with pytest.raises(WebhookRejected, match="ErrorCode"):
        parse_status({"CallSid": "CA" + "0" * 32, "CallStatus": "failed", "ErrorCode": code})


def test_twilio_error_code_is_read() -> None:
    from alarm_centre.escalation.twilio import parse_status

    status = parse_status({"CallSid": "CA" + "0" * 32, "CallStatus": "failed", "ErrorCode": "30008"})
    assert status.error_code == 30008


@pytest.mark.parametrize("number", ["\u00b3", "\u0663", "+5", "99999999999999999999"])
def test_modem_numbers_follow_the_number_rule(number: str) -> None:
    """A modem answer with a superscript or foreign digit is not a number, and not a crash of the codec."""
    from devices.gsm_at import NEED_DATA, AtStream, FinalResult, parse_cmgs, parse_csq, parse_final

    final = parse_final(f"+CME ERROR: {number}")
    assert isinstance(final, FinalResult) and final.code is None
    assert parse_cmgs([f"+CMGS: {number}", "OK"]) is None
    with pytest.raises(ValueError, match="CSQ"):
        parse_csq([f"+CSQ: {number},0", "OK"])
    stream = AtStream()
    header = f'+CMGL: {number},"REC UNREAD","+441",,"26/05/01,12:00:00+04"'
    stream.feed(f"\r\n{header}\r\nHELP\r\n\r\nOK\r\n".encode())
    out = []
    while (item := stream.next_event()) is not NEED_DATA:
        out.append(item)
    assert [getattr(r, "index", "-") for r in out] == [None, "-"]


def test_cli_settings_take_only_ascii_numbers() -> None:
    """``--set heartbeat_interval_s=³`` stays text (the settings model then names the field), not a crash."""
    from bridge.cli.registry import _settings

    assert _settings(["heartbeat_interval_s=\u00b3", "heartbeat_grace_s=-5", "x=120"]) == {
        "heartbeat_interval_s": "\u00b3",
        "heartbeat_grace_s": -5,
        "x": 120,
    }
