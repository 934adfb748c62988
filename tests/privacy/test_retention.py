"""Retention on both stores after simulated months: each kind goes when its period is over, nothing of an
open alert is ever touched, the statistics stay, the job logs and records what it did, and it backs off
after failures."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from clock import SteppedClock
from privacy_support import ECHO_ID, ECHO_USER, NOTE, SMS_SENDER, SMS_TEXT, Seeded, seed_resident

from alarm_centre.escalation.store import raised_between
from alarm_centre.privacy.kinds import BUILT_IN_KINDS
from alarm_centre.privacy.retention import (
    Batch,
    RetentionJob,
    RetentionKind,
    RetentionPolicy,
    apply_retention,
    recent_runs,
)
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Tx
from bridge.retention_kinds import RETENTION_KINDS
from devices.events import DeviceEvent
from devices.vocabulary import EventType

DAY = 86400.0


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    async with open_store(store_url) as opened:
        yield opened


async def count(store: AlertStore, sql: str, *args: Any) -> int:
    async with store.read() as tx:
        row = await tx.fetchone(sql, *args)
    assert row is not None
    return int(next(iter(row.values())))


async def alert_data(store: AlertStore, alert_id: str) -> str:
    async with store.read() as tx:
        row = await tx.fetchone("SELECT data FROM alerts WHERE id = ?", int(alert_id))
    assert row is not None
    return str(row["data"])


async def open_alert_untouched(store: AlertStore, seeded: Seeded) -> None:
    """The open fall keeps its event, its timeline, its notification and its data, however old."""
    assert seeded.open_alert is not None
    key = int(seeded.open_alert)
    assert await count(store, "SELECT COUNT(*) FROM events WHERE alert_id = ?", key) == 1
    assert await count(store, "SELECT COUNT(*) FROM alert_log WHERE alert_id = ?", key) >= 1
    assert (
        await count(store, "SELECT COUNT(*) FROM notifications WHERE alert_id = ? AND body <> ''", key) == 1
    )
    assert '"text"' in await alert_data(store, seeded.open_alert)
    async with store.read() as tx:
        row = await tx.fetchone("SELECT resident_id, anonymised_at, state FROM alerts WHERE id = ?", key)
    assert row is not None and row["resident_id"] == seeded.resident_id and row["anonymised_at"] is None


async def test_months_of_retention_on_each_store(store: AlertStore, caplog: pytest.LogCaptureFixture) -> None:
    seeded = await seed_resident(store)
    # An unlinked Echo asked for help: its Amazon ids are on the (resolved) alert.
    stranger = DeviceEvent(
        "alexa-0123456789abcdef",
        "req-1",
        EventType.VOICE_HELP,
        datetime.now(UTC),
        source="voice",
        unregistered_hint={"alexa_device_id": ECHO_ID + "X", "alexa_user_id": ECHO_USER},
    )
    [voice] = await store.ingest([stranger])
    assert voice.alert_id is not None
    await store.acknowledge(voice.alert_id, actor="olive", source="console")
    await store.resolve(voice.alert_id, outcome="resident_ok", note=None, actor="olive", source="console")
    clock = SteppedClock()
    policy = RetentionPolicy()  # the defaults: 90 / 90 / 90 / 365 / 730 / 2190 days
    stats_before = len(await _stats(store, clock.now))

    # A month on: nothing is due yet.
    clock.advance(30 * DAY)
    report = await apply_retention(store, BUILT_IN_KINDS, policy, now=clock(), batch=2)
    assert set(report.counts.values()) == {0}, report.counts

    # Four months on: raw events, message bodies and Echo ids are due; the open fall keeps everything.
    clock.advance(90 * DAY)
    with caplog.at_level(logging.INFO, logger="alarm_centre.privacy.retention"):
        report = await apply_retention(store, BUILT_IN_KINDS, policy, now=clock(), batch=2)
    assert report.counts["raw_events"] == 5  # the SMS alarm, three heartbeats, the voice request
    assert report.counts["message_bodies"] >= 3  # a notification body, the SMS in the alert and timeline
    assert report.counts["echo_ids"] == 2  # on the check-in and the stranger's alert; not the linked Echo
    assert report.counts["voice_check_ins"] == report.counts["read_audit"] == 0
    assert report.counts["resolved_alerts"] == 0
    assert any("retention: resolved_alerts 0, raw_events 5" in r.getMessage() for r in caplog.records)
    resolved = int(seeded.resolved_alert)
    assert await count(store, "SELECT COUNT(*) FROM events WHERE alert_id = ?", resolved) == 0
    data = await alert_data(store, seeded.resolved_alert)
    assert SMS_TEXT not in data and SMS_SENDER not in data and '"redacted":true' in data
    async with store.read() as tx:
        log_rows = await tx.fetchall("SELECT detail FROM alert_log WHERE alert_id = ?", resolved)
        note_body = await tx.fetchone("SELECT body FROM notifications WHERE alert_id = ?", resolved)
        check_in = await tx.fetchone("SELECT alexa_device_id FROM voice_checkins")
        echo = await tx.fetchone("SELECT alexa_device_id FROM devices WHERE id = ?", seeded.echo_id)
    assert not any(SMS_TEXT in r["detail"] or SMS_SENDER in r["detail"] for r in log_rows)
    assert any(NOTE in r["detail"] for r in log_rows)  # the timeline stays until the alert's own period
    assert note_body is not None and note_body["body"] == ""
    assert check_in is not None and check_in["alexa_device_id"] is None
    assert echo is not None and echo["alexa_device_id"] == ECHO_ID  # a linked Echo keeps its id
    assert ECHO_USER not in await alert_data(store, str(voice.alert_id))
    await open_alert_untouched(store, seeded)

    # Running again finds nothing more: every kind finishes.
    again = await apply_retention(store, BUILT_IN_KINDS, policy, now=clock(), batch=2)
    assert set(again.counts.values()) == {0}, again.counts

    # Two years on: voice check-ins and the audit of reads are due.
    clock.advance(620 * DAY)
    report = await apply_retention(store, BUILT_IN_KINDS, policy, now=clock(), batch=2)
    assert report.counts["voice_check_ins"] == 1 and report.counts["read_audit"] == 1
    assert await count(store, "SELECT COUNT(*) FROM voice_checkins") == 0
    assert report.counts["resolved_alerts"] == 0

    # Six years on: the resolved alert is anonymised; the statistics still count it.
    clock.advance(5 * 365 * DAY)
    report = await apply_retention(store, BUILT_IN_KINDS, policy, now=clock(), batch=2)
    assert report.counts["resolved_alerts"] == 2
    async with store.read() as tx:
        row = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", resolved)
    assert row is not None and row["anonymised_at"] is not None
    assert (row["resident_id"], row["device_id"], row["note"], row["data"]) == (
        None,
        "anonymised",
        None,
        "{}",
    )
    assert row["acknowledged_by"] == "olive" and row["outcome"] == "responder_sent"
    for table in ("alert_log", "notifications", "events"):
        assert await count(store, f"SELECT COUNT(*) FROM {table} WHERE alert_id = ?", resolved) == 0
    assert len(await _stats(store, clock.now)) == stats_before
    await open_alert_untouched(store, seeded)
    runs = await recent_runs(store)
    assert len(runs) == 5 and runs[0]["counts"]["resolved_alerts"] == 2 and runs[0]["error"] is None


async def _stats(store: AlertStore, now: float) -> list[Any]:
    async with store.read() as tx:
        return await raised_between(tx, 0, now, [1, 2, 3])


async def test_a_kind_set_to_null_is_kept_for_ever(store: AlertStore) -> None:
    await seed_resident(store, with_open_alert=False)
    policy = RetentionPolicy({"raw_events": None, "resolved_alerts": None, "message_bodies": 1})
    report = await apply_retention(store, BUILT_IN_KINDS, policy, now=1e10)
    assert "raw_events" not in report.counts and report.counts["message_bodies"] > 0
    assert await count(store, "SELECT COUNT(*) FROM events") > 0


async def test_the_job_backs_off_after_failures_and_recovers(
    store: AlertStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A kind whose batch fails (the store refusing, say) fails the run: it is logged, counted, recorded,
    and tried again after 60 s, 120 s, 240 s, ... up to the period; a good run resets the back-off."""
    failures = [RuntimeError("disk I/O error")] * 4
    applied: list[float] = []

    async def flaky(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
        if failures:
            raise failures.pop()
        applied.append(cutoff)
        return Batch(0, more=False)

    waits: list[float] = []
    counted: list[int] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 6:
            raise asyncio.CancelledError

    clock = SteppedClock(1_000_000_000.0)
    job = RetentionJob(
        store,
        [RetentionKind("flaky", "a kind that fails four times", 10, flaky)],
        RetentionPolicy(),
        every_s=600.0,
        retry_s=60.0,
        clock=clock,
        sleep=sleep,
        on_failure=lambda: counted.append(1),
    )
    with caplog.at_level(logging.ERROR), pytest.raises(asyncio.CancelledError):
        await job.run()
    assert waits == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert len(counted) == 4 and job.failures == 0
    assert applied == [clock.now - 10 * DAY] * 2  # the injected clock decides the cutoff
    assert (
        sum("retention run failed (RuntimeError: disk I/O error)" in r.getMessage() for r in caplog.records)
        == 4
    )
    runs = await recent_runs(store)
    assert [r["error"] for r in runs].count("RuntimeError: disk I/O error") == 4


def test_config_and_kinds_agree() -> None:
    """config.yaml shows each built-in kind's default; the configuration refuses unknown kinds."""
    from pathlib import Path

    from bridge.config import ConfigError, load_config

    shipped = load_config(Path(__file__).resolve().parents[2] / "config.yaml", environ={})
    assert shipped.retention.days == {k.name: k.default_days for k in RETENTION_KINDS}
    with pytest.raises(ConfigError, match=r"retention.days: .*'call_logs' is not a kind of record"):
        load_config(None, environ={"TELECARE_RETENTION__DAYS": json.dumps({"call_logs": 30})})
    with pytest.raises(ConfigError, match="days must be 1 to 36500"):
        load_config(None, environ={"TELECARE_RETENTION__DAYS": json.dumps({"raw_events": 0})})
    assert load_config(None, environ={"TELECARE_RETENTION__DAYS": '{"raw_events": null}'}).retention.days == {
        "raw_events": None
    }
