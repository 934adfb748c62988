"""One bad value never blanks the operator's screen: strict JSON in, strict JSON out, old rows repaired.

Every input path refuses ``NaN``/``Infinity``, numbers that overflow (``1e999``), duplicate keys and
deep nesting with its own clear refusal; every answer parses with a strict parser; a migration makes
rows stored before the fix readable.
"""
# ruff: noqa: F811  (pytest fixtures imported from voice_support are used as parameters)

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge, eventually, make_config, postgres_database, running_bridge
from voice_support import (  # noqa: F401  (fixtures)
    ECHO_ID,
    SKILL_ID,
    USER_ID,
    ca,
    cert_server,
    good_cert,
    post_raw,
    signer,
    voice,
)

from alarm_centre.store.sqlite import SqliteStore
from devices import strict_json
from devices.csv_yaml import MalformedFile, parse_csv, parse_yaml
from devices.events import DeviceEvent
from devices.mqtt_codec import Rejected, RejectReason, decode_event
from devices.serial_frame import FrameDecoder, Malformed, crc16
from devices.vocabulary import EventType
from simulators.alexa import RequestSigner, encode, intent_request
from simulators.unit import SimulatedUnit


def strict_parse(text: str) -> Any:
    """RFC 8259 and nothing more: a browser's JSON.parse would choke on what this refuses."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


REJECTS = "telecare_events_rejected_reasons_total"


async def get_text(running: RunningBridge, path: str) -> tuple[int, str]:
    """GET as an operator; the raw text, so the test parses it strictly (not aiohttp's lenient json)."""
    headers = {"Authorization": f"Bearer {await running.token('op1')}"}
    async with running.session.get(running.url + path, headers=headers) as resp:
        return resp.status, await resp.text()


# -- the strict reader itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ('{"v":NaN}', strict_json.Refusal.NON_FINITE),
        ('{"v":Infinity}', strict_json.Refusal.NON_FINITE),
        ('{"v":-Infinity}', strict_json.Refusal.NON_FINITE),
        ('{"v":1e999}', strict_json.Refusal.NON_FINITE),
        ('{"v":-1e999}', strict_json.Refusal.NON_FINITE),
        ('{"v":' + "9" * 400 + "}", strict_json.Refusal.NON_FINITE),
        ('{"type":"pendant","type":"heartbeat"}', strict_json.Refusal.DUPLICATE_KEY),
        ('{"a":{"b":1,"b":1}}', strict_json.Refusal.DUPLICATE_KEY),
        ("[" * 100_000 + "]" * 100_000, strict_json.Refusal.TOO_DEEP),
        ('{"a":' * 65 + "1" + "}" * 65, strict_json.Refusal.TOO_DEEP),
        ('"\\ud800"', strict_json.Refusal.ENCODING),
        (b'{"a":"\xff"}', strict_json.Refusal.ENCODING),
        ("{oops", strict_json.Refusal.SYNTAX),
    ],
)
def test_loads_refuses_what_is_not_strict_json(document: str | bytes, code: strict_json.Refusal) -> None:
    with pytest.raises(strict_json.JSONRefused) as refused:
        strict_json.loads(document)
    assert refused.value.code is code


def test_loads_keeps_what_is_strict_json() -> None:
    text = '{"a":[1,-2.5e10,1e-999,"\\ud83d\\ude00",null,true],"b":{"c":"[[[[{{{{"}}'
    assert strict_json.loads(text) == json.loads(text)
    assert strict_json.loads('{"a":' * 64 + "1" + "}" * 64) is not None
    # Brackets inside strings are not nesting.
    assert strict_json.loads(json.dumps({"s": "[" * 10_000})) == {"s": "[" * 10_000}


def test_dumps_never_writes_nan() -> None:
    with pytest.raises(ValueError):
        strict_json.dumps({"v": float("nan")})
    written = strict_json.safe_dumps({"v": float("nan"), "w": [float("-inf"), 1.5]})
    assert written == '{"v":null,"w":[null,1.5]}'


def test_repair_rewrites_only_non_finite_numbers() -> None:
    repaired = strict_json.repair('{"v":NaN,"w":[Infinity,-Infinity],"s":"NaN"}')
    assert repaired == '{"v":null,"w":[null,null],"s":"NaN"}'
    assert strict_json.repair('{"s":"NaN and Infinity"}') is None
    assert strict_json.repair("not json at all NaN") is None
    # Nesting deeper than the input limit (stored by an older version) is still repaired.
    deep = strict_json.repair('{"a":' * 100 + "NaN" + "}" * 100)
    assert deep is not None and "NaN" not in deep and strict_parse(deep)


# -- each codec: its own refusal -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b'{"event_id":"n1","type":"pendant","data":{"v":NaN}}', RejectReason.NON_FINITE, "NaN"),
        (b'{"event_id":"n2","type":"pendant","data":{"v":1e999}}', RejectReason.NON_FINITE, "overflows"),
        (b'{"event_id":"n3","type":"pendant","type":"heartbeat"}', RejectReason.DUPLICATE_KEY, "duplicate"),
        (
            b'{"event_id":"n4","type":"pendant","data":' + b"[" * 70 + b"]" * 70 + b"}",
            RejectReason.TOO_DEEP,
            "nested deeper",
        ),
        (b"{oops", RejectReason.JSON, "not JSON"),
        (b'{"event_id":"\xff"}', RejectReason.ENCODING, "not UTF-8"),
        (b'{"event_id":"n5","type":"pendant","data":{"v":"x"}}' + b" " * 4100, RejectReason.SIZE, "limit"),
    ],
)
def test_mqtt_codec_rejects_with_a_reason_code(payload: bytes, code: RejectReason, words: str) -> None:
    with pytest.raises(Rejected) as rejected:
        decode_event("unit-1", payload)
    assert rejected.value.code is code
    assert words in rejected.value.reason


def sealed(body: bytes) -> bytes:
    return b"$" + body + b"*" + b"%04X" % crc16(body) + b"\r\n"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"v":NaN}', "NaN"),
        (b'{"v":1e999}', "overflows"),
        (b'{"v":1,"v":2}', "duplicate key"),
        (b"[" * 70 + b"]" * 70, "nested deeper"),
    ],
)
def test_serial_data_refused_with_a_nak_reason(data: bytes, words: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(sealed(b"TC1,unit-1,e1,pendant,,0," + data))
    outcome = decoder.next_frame()
    assert isinstance(outcome, Malformed)
    assert outcome.reason.startswith("data is not strict JSON") and words in outcome.reason
    assert outcome.event_id == "e1"  # the NAK names the event: final, do not resend it unchanged


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("residents:\n  - {id: r1, name: Ann, language: .nan}\n", "not a finite number"),
        ("residents:\n  - {id: r1, name: Ann, language: -.inf}\n", "not a finite number"),
        ("residents:\n  - {id: r1, name: Ann, language: 1.0e+999}\n", "not a finite number"),
        ("residents:\n  - {id: r1, id: r2, name: Ann}\n", "duplicate key"),
        ("residents: []\nresidents:\n  - {id: r1, name: Ann}\n", "duplicate section"),
    ],
)
def test_yaml_import_refuses_non_finite_and_duplicates(text: str, words: str) -> None:
    batch = parse_yaml(text)
    assert not batch.ok
    assert words in str(batch.errors[0])


def test_yaml_import_refuses_deep_nesting_as_malformed() -> None:
    with pytest.raises(MalformedFile, match="nested deeper"):
        parse_yaml("residents: " + "[" * 5000 + "]" * 5000)


# -- over the real broker --------------------------------------------------------------------------


def unit_for(bridge: RunningBridge, device_id: str) -> SimulatedUnit:
    host, port = bridge.broker
    return SimulatedUnit(
        device_id,
        host=host,
        port=port,
        topic_root=bridge.bridge.config.topic_root,
        retry_initial_s=0.3,
        retry_max_s=1.0,
        answer_commands=False,
    )


@pytest.mark.mosquitto
async def test_nan_event_over_mqtt_is_rejected_and_the_console_still_reads(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-nan") as unit:
        good = await unit.send("pendant", timeout=20)
        assert good["result"] == "accepted"
        cases = {
            "n1": b'{"event_id":"n1","type":"pendant","data":{"v":NaN}}',
            "n2": b'{"event_id":"n2","type":"pendant","data":{"v":1e999}}',
            "n3": b'{"event_id":"n3","type":"pendant","type":"heartbeat"}',
        }
        errors = {}
        for event_id, raw in cases.items():
            await unit.publish_raw(raw)
            ack = await unit.next_ack(event_id)
            assert ack["result"] == "rejected", ack
            errors[event_id] = ack["error"]
    assert errors["n1"] == "payload is not strict JSON: NaN is not a JSON number"
    assert "1e999 overflows" in errors["n2"]
    assert errors["n3"] == "payload is not strict JSON: duplicate key 'type'"
    assert await bridge.store.event_count() == 1
    status, text = await get_text(bridge, "/api/v1/alerts?state=open")
    body = strict_parse(text)
    assert [a["device_id"] for a in body["alerts"]] == ["unit-nan"]

    async def counted() -> bool:
        _, metrics = await bridge.call("GET", "/metrics", user=None)
        return (
            f'{REJECTS}{{reason="non_finite",transport="mqtt"}} 2.0' in metrics
            and f'{REJECTS}{{reason="duplicate_key",transport="mqtt"}} 1.0' in metrics
        )

    await eventually(counted)


@pytest.mark.mosquitto
async def test_rejection_metrics_name_the_real_reason(bridge: RunningBridge) -> None:
    """Item 9: "payload is not JSON" and "not UTF-8" were both counted as ``size``."""
    async with unit_for(bridge, "unit-labels") as unit:
        await unit.publish_raw(b'{"event_id":"j1","type":"pendant"')
        await unit.publish_raw(b'{"event_id":"j2","type":"pendant","data":{"x":"\xff"}}')
        await unit.publish_raw(b'{"event_id":"j3","type":"pendant","data":{"x":"' + b"y" * 5000 + b'"}}')

        async def counted() -> bool:
            _, metrics = await bridge.call("GET", "/metrics", user=None)
            return all(
                f'{REJECTS}{{reason="{reason}",transport="mqtt"}} 1.0' in metrics
                for reason in ("json", "encoding", "size")
            )

        await eventually(counted)


# -- HTTP bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        (b'{"outcome":"resident_ok","note":NaN}', "NaN"),
        (b'{"outcome":"resident_ok","note":1e999}', "overflows"),
        (b'{"outcome":"false_alarm","outcome":"resident_ok"}', "duplicate key"),
    ],
)
async def test_api_bodies_refused_with_400(embedded_bridge: RunningBridge, body: bytes, words: str) -> None:
    status, answer = await embedded_bridge.call(
        "POST", "/api/v1/alerts/1/resolve", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400, answer
    assert answer["error"] == "malformed JSON" and words in answer["detail"]


async def test_registry_bodies_refused_with_400(embedded_bridge: RunningBridge) -> None:
    status, answer = await embedded_bridge.call(
        "POST",
        "/api/v1/devices",
        user="ian",
        role="admin",
        data=b'{"id":"u1","kind":"gsm_unit","kind":"alexa"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and "duplicate key 'kind'" in answer["detail"]


# -- /alexa ----------------------------------------------------------------------------------------


def _bodies() -> dict[str, bytes]:
    request = intent_request("TriggerHelpIntent", device_id=ECHO_ID, user_id=USER_ID, skill_id=SKILL_ID)
    envelope = encode(request)
    return {
        "deep": b"[" * 5000 + b"]" * 5000,
        "deep inside the envelope": envelope[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        "NaN": envelope[:-1] + b',"x":NaN}',
        "duplicate request": envelope[:-1] + b',"request":{}}',
    }


@pytest.mark.mosquitto
@pytest.mark.parametrize("case", list(_bodies()))
async def test_alexa_refuses_bad_json_with_400_signed_or_not(
    voice: RunningBridge, signer: RequestSigner, case: str
) -> None:
    body = _bodies()[case]
    unsigned = {**signer.headers(b"something else"), "Signature-256": base64.b64encode(b"x" * 256).decode()}
    for headers in (unsigned, signer.headers(body)):
        status, answer = await post_raw(voice, body, {**headers, "Content-Type": "application/json"})
        assert status == 400, answer
        assert answer["error"] == "request verification failed"
        assert answer["detail"].startswith("body is not valid JSON")
    status, alerts = await voice.call("GET", "/api/v1/alerts?state=all")
    assert status == 200 and alerts["alerts"] == []


# -- the migration ---------------------------------------------------------------------------------


async def _raise_pendant(running: RunningBridge, device_id: str) -> str:
    result = await running.bridge.intake.submit(
        DeviceEvent(device_id, "e1", EventType.PENDANT, datetime.now(UTC), data={"v": 1})
    )
    assert result.alert_id is not None
    return result.alert_id


#: What the code before the fix wrote for {"v": NaN} (json.dumps writes NaN, Infinity, -Infinity).
OLD_ROWS = {
    "events": ("data", '{"v":NaN,"w":[Infinity,-Infinity],"s":"NaN"}'),
    "alerts": ("data", '{"v":NaN}'),
    "alert_log": ("detail", '{"reading":NaN}'),
    "outbox": ("payload", '{"cmd":"test","args":{"t":Infinity}}'),
}
OLD_OUTBOX = (
    "INSERT INTO outbox (kind, channel, target, cmd_id, payload, created_at, next_attempt_at, done_at, "
    "result) VALUES ('device_command', 'mqtt', 'unit-old', 'c-old', '{}', 0, 0, 0, 'sent')"
)


async def _check_readable(running: RunningBridge, alert_id: str) -> None:
    for path in ("/api/v1/alerts?state=open", f"/api/v1/alerts/{alert_id}"):
        status, text = await get_text(running, path)
        assert status == 200, (path, text)
        body = strict_parse(text)
    assert body["data"] == {"v": None}
    assert {"reading": None} in [entry["detail"] for entry in body["timeline"]]


async def test_migration_repairs_rows_stored_before_the_fix_sqlite(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_bridge(config) as running:
        alert_id = await _raise_pendant(running, "unit-old")
    db = sqlite3.connect(config.store.url)
    with db:
        db.execute(OLD_OUTBOX)
        for table, (column, text) in OLD_ROWS.items():
            db.execute(f"UPDATE {table} SET {column} = ?", (text,))
        db.execute("DELETE FROM schema_version WHERE version = 70")
    db.close()
    async with running_bridge(config) as running:
        await _check_readable(running, alert_id)
    db = sqlite3.connect(config.store.url)
    stored = {
        table: [strict_parse(r[0]) for r in db.execute(f"SELECT {column} FROM {table}")]
        for table, (column, _) in OLD_ROWS.items()
    }
    db.close()
    assert stored["events"] == [{"v": None, "w": [None, None], "s": "NaN"}]
    assert stored["outbox"] and all(row == {"cmd": "test", "args": {"t": None}} for row in stored["outbox"])


@pytest.mark.postgres
async def test_migration_repairs_rows_stored_before_the_fix_postgres(tmp_path: Path) -> None:
    import asyncpg

    async with postgres_database() as url:
        config = make_config(tmp_path, TELECARE_STORE__URL=url)
        async with running_bridge(config) as running:
            alert_id = await _raise_pendant(running, "unit-old")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(OLD_OUTBOX)
            for table, (column, text) in OLD_ROWS.items():
                await conn.execute(f"UPDATE {table} SET {column} = $1", text)
            await conn.execute("DELETE FROM schema_version WHERE version = 70")
        finally:
            await conn.close()
        async with running_bridge(config) as running:
            await _check_readable(running, alert_id)
        conn = await asyncpg.connect(url)
        try:
            stored = {
                table: [strict_parse(r[0]) for r in await conn.fetch(f"SELECT {column} FROM {table}")]
                for table, (column, _) in OLD_ROWS.items()
            }
        finally:
            await conn.close()
    assert stored["events"] == [{"v": None, "w": [None, None], "s": "NaN"}]
    assert stored["outbox"] and all(row == {"cmd": "test", "args": {"t": None}} for row in stored["outbox"])


async def test_store_never_writes_non_finite_numbers(tmp_path: Path) -> None:
    """Belt and braces: even a value built in code (not read from a device) is stored as strict JSON."""
    async with SqliteStore(tmp_path / "s.db") as store:
        event = DeviceEvent("unit-x", "e1", EventType.PENDANT, datetime.now(UTC), data={"v": float("nan")})
        await store.ingest([event])
    db = sqlite3.connect(tmp_path / "s.db")
    (text,) = db.execute("SELECT data FROM events").fetchone()
    db.close()
    assert strict_parse(text) == {"v": None}


def test_every_json_answer_goes_through_the_strict_helper() -> None:
    """A guard for the class of fault: aiohttp's own json_response writes NaN; only the helper may call it."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("alarm_centre", "bridge", "skills", "devices")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "web.json_response(" in line
        and "def json_response" not in line
        and not (path.name == "errors.py" and "dumps=strict_json.safe_dumps" in line)
    ]
    assert offenders == []


async def test_answers_and_stream_stay_strict_for_a_bad_row(embedded_bridge: RunningBridge) -> None:
    """Fault injected below the input rules (a row written by hand): the API and the console's stream
    still answer strict JSON, with null where the stored number was not finite."""
    running = embedded_bridge
    alert_id = await _raise_pendant(running, "unit-row")
    db = sqlite3.connect(running.bridge.config.store.url)
    with db:
        db.execute("UPDATE alerts SET data = ? WHERE id = ?", ('{"v":NaN,"w":-Infinity}', int(alert_id)))
    db.close()
    headers = {"Authorization": f"Bearer {await running.token('op1')}"}
    async with running.session.get(running.url + "/api/v1/stream", headers=headers) as stream:
        assert stream.status == 200
        await stream.content.readline()  # ": connected": subscribed from here on
        status, text = await get_text(running, "/api/v1/alerts?state=open")
        assert status == 200 and strict_parse(text)["alerts"][0]["data"] == {"v": None, "w": None}
        status, acked = await running.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge")
        assert status == 200 and acked["data"] == {"v": None, "w": None}
        async with asyncio.timeout(15):
            while not (line := await stream.content.readline()).startswith(b"data: {"):
                pass
    assert strict_parse(line[len(b"data: ") :].decode())["data"] == {"v": None, "w": None}


def test_csv_import_refuses_non_finite_numbers() -> None:
    text = "id,kind,heartbeat_interval_s\nu1,gsm_unit,inf\nu2,gsm_unit,nan\n"
    batch = parse_csv(text, "devices")
    FIELD = "heartbeat_interval_s"
    assert [(e.line, e.field) for e in batch.errors] == [(2, FIELD), (3, FIELD)]


async def test_a_migration_below_the_highest_applied_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Features own version ranges, so a new migration may sort below one a store already ran (70)."""
    from alarm_centre.store import sqlite as sqlite_store
    from alarm_centre.store.schema import all_migrations

    async with SqliteStore(tmp_path / "m.db"):
        pass
    late = [*all_migrations(), (9, "CREATE TABLE late_feature (id INTEGER)")]
    monkeypatch.setattr(sqlite_store, "all_migrations", lambda: sorted(late, key=lambda m: m[0]))
    async with SqliteStore(tmp_path / "m.db"):
        pass
    db = sqlite3.connect(tmp_path / "m.db")
    versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY version")]
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert 9 in versions and "late_feature" in tables
    assert versions.count(70) == 1  # and nothing ran twice
