"""Answer-time service levels from call events: offered to answered and signal to speech, per day and per
operator, against 97.5 %/60 s + 99 %/180 s and 98.5 %/60 s; abandoned calls counted apart; CSV safe; the
supervisors' page and the API; browser tokens for the Voice SDK."""

from __future__ import annotations

import csv
import io
import time
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
from console_support import console_client
from harness import RunningBridge

from alarm_centre.telephony.service_levels import VIEWS, build, view_key
from alarm_centre.telephony.tokens import TokenIssuer

T0 = 1_780_000_000.0  # a moment in 2026
UTC = ZoneInfo("UTC")


def row(n: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": n, "alert_id": n, "direction": "inbound", "state": "ended", "result": "answered",
        "operator": "alice", "started_at": T0, "answered_at": T0 + 30, "speech_at": T0 + 30,
        "ended_at": T0 + 300, "signal_at": T0 - 20, "emergency": 0, "caller": "+447700900123",
        "started_by": None, "priority": 1, "test": 0,
        "raised_at": T0 - 20, "resolved_at": None, "type": "fall", "outcome": None,
    }  # fmt: skip
    return base | over


def test_offered_to_answered_against_both_views() -> None:
    rows = [
        row(1),  # 30 s: within 60 and 180
        row(2, answered_at=T0 + 90, speech_at=T0 + 90, operator="bob"),  # late for 60, within 180
        row(
            3, answered_at=None, speech_at=None, operator=None, result="abandoned", ended_at=T0 + 20
        ),  # apart
        row(4, answered_at=None, speech_at=None, operator=None, state="waiting", result=None, ended_at=None),
        row(5, test=1),  # a test alert's call: left out
        row(6, direction="outbound", started_by="alice"),  # no answer time of its own; speech counts
    ]
    report = build(rows, start=date(2026, 5, 28), end=date(2026, 5, 28), tz=UTC, now=T0 + 40)
    offered = report.measures["offered"]
    total = offered.total
    assert (total.count, total.abandoned) == (4, 1)
    assert (total.met[60], total.missed[60], total.pending[60]) == (1, 1, 1), "the ringing one is pending"
    later = build(rows, start=date(2026, 5, 28), end=date(2026, 5, 28), tz=UTC, now=T0 + 400)
    t = later.measures["offered"].total
    assert (t.met[60], t.missed[60], t.met[180], t.missed[180]) == (1, 2, 2, 1)
    assert t.share(60) == pytest.approx(1 / 3) and t.share(180) == pytest.approx(2 / 3)
    data = later.to_json()["measures"]["offered"]["total"]
    assert data[view_key(60, 0.975)] is False and data[view_key(180, 0.99)] is False
    assert data[view_key(60, 0.985)] is False and data["abandoned"] == 1
    by_operator = {o["operator"]: o for o in later.to_json()["measures"]["offered"]["operators"]}
    assert by_operator["alice"]["within_60s"] == 1 and by_operator["bob"]["late_60s"] == 1
    assert by_operator[None]["count"] == 2, "unanswered calls under nobody"
    assert [d["day"] for d in later.to_json()["measures"]["offered"]["days"]] == ["2026-05-28"]
    assert list(VIEWS) == ["97.5% in 60 s, 99% in 180 s", "98.5% in 60 s"]


def test_signal_to_speech_per_alert() -> None:
    rows = [
        row(1, alert_id=10, signal_at=T0 - 50, answered_at=None, speech_at=None, operator=None,
            ended_at=T0 + 5, result="abandoned"),
        row(2, alert_id=10, started_at=T0 + 20, answered_at=T0 + 25, speech_at=T0 + 25, signal_at=T0 - 50),
        row(3, alert_id=11, direction="outbound", started_at=T0, answered_at=T0 + 5, speech_at=T0 + 200,
            signal_at=T0, operator="bob"),
    ]  # fmt: skip
    report = build(rows, start=date(2026, 5, 28), end=date(2026, 5, 28), tz=UTC, now=T0 + 1000)
    speech = report.measures["speech"].total
    assert speech.count == 2, "one per alert, its first speech"
    assert (speech.met[60], speech.missed[60], speech.met[180], speech.missed[180]) == (0, 2, 1, 1)
    text = report.to_csv()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][:6] == ["measure", "scope", "day", "operator", "count", "abandoned"]
    assert lines[-1][:6] == ["speech", "total", "", "", "2", "0"]


async def test_the_report_the_page_and_their_rights(embedded_bridge: RunningBridge) -> None:
    status, body = await embedded_bridge.call(
        "GET", "/api/v1/calls/service-levels", user="op", role="operator"
    )
    assert status == 403
    status, body = await embedded_bridge.call(
        "GET", "/api/v1/calls/service-levels", user="sue", role="supervisor"
    )
    assert status == 200 and set(body["measures"]) == {"offered", "speech"}, body
    for query in (
        "from=2026-13-01",
        "to=yesterday",
        "from=2026-05-02&to=2026-05-01",
        "from=2020-01-01&to=2026-01-01",
    ):
        status, body = await embedded_bridge.call(
            "GET", f"/api/v1/calls/service-levels?{query}", user="sue", role="supervisor"
        )
        assert status == 422, (query, body)
    status, text = await embedded_bridge.call(
        "GET", "/api/v1/calls/service-levels.csv?from=2026-05-01&to=2026-05-02", user="sue", role="supervisor"
    )
    assert status == 200 and text.startswith("measure,scope,day,operator,count,abandoned")
    async with console_client(embedded_bridge, "sam", "supervisor") as sam:
        status, page = await sam.call("GET", "/console/calls")
        assert status == 200 and "Call answer times" in page and "98.5% in 60 s" in page
        assert "Signal to speech" in page or "signal to speech" in page
        status, queue = await sam.call("GET", "/console")
        assert status == 200 and "/static/telephony/calls.js" not in queue, (
            "telephony is off: no call script on the queue"
        )
        status, script = await sam.call("GET", "/static/telephony/calls.js")
        assert status == 200 and "console:show-alert" in script


SECRET = "the-api-key-secret-0123456789abcdef"


def test_voice_sdk_tokens_name_the_operator_and_let_the_browser_take_calls() -> None:
    issuer = TokenIssuer("AC" + "1" * 32, "SK" + "2" * 32, SECRET, "AP" + "3" * 32, ttl_s=600)
    issued = issuer.issue("alice.smith", now=T0)
    claims = jwt.decode(
        str(issued["token"]),
        SECRET,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims["iss"] == "SK" + "2" * 32 and claims["sub"] == "AC" + "1" * 32
    assert claims["grants"]["identity"] == issued["identity"] and str(issued["identity"]).startswith(
        "op_alice_smith_"
    )
    voice = claims["grants"]["voice"]
    assert voice["incoming"] == {"allow": True} and voice["outgoing"]["application_sid"] == "AP" + "3" * 32
    assert 590 <= claims["exp"] - time.time() <= 600 and claims["nbf"] == int(T0)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            str(issued["token"]), "another-secret", algorithms=["HS256"], options={"verify_exp": False}
        )
