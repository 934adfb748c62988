"""Forwarding to an upstream monitoring centre on a real bridge, with pysiaalarm (PyPI) as the real
centre: alerts raised over MQTT (real Mosquitto) and by voice (a signed Alexa request), in clear and
encrypted, Contact ID and SIA DCS, a unit's restore, and the primary-to-backup switch. Both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alexa_ca import CertChainServer, TestCertificateAuthority
from forward_support import PysiaCentre, forward_env
from harness import RunningBridge, eventually, free_port, make_config, running_bridge
from voice_support import ECHO_ID, USER_ID, say, signer, voice_env

from bridge.config import Config
from bridge.dc09_forwarding import DC09_FORWARDER
from simulators.alexa import RequestSigner
from simulators.unit import SimulatedUnit

__all__ = ["signer"]  # the fixture, used by the voice test

pytestmark = pytest.mark.mosquitto

PATH_ACCOUNT = "C0FFEE"
RESIDENT_ACCOUNT = "1A2B3C"
#: Keys as pysiaalarm takes them: 16/24/32 characters whose ASCII bytes are the AES key. Our config
#: reads 16 and 24 characters the same way; 32 characters of hex digits it reads as 16 bytes of hex, so
#: the same AES-256 key is written there as the 64 hex digits of those 32 characters.
KEY16 = "0123456789ABCDEF"
KEY24 = "0123456789ABCDEF01234567"
KEY32 = "0123456789ABCDEF" * 2
CONFIG_KEY = {None: None, KEY16: KEY16, KEY24: KEY24, KEY32: KEY32.encode("ascii").hex()}


def bridge_config(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    topic_root: str,
    store_url: str,
    *paths: dict[str, Any],
    **env: str,
) -> Config:
    host, port = mosquitto
    return make_config(
        tmp_path,
        mqtt_url=f"mqtt://{host}:{port}",
        topic_root=topic_root,
        TELECARE_STORE__URL=store_url,
        **forward_env(*paths),
        **env,
    )


def unit_for(bridge: RunningBridge, device_id: str) -> SimulatedUnit:
    host, port = bridge.broker
    return SimulatedUnit(
        device_id, host=host, port=port, topic_root=bridge.bridge.config.topic_root, answer_commands=False
    )


async def timeline(bridge: RunningBridge, alert_id: str) -> list[dict[str, Any]]:
    status, body = await bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 200, body
    entries: list[dict[str, Any]] = body["timeline"]
    return entries


async def forward_steps(bridge: RunningBridge, alert_id: str) -> list[tuple[str, str, str]]:
    """(action, kind, path) of the alert's forwarding steps, in order."""
    return [
        (e["action"], e["detail"]["kind"], e["detail"]["path"])
        for e in await timeline(bridge, alert_id)
        if e["action"].startswith("forward_")
    ]


async def register(bridge: RunningBridge, resident: str, account: str | None, *units: str) -> None:
    body: dict[str, Any] = {"id": resident, "name": f"Resident {resident}"}
    if account is not None:
        body["dc09_account"] = account
    status, answer = await bridge.call("POST", "/api/v1/residents", user="ian", role="installer", json=body)
    assert status == 201, answer
    for unit in units:
        device = {"id": unit, "kind": "gsm_unit", "resident_id": resident}
        status, answer = await bridge.call(
            "POST", "/api/v1/devices", user="ian", role="installer", json=device
        )
        assert status == 201, answer


async def heard(centre: PysiaCentre, count: int) -> None:
    async def enough() -> bool:
        return len(centre.messages()) >= count

    await eventually(enough)


def frames_counted(bridge: RunningBridge, path: str, kind: str, result: str) -> float:
    value = bridge.bridge.metrics.registry.get_sample_value(
        "telecare_dc09_forward_frames_total", {"path": path, "kind": kind, "result": result}
    )
    return value or 0.0


@pytest.fixture
async def started() -> AsyncIterator[list[PysiaCentre]]:
    """Centres a test starts; each is stopped after the test."""
    centres: list[PysiaCentre] = []
    try:
        yield centres
    finally:
        for centre in centres:
            await centre.stop()


async def start(started: list[PysiaCentre], key: str | None = None, *, udp: bool = False) -> PysiaCentre:
    centre = PysiaCentre({PATH_ACCOUNT: key, RESIDENT_ACCOUNT: key}, udp=udp)
    await centre.start()
    started.append(centre)
    return centre


@pytest.mark.parametrize(
    ("key", "payload"), [(None, "ADM-CID"), (KEY16, "ADM-CID"), (None, "SIA-DCS"), (KEY32, "SIA-DCS")]
)
async def test_a_pendant_and_a_mains_restore_reach_the_centre(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    topic_root: str,
    store_url: str,
    started: list[PysiaCentre],
    key: str | None,
    payload: str,
) -> None:
    centre = await start(started, key)
    path: dict[str, Any] = {"url": centre.url, "account": PATH_ACCOUNT, "payload": payload}
    if key is not None:
        path["key"] = CONFIG_KEY[key]
    async with running_bridge(bridge_config(tmp_path, mosquitto, topic_root, store_url, path)) as bridge:
        await register(bridge, "res-ada", RESIDENT_ACCOUNT, "unit-ada")
        async with unit_for(bridge, "unit-ada") as ada, unit_for(bridge, "unit-bo") as bo:
            pendant = await ada.send("pendant", timeout=20)
            await heard(centre, 1)
            mains = await bo.send("mains_fail", timeout=20)
            await heard(centre, 2)
            await bo.send("mains_restored", timeout=20)
            await heard(centre, 3)
        help_event, fail, restore = centre.messages()
        # The resident's own account, the personal-emergency code, the unit's id in [I...].
        assert (help_event.account, help_event.code, help_event.encrypted) == (
            RESIDENT_ACCOUNT,
            "QA",
            key is not None,
        )
        assert help_event.message_type is not None and help_event.message_type.value == payload
        assert [(x.identifier, x.value) for x in help_event.extended_data or []] == [("I", "unit-ada")]
        # A unit with no resident account goes out with the path's; its restore follows its alarm.
        assert [(e.account, e.code) for e in (fail, restore)] == [(PATH_ACCOUNT, "AT"), (PATH_ACCOUNT, "AR")]
        assert [x.value for x in restore.extended_data or []] == ["unit-bo"]
        sequences = [int(e.sequence or 0) for e in (help_event, fail, restore)]
        assert len(set(sequences)) == 3
        # Every step is on the alert's timeline, with the sequence the centre saw.
        assert await forward_steps(bridge, pendant["alert_id"]) == [
            ("forward_sent", "alarm", "primary"),
            ("forward_acked", "alarm", "primary"),
        ]
        sent = [e for e in await timeline(bridge, pendant["alert_id"]) if e["action"] == "forward_sent"]
        assert sent[0]["detail"]["sequence"] == sequences[0]

        async def restore_on_timeline() -> bool:
            steps = await forward_steps(bridge, mains["alert_id"])
            return ("forward_acked", "restore", "primary") in steps

        await eventually(restore_on_timeline)
        assert frames_counted(bridge, "primary", "message", "ack") == 3
        assert frames_counted(bridge, "primary", "link_test", "ack") >= 1


@pytest.mark.parametrize("key", [None, KEY16])
async def test_voice_help_from_an_echo_forwards_as_a_personal_emergency(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    topic_root: str,
    store_url: str,
    started: list[PysiaCentre],
    ca: TestCertificateAuthority,
    cert_server: CertChainServer,
    signer: RequestSigner,
    key: str | None,
) -> None:
    centre = await start(started, key)
    path: dict[str, Any] = {"url": centre.url, "account": PATH_ACCOUNT}
    if key is not None:
        path["key"] = CONFIG_KEY[key]
    root = ca.write_root(tmp_path / "alexa-test-ca.pem")
    config = bridge_config(
        tmp_path, mosquitto, topic_root, store_url, path, **voice_env(root, cert_server.origin)
    )
    async with running_bridge(config) as bridge:
        await register(bridge, "res-ann", RESIDENT_ACCOUNT)
        status, body = await bridge.call(
            "POST",
            "/api/v1/alexa-links",
            user="inst",
            role="installer",
            json={
                "device_id": "echo-ann",
                "alexa_device_id": ECHO_ID,
                "resident_id": "res-ann",
                "alexa_user_id": USER_ID,
            },
        )
        assert status == 201, body
        status, _ = await say(bridge, signer, "TriggerHelpIntent")
        assert status == 200
        await heard(centre, 1)
        [event] = centre.messages()
        assert (event.account, event.code, event.event_type, event.encrypted) == (
            RESIDENT_ACCOUNT,
            "QA",
            "101",
            key is not None,
        )
        status, listing = await bridge.call("GET", "/api/v1/alerts?state=open")
        [alert] = [a for a in listing["alerts"] if a["type"] == "voice_help"]
        assert [x.value for x in event.extended_data or []] == [alert["device_id"][:64]]


async def test_the_backup_takes_the_message_when_the_primary_is_stopped(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str, store_url: str, started: list[PysiaCentre]
) -> None:
    primary = await start(started)
    backup = await start(started)
    paths = [
        {"url": primary.url, "account": PATH_ACCOUNT, "ack_timeout_s": 1},
        {"url": backup.url, "account": PATH_ACCOUNT, "ack_timeout_s": 1},
    ]
    async with running_bridge(bridge_config(tmp_path, mosquitto, topic_root, store_url, *paths)) as bridge:
        async with unit_for(bridge, "unit-cy") as unit:
            first = await unit.send("pendant", timeout=20)
            await heard(primary, 1)
            await primary.stop()  # the primary centre goes away: connections are refused
            second = await unit.send("low_battery", timeout=20)  # its own alert (a smoke joins the help)
            await heard(backup, 1)
        [event] = backup.messages()
        assert (event.account, event.code) == (PATH_ACCOUNT, "YT")
        assert len(primary.messages()) == 1
        assert await forward_steps(bridge, first["alert_id"]) == [
            ("forward_sent", "alarm", "primary"),
            ("forward_acked", "alarm", "primary"),
        ]
        assert await forward_steps(bridge, second["alert_id"]) == [
            ("forward_sent", "alarm", "primary"),
            ("forward_no_answer", "alarm", "primary"),
            ("forward_sent", "alarm", "primary"),
            ("forward_no_answer", "alarm", "primary"),
            ("forward_switched", "alarm", "backup"),
            ("forward_sent", "alarm", "backup"),
            ("forward_acked", "alarm", "backup"),
        ]
        switched = [
            e for e in await timeline(bridge, second["alert_id"]) if e["action"] == "forward_switched"
        ]
        assert switched[0]["detail"]["from"] == "primary"
        assert frames_counted(bridge, "primary", "message", "refused") == 2
        assert frames_counted(bridge, "backup", "message", "ack") == 1
        forwarder = bridge.bridge.app[DC09_FORWARDER]
        assert [p.name for p in forwarder.paths] == ["primary", "backup"]


async def test_no_forwarding_configured_queues_nothing(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str, store_url: str
) -> None:
    host, port = mosquitto
    config = make_config(
        tmp_path, mqtt_url=f"mqtt://{host}:{port}", topic_root=topic_root, TELECARE_STORE__URL=store_url
    )
    async with running_bridge(config) as bridge:
        assert DC09_FORWARDER not in bridge.bridge.app
        async with unit_for(bridge, "unit-dee") as unit:
            await unit.send("pendant", timeout=20)
        async with bridge.store.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM dc09_forwards")
        assert row is not None and row["n"] == 0


async def test_a_resident_account_is_checked_and_unique(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str, store_url: str
) -> None:
    path = {"url": f"tcp://127.0.0.1:{free_port()}", "account": PATH_ACCOUNT}
    async with running_bridge(bridge_config(tmp_path, mosquitto, topic_root, store_url, path)) as bridge:
        await register(bridge, "res-eve", "abc123")
        status, body = await bridge.call("GET", "/api/v1/residents/res-eve")
        assert status == 200 and body["dc09_account"] == "ABC123"
        for bad in ("12", "XYZ", "1" * 17):
            status, body = await bridge.call(
                "POST", "/api/v1/residents", user="ian", role="installer",
                json={"id": "res-bad", "name": "Bad", "dc09_account": bad},
            )  # fmt: skip
            assert status == 422, (bad, body)
        status, body = await bridge.call(
            "POST", "/api/v1/residents", user="ian", role="installer",
            json={"id": "res-fay", "name": "Fay", "dc09_account": "ABC123"},
        )  # fmt: skip
        assert status == 422 and "res-eve" in str(body)
        status, body = await bridge.call(
            "PATCH", "/api/v1/residents/res-eve", user="ian", role="installer", json={"dc09_account": ""}
        )
        assert status == 200 and body["dc09_account"] is None, body
