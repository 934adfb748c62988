"""Echo links and check-in schedules (API and CLI), daily check-ins, and the simulator CLI end to end."""
# ruff: noqa: F811  (pytest fixtures imported from voice_support are used as parameters)

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness import RunningBridge, eventually, free_port, make_config, reachable, running_bridge
from voice_support import (  # noqa: F401  (fixtures)
    ECHO_ID,
    RESIDENT,
    SKILL_ID,
    USER_ID,
    alerts,
    ca,
    cert_server,
    good_cert,
    say,
    signer,
    speech,
    voice,
    voice_clock,
    voice_env,
)

from simulators.alexa import RequestSigner
from skills import handlers
from skills.voice import Caller, VoiceService

CLI = [sys.executable, "-m", "bridge.cli"]
LONDON = ZoneInfo("Europe/London")


def london(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=LONDON).timestamp()


# -- links API -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"device_id": "echo bad id", "alexa_device_id": "amzn1.x", "resident_id": RESIDENT}, "device_id"),
        ({"device_id": "e" * 65, "alexa_device_id": "amzn1.x", "resident_id": RESIDENT}, "device_id"),
        ({"device_id": "..", "alexa_device_id": "amzn1.x", "resident_id": RESIDENT}, "device_id"),
        ({"device_id": "echo-2", "alexa_device_id": "amzn1.x", "resident_id": "."}, "resident_id"),
        ({"device_id": "echo-2", "resident_id": RESIDENT}, "alexa_device_id"),
        (
            {"device_id": "echo-2", "alexa_device_id": "has spaces", "resident_id": RESIDENT},
            "alexa_device_id",
        ),
        ({"device_id": "echo-2", "alexa_device_id": "amzn1.x", "resident_id": "nobody"}, "resident_id"),
        (
            {"device_id": "echo-2", "alexa_device_id": "amzn1.x", "resident_id": RESIDENT, "colour": "red"},
            "colour",
        ),
    ],
)
async def test_link_bad_input_is_422_naming_the_field(
    voice: RunningBridge, body: dict[str, Any], field: str
) -> None:
    status, reply = await voice.call("POST", "/api/v1/alexa-links", user="inst", role="installer", json=body)
    assert status == 422, reply
    assert [d["field"] for d in reply["detail"]] == [field]


async def test_links_need_installer_rights_and_clash_on_reuse(voice: RunningBridge) -> None:
    body = {"device_id": "echo-2", "alexa_device_id": "amzn1.ask.device.TWO", "resident_id": RESIDENT}
    status, _ = await voice.call("POST", "/api/v1/alexa-links", user="op1", role="operator", json=body)
    assert status == 403
    status, _ = await voice.call("POST", "/api/v1/alexa-links", user="admin1", role="admin", json=body)
    assert status == 201
    clash = {**body, "device_id": "echo-3", "alexa_device_id": ECHO_ID}
    status, reply = await voice.call("POST", "/api/v1/alexa-links", user="inst", role="installer", json=clash)
    assert status == 409 and "echo-ann" in reply["detail"]["message"]
    unit = {**body, "device_id": "unit-ann", "alexa_device_id": "amzn1.ask.device.NEW"}
    status, _ = await voice.call("POST", "/api/v1/alexa-links", user="inst", role="installer", json=unit)
    assert status == 409
    status, listed = await voice.call("GET", "/api/v1/alexa-links", user="inst", role="installer")
    assert status == 200
    assert {(x["device_id"], x["alexa_device_id"]) for x in listed["links"]} == {
        ("echo-ann", ECHO_ID),
        ("echo-2", "amzn1.ask.device.TWO"),
    }
    assert next(x for x in listed["links"] if x["device_id"] == "echo-ann")["alexa_user_id"] == USER_ID
    # a linked Echo is an ordinary registry device of kind alexa
    from devices.registry import Device

    async with voice.store.read() as tx:
        row = await tx.fetchone("SELECT * FROM devices WHERE id = ?", "echo-ann")
    device = Device.from_row(row)
    assert (device.kind.value, device.alexa_device_id, device.resident_id) == ("alexa", ECHO_ID, RESIDENT)


async def test_unlinked_after_delete_the_echo_is_unregistered(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    status, _ = await voice.call("DELETE", "/api/v1/alexa-links/echo-ann", user="inst", role="installer")
    assert status == 200
    status, _ = await voice.call("DELETE", "/api/v1/alexa-links/echo-ann", user="inst", role="installer")
    assert status == 404
    await say(voice, signer, "TriggerHelpIntent")
    [alert] = await alerts(voice)
    assert alert["unregistered"] is True and alert["resident_id"] is None


# -- check-ins -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"deadline": "25:00", "timezone": "Europe/London"}, "deadline"),
        ({"deadline": "10:00", "timezone": "Mars/Olympus"}, "timezone"),
    ],
)
async def test_schedule_bad_input_is_422_naming_the_field(
    voice: RunningBridge, body: dict[str, str], field: str
) -> None:
    status, reply = await voice.call(
        "PUT", f"/api/v1/check-in-schedules/{RESIDENT}", user="inst", role="installer", json=body
    )
    assert status == 422 and [d["field"] for d in reply["detail"]] == [field]


async def test_check_in_is_recorded_through_alexa(voice: RunningBridge, signer: RequestSigner) -> None:
    status, reply = await say(voice, signer, "CheckInIntent")
    assert status == 200 and handlers.CHECKIN_RECORDED in speech(reply)
    async with voice.store.read() as tx:
        rows = await tx.fetchall("SELECT resident_id, device_id FROM voice_checkins")
    assert [dict(r) for r in rows] == [{"resident_id": RESIDENT, "device_id": "echo-ann"}]
    _, reply = await say(voice, signer, "CheckInIntent", device_id="amzn1.ask.device.UNLINKED")
    assert handlers.CHECKIN_UNLINKED in speech(reply)
    assert await alerts(voice) == []


async def test_missed_check_in_raises_inactivity_once_per_day(voice: RunningBridge) -> None:
    """The sweeps here are the test's own calls: the bridge's check-in loop runs on the same clock, which
    never reaches a deadline, so it raises nothing behind the test's back."""
    await voice.store.devices.upsert_resident("res-bob", "Bob Example")
    clock = voice_clock(voice)
    clock.now = london(27, 8)
    service = VoiceService(voice.store, voice.bridge.intake, clock=clock)
    await service.link_echo("echo-bob", "amzn1.ask.device.BOB", "res-bob")
    for resident in (RESIDENT, "res-bob"):
        schedule = await service.set_check_in_schedule(resident, "10:00", "Europe/London")
        assert schedule["next_due_at"] == london(27, 10)
    clock.now = london(27, 9)
    result = await service.check_in(Caller(ECHO_ID, USER_ID, "amzn1.echo-api.request.ann-day1"))
    assert result.status == "recorded"

    assert await service.raise_missed_check_ins(london(27, 10, 1)) == ["res-bob"]
    assert await service.raise_missed_check_ins(london(27, 10, 2)) == []
    [alert] = await alerts(voice)
    assert (alert["type"], alert["priority"], alert["resident_id"], alert["device_id"]) == (
        "inactivity",
        2,
        "res-bob",
        "echo-bob",
    )
    assert alert["data"]["event_data"]["reason"] == "missed daily check-in"

    # Bob checks in late on day 1: that does not count for day 2.
    clock.now = london(27, 11)
    await service.check_in(Caller("amzn1.ask.device.BOB", "u", "amzn1.echo-api.request.bob-late"))
    # Ann does not check in on day 2.
    missed = await service.raise_missed_check_ins(london(28, 10, 1))
    assert sorted(missed) == [RESIDENT, "res-bob"]
    schedules = {s["resident_id"]: s for s in await service.list_check_in_schedules()}
    assert schedules[RESIDENT]["next_due_at"] == london(29, 10)


async def test_check_in_loop_uses_the_due_index(voice: RunningBridge) -> None:
    clock = voice_clock(voice)
    clock.now = london(27, 8)
    service = VoiceService(voice.store, voice.bridge.intake, clock=clock)
    await service.set_check_in_schedule(RESIDENT, "10:00", "Europe/London")
    clock.now = london(27, 10, 1)  # the deadline passed: the bridge's own loop sees it

    async def moved_on() -> bool:
        [schedule] = await service.list_check_in_schedules()
        return bool(schedule["next_due_at"] == london(28, 10))

    await eventually(moved_on, timeout=10)  # the loop raised the alert, then moved the deadline on
    assert await service.raise_missed_check_ins() == [], "a later pass at the same time raises nothing"
    [alert] = await alerts(voice)
    assert alert["type"] == "inactivity"
    assert alert["repeat_count"] == 0 and alert["device_id"] == "echo-ann"
    async with voice.store.read() as tx:
        plan = await tx.fetchall(
            "EXPLAIN QUERY PLAN SELECT * FROM checkin_schedules WHERE next_due_at <= ? "
            "ORDER BY next_due_at LIMIT 10",
            0.0,
        )
    assert any("checkin_schedules_due" in str(dict(row)) for row in plan)


# -- CLI -------------------------------------------------------------------------------------------
async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_link_and_check_in(tmp_path: Path) -> None:
    env = {"TELECARE_STORE__URL": str(tmp_path / "cli.db"), "TELECARE_CONFIG": str(tmp_path / "none.yaml")}
    (tmp_path / "none.yaml").write_text("{}\n")
    code, out, err = await run_cli(
        "alexa",
        "link",
        "--device-id",
        "echo-kit",
        "--alexa-device-id",
        ECHO_ID,
        "--resident",
        "res-cli",
        env=env,
    )
    assert code == 2 and "--resident" in err and "res-cli" in err
    code, out, err = await run_cli(
        "alexa",
        "link",
        "--device-id",
        "echo-kit",
        "--alexa-device-id",
        ECHO_ID,
        "--resident",
        "res-cli",
        "--resident-name",
        "Cli Resident",
        env=env,
    )
    assert code == 0, err
    assert "linked Echo echo-kit to resident res-cli" in out
    code, out, _ = await run_cli("alexa", "links", env=env)
    assert "echo-kit" in out and ECHO_ID in out
    code, _, err = await run_cli(
        "alexa", "link", "--device-id", "bad id!", "--alexa-device-id", "x", "--resident", "res-cli", env=env
    )
    assert code == 2 and "--device-id" in err
    code, _, err = await run_cli("alexa", "check-in", "--resident", "res-cli", "--deadline", "9am", env=env)
    assert code == 2 and "--deadline" in err
    code, out, err = await run_cli(
        "alexa", "check-in", "--resident", "res-cli", "--deadline", "10:00", env=env
    )
    assert code == 0 and "by 10:00 Europe/London" in out, err


async def test_simulate_alexa_cli_end_to_end(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str
) -> None:
    ca_dir = tmp_path / "ca"
    port = free_port()
    env = {"TELECARE_CONFIG": str(tmp_path / "none.yaml")}
    (tmp_path / "none.yaml").write_text("{}\n")
    server = await asyncio.create_subprocess_exec(
        *CLI,
        "simulate",
        "alexa-ca",
        "--out",
        str(ca_dir),
        "--port",
        str(port),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def serving() -> bool:
            return (ca_dir / "simulator.json").exists() and reachable("127.0.0.1", port)

        await eventually(serving, timeout=30)
        info = json.loads((ca_dir / "simulator.json").read_text())
        assert info["origin"] == f"https://127.0.0.1:{port}"
        host, mport = mosquitto
        config = make_config(
            tmp_path,
            mqtt_url=f"mqtt://{host}:{mport}",
            topic_root=topic_root,
            **voice_env(Path(info["test_ca"]), info["origin"]),
        )
        async with running_bridge(config) as running:
            await running.store.devices.upsert_resident(RESIDENT, "Ann")
            await running.store.devices.upsert_device("unit-ann", "gsm_unit", resident_id=RESIDENT)
            await VoiceService(running.store).link_echo("echo-ann", ECHO_ID, RESIDENT)
            code, out, err = await run_cli(
                "simulate",
                "alexa",
                "trigger help",
                "--device-id",
                ECHO_ID,
                "--url",
                running.url + "/alexa",
                "--skill-id",
                SKILL_ID,
                "--ca-dir",
                str(ca_dir),
                env=env,
            )
            assert code == 0, err
            assert "-> TriggerHelpIntent" in out
            assert f"Alexa says: {handlers.ALERTED}" in out
            [alert] = await alerts(running)
            assert alert["type"] == "voice_help" and alert["resident_id"] == RESIDENT
            code, out, err = await run_cli(
                "simulate",
                "alexa",
                "trigger help",
                "--device-id",
                ECHO_ID,
                "--url",
                running.url + "/alexa",
                "--skill-id",
                "amzn1.ask.skill.wrong",
                "--ca-dir",
                str(ca_dir),
                env=env,
            )
            assert code == 1 and "HTTP 400" in err
    finally:
        server.terminate()
        async with asyncio.timeout(10):
            await server.wait()
    out_text = (await server.stdout.read()).decode() if server.stdout else ""
    assert "TELECARE_ALEXA__TEST_CERT_ORIGIN=https://127.0.0.1:" in out_text
