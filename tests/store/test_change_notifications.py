"""The change notifications PostgreSQL nodes send each other (alarm_centre/store/postgres.py): every
payload under pg_notify's limit, and what a node decodes is what the other sent, calls for help's
alerts included (their feed then pushes them without a read)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.postgres import NOTIFY_LIMIT, _alert_json, _encode_changes

#: pg_notify refuses a payload of 8000 bytes or more.
PG_NOTIFY_MAX = 8000


def alert_of(alert_id: str, size: int) -> dict[str, Any]:
    return {"id": alert_id, "type": "fall", "priority": 1, "state": "raised", "data": {"note": "x" * size}}


def as_changes(items: list[tuple[int, AuditAction, int, int | None]]) -> list[AlertChange]:
    """Changes as a transaction sends them: every change of one call for help with the same alert."""
    sizes: dict[str, int | None] = {}
    priorities: dict[str, int] = {}
    for n, _, priority, size in items:
        sizes.setdefault(str(n), size)
        priorities.setdefault(str(n), priority)  # an alert's priority never changes
    out: list[AlertChange] = []
    for n, action, _, _ in items:
        key, size, priority = str(n), sizes[str(n)], priorities[str(n)]
        alert = alert_of(key, size) if size is not None and priority == 1 else None
        out.append(AlertChange(key, action, priority, "raised", alert))
    return out


changes = st.lists(
    st.tuples(
        st.integers(1, 50),
        st.sampled_from(list(AuditAction)),
        st.sampled_from([1, 2, 3]),
        st.one_of(st.none(), st.integers(0, NOTIFY_LIMIT)),
    ),
    max_size=300,
).map(as_changes)


def decode(payloads: list[str]) -> tuple[list[list[Any]], dict[str, Any]]:
    items: list[list[Any]] = []
    alerts: dict[str, Any] = {}
    for payload in payloads:
        assert len(payload.encode()) < PG_NOTIFY_MAX
        message = json.loads(payload)
        assert message["o"] == "node-a"
        items += message["c"]
        alerts.update(message.get("a", {}))
    return items, alerts


@settings(max_examples=150, deadline=None)
@given(changes, st.booleans())
def test_every_change_arrives_in_order_and_small_alerts_with_it(
    sent: list[AlertChange], outbox: bool
) -> None:
    payloads = _encode_changes("node-a", sent, outbox)
    items, alerts = decode(payloads)
    assert items == [[c.alert_id, c.action.value, c.priority, c.state] for c in sent]
    for c in sent:
        small = c.alert is not None and len(json.dumps(c.alert)) < NOTIFY_LIMIT // 3
        if small:
            assert alerts[c.alert_id] == c.alert
        if c.alert is None:
            assert c.alert_id not in alerts
    if outbox:
        assert json.loads(payloads[-1])["w"] is True


def test_an_alert_too_big_to_send_is_left_to_a_read() -> None:
    big = AlertChange("7", AuditAction.RAISED, 1, "raised", alert_of("7", NOTIFY_LIMIT))
    [payload] = _encode_changes("node-a", [big], False)
    assert "a" not in json.loads(payload)


def test_a_node_takes_only_an_object_with_an_id_as_an_alert() -> None:
    assert _alert_json({"id": "3", "state": "raised"}) == {"id": "3", "state": "raised"}
    for junk in (None, [], "alert", 3, {"state": "raised"}):
        assert _alert_json(junk) is None
