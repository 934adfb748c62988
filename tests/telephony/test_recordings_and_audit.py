"""Recordings after the call: deleted at Twilio and here once the retention period has passed (injected
clock), and the monthly call audit: at least two calls per handler, one with the emergency services where
there is one, findings recorded, the month exported; only reviewers may do any of it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from clock import SteppedClock
from console_support import console_client
from escalation_support import raise_alert
from harness import RunningBridge
from telephony_support import (
    ALICE_PHONE,
    BOB_PHONE,
    CENTRE,
    advance,
    available,
    call_entries,
    ringing,
    settle,
)

from alarm_centre.telephony.audit import draw
from alarm_centre.telephony.states import DrawReason
from simulators.twilio_server import TwilioServer


async def answered_call(bridge: RunningBridge, twilio: TwilioServer, caller: str, phone: str) -> str:
    """A call in from ``caller``, answered on ``phone``, then hung up by the caller; its alert id."""
    call = await twilio.dial_in(caller, CENTRE)
    leg = await ringing(twilio, phone)
    await twilio.answer(leg.sid)
    await twilio.hang_up(call.sid)
    await twilio.settled()
    await settle(bridge)
    status, body = await bridge.call("GET", "/api/v1/calls", user="sue", role="supervisor")
    assert status == 200 and body["calls"] == [], "the call is over"
    return str((await bridge.store.get_alert(await _alert_of(bridge, call.sid)))[0].id)


async def _alert_of(bridge: RunningBridge, call_sid: str) -> str:
    async with bridge.store.read() as tx:
        row = await tx.fetchone("SELECT alert_id FROM calls WHERE call_sid = ?", call_sid)
    assert row is not None
    return str(row["alert_id"])


async def test_recordings_are_deleted_at_twilio_and_here_after_the_retention_period(
    bridge: RunningBridge, twilio: TwilioServer, clock: SteppedClock
) -> None:
    await available(bridge, "alice")
    alert_id = await answered_call(bridge, twilio, "+447700900401", ALICE_PHONE)
    [recorded] = await call_entries(bridge, alert_id, "call_recorded")
    sid = recorded["recording_sid"]
    assert twilio.voice.recording(sid) is not None
    await advance(bridge, clock, 89 * 86400, twilio)
    assert twilio.voice.recording(sid) is not None, "kept for 90 days"
    await advance(bridge, clock, 86400 + 1, twilio)
    assert twilio.voice.recording(sid) is None, "deleted at Twilio"
    [deleted] = await call_entries(bridge, alert_id, "call_recording_deleted")
    assert deleted["recording_sid"] == sid and "90 days" in deleted["reason"]
    status, body = await bridge.call("GET", f"/api/v1/calls?alert_id={alert_id}", user="alice")
    [rec] = body["calls"][0]["recordings"]
    assert rec["deleted"] is True and rec["duration_s"] >= 0
    async with bridge.store.read() as tx:
        row = await tx.fetchone("SELECT media_url, deleted_at FROM call_recordings WHERE sid = ?", sid)
    assert row is not None and row["media_url"] is None and row["deleted_at"] is not None
    status, body = await bridge.call(
        "GET", f"/api/v1/recordings/{rec['id']}/audio", user="sue", role="supervisor"
    )
    assert status == 404 and "deleted" in body["detail"]


async def test_the_monthly_call_audit(
    bridge: RunningBridge, twilio: TwilioServer, clock: SteppedClock
) -> None:
    await available(bridge, "alice", "bob")
    for n in range(3):  # the longest idle takes each: alice, bob, alice
        clock.advance(10)
        await answered_call(bridge, twilio, f"+44770090050{n}", ALICE_PHONE if n % 2 == 0 else BOB_PHONE)
    # bob also calls the emergency services from an alert card
    alert_id = await raise_alert(bridge, "unit-audit", "fall")
    status, call = await bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/calls", user="bob", json={"to": "emergency"}
    )
    assert status == 201, call
    mine = await ringing(twilio, BOB_PHONE)
    await twilio.answer(mine.sid)
    await settle(bridge)
    ambulance = await ringing(twilio, "999")
    await twilio.answer(ambulance.sid)
    await twilio.hang_up(mine.sid)
    await twilio.settled()
    await settle(bridge)
    month = datetime.now(UTC).strftime("%Y-%m")

    status, body = await bridge.call(
        "POST", "/api/v1/call-audit/draw", user="al", role="operator", json={"month": month}
    )
    assert status == 403
    status, drawn = await bridge.call(
        "POST", "/api/v1/call-audit/draw", user="sue", role="supervisor", json={"month": month}
    )
    assert status == 200, drawn
    by_handler = {h["handler"]: h["calls"] for h in drawn["handlers"]}
    assert set(by_handler) == {"alice", "bob"}
    assert len(by_handler["alice"]) == 2 and len(by_handler["bob"]) == 2
    assert [c["reason"] for c in by_handler["bob"]].count("emergency_services") == 1
    assert next(c for c in by_handler["bob"] if c["reason"] == "emergency_services")["emergency"] is True
    assert all(c["recordings"] for calls in by_handler.values() for c in calls), "each has its recording"
    again = await bridge.call(
        "POST", "/api/v1/call-audit/draw", user="sue", role="supervisor", json={"month": month}
    )
    assert again[1]["handlers"] == drawn["handlers"], "a draw is made once: it cannot be re-rolled"

    review = by_handler["alice"][0]
    path = f"/api/v1/call-audit/reviews/{review['id']}"
    for body, expected in [
        ({"verdict": "brilliant", "findings": ""}, 422),
        ({"verdict": "meets_standard", "findings": "x" * 4001}, 422),
        ({"verdict": "meets_standard", "findings": 7}, 422),
        ({"findings": "no verdict"}, 422),
        ({"verdict": "meets_standard", "extra": 1}, 422),
    ]:
        status, answer = await bridge.call("PUT", path, user="sue", role="supervisor", json=body)
        assert status == expected, (body, answer)
    status, _ = await bridge.call("PUT", "/api/v1/call-audit/reviews/999999", user="sue", role="supervisor",
                                  json={"verdict": "meets_standard"})  # fmt: skip
    assert status == 404
    status, saved = await bridge.call(
        "PUT", path, user="sue", role="supervisor",
        json={"verdict": "needs_improvement", "findings": '=HYPERLINK("x") did not confirm the address'},
    )  # fmt: skip
    assert status == 200 and saved["reviewer"] == "sue" and saved["verdict"] == "needs_improvement"

    async with bridge.session.get(
        bridge.url + f"/api/v1/call-audit.csv?month={month}",
        headers={"Authorization": f"Bearer {await bridge.token('sue', 'supervisor')}"},
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert f"call-audit-{month}.csv" in resp.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 4 and {r["handler"] for r in rows} == {"alice", "bob"}
    mark = next(r for r in rows if r["review_id"] == review["id"])
    assert mark["verdict"] == "needs_improvement" and mark["findings"].startswith("'="), (
        "no formula in a sheet"
    )
    for bad in ("2026-13", "26-05", "may", "2026-05-01"):
        status, _ = await bridge.call("GET", f"/api/v1/call-audit?month={bad}", user="sue", role="supervisor")
        assert status == 422, bad

    async with console_client(bridge, "sam", "supervisor") as sam:
        status, page = await sam.call("GET", f"/console/call-audit?month={month}")
        assert status == 200 and page.count("<audio controls") == 4 and "Draw calls" not in page
        assert 'data-review="' in page and "Export the month" in page
    async with console_client(bridge, "otto", "operator") as otto:
        status, _ = await otto.call("GET", "/console/call-audit")
        assert status == 403


def test_the_draw_takes_an_emergency_call_when_there_is_one_and_at_least_two() -> None:
    def row(n: int, handler: str, emergency: bool = False, outcome: str | None = None) -> dict[str, object]:
        return {"id": n, "operator": handler, "emergency": int(emergency), "outcome": outcome}

    calls = [row(1, "a"), row(2, "a"), row(3, "a", outcome="ambulance"), row(4, "a"), row(5, "b"),
             row(6, "overflow:+441632960999"), row(7, "c"), row(8, "c", emergency=True)]  # fmt: skip
    for seed in range(20):
        picks = iter([seed % 4, seed % 3, seed % 2, 0, 0, 0, 0, 0])
        drawn = draw(calls, per_handler=2, already=set(), pick=lambda n, p=picks: next(p) % n)
        by: dict[str, list[tuple[int, DrawReason]]] = {}
        for handler, call_id, reason in drawn:
            by.setdefault(handler, []).append((call_id, reason))
        assert set(by) == {"a", "b", "c"}, "the overflow centre is no handler of ours"
        assert by["a"][0] == (3, DrawReason.EMERGENCY) and len(by["a"]) == 2
        assert by["b"] == [(5, DrawReason.RANDOM)], "one call is all there is"
        assert by["c"][0] == (8, DrawReason.EMERGENCY) and len({c for c, _ in by["c"]}) == 2
    assert {h for h, _, _ in draw(calls, per_handler=3, already={"a", "b"})} == {"c"}, "drawn ones stay"
