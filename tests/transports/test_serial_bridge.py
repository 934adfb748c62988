"""Serial units and the GSM modem wired into a real bridge (real store, embedded broker, real ptys)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge, eventually, make_config, running_bridge
from serial_support import eventually as until
from serial_support import within

from alarm_centre.host import HookOrder
from bridge.config import Config
from bridge.feature_serial import SERIAL, SerialFeature
from devices.events import DeviceEvent
from devices.serial_frame import AckFrame, encode_event
from devices.sms_alarm import number_candidates, sms_command_text
from simulators.gsm_modem import SimulatedModem
from simulators.serial_unit import SimulatedSerialUnit

UNIT_NUMBER = "+447700900001"


def serial_config(tmp_path: Path, *, unit: Path | None = None, modem: Path | None = None) -> Config:
    env: dict[str, str] = {}
    if unit is not None:
        env["TELECARE_SERIAL__UNITS"] = json.dumps([{"port": str(unit), "baudrate": 9600}])
    if modem is not None:
        env.update(
            TELECARE_GSM__PORT=str(modem),
            TELECARE_GSM__POLL_INTERVAL_S="0.3",
            TELECARE_GSM__COMMAND_TIMEOUT_S="1",
        )
    return make_config(tmp_path, **env)


def feature(running: RunningBridge) -> SerialFeature:
    return running.bridge.app[SERIAL]


async def alerts(running: RunningBridge) -> list[dict[str, Any]]:
    status, body = await running.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return list(body["alerts"])


async def timeline(running: RunningBridge, alert_id: str) -> list[dict[str, Any]]:
    status, body = await running.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 200
    return list(body["timeline"])


async def metrics_text(running: RunningBridge) -> str:
    status, body = await running.call("GET", "/metrics", user=None)
    assert status == 200
    return str(body)


def metric_value(text: str, name: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(name + " ")), None)
    assert line is not None, f"{name} is not on /metrics"
    return float(line.rsplit(" ", 1)[1])


# --- pure helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "first"),
    [
        ("+447700900123", "+447700900123"),
        ("07700900123", "+447700900123"),
        ("447700900123", "+447700900123"),
        ("00447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("12345", "12345"),
    ],
)
def test_sender_numbers_normalise_to_e164_first(sender: str, first: str) -> None:
    assert number_candidates(sender)[0] == first


def test_alphanumeric_senders_match_nothing_and_commands_fit_one_sms() -> None:
    assert number_candidates("VODAFONE") == []
    text = sms_command_text("c1", "call_centre", {"alert_id": "7"})
    assert text == 'TC1 CMD c1 call_centre {"alert_id":"7"}'
    assert sms_command_text("c2", "test", None) == "TC1 CMD c2 test"
    with pytest.raises(ValueError, match="160"):
        sms_command_text("c3", "announce", {"text": "x" * 200})


# --- directly attached units -------------------------------------------------------------------------


async def test_serial_pendant_is_stored_acked_and_called_back(tmp_path: Path) -> None:
    link = tmp_path / "unit"
    async with (
        SimulatedSerialUnit("serial-unit-1", link=str(link), retry_interval=0.5) as unit,
        running_bridge(serial_config(tmp_path, unit=link)) as running,
    ):
        await running.store.devices.upsert_resident("res-1", "Ann Example")
        await running.store.devices.upsert_device(
            "serial-unit-1", "serial_unit", resident_id="res-1", channel="serial"
        )
        (transport,) = feature(running).transports
        await within(transport.wait_connected())

        answer = await within(unit.raise_event("pendant"))
        assert isinstance(answer, AckFrame) and answer.alert_id
        # The ACK names an alert that is already in the store.
        (alert,) = await alerts(running)
        assert (alert["id"], alert["device_id"]) == (answer.alert_id, "serial-unit-1")
        assert alert["type"] == "pendant"
        assert alert["resident_id"] == "res-1" and not alert["unregistered"]

        # The outbox sends call_centre over the same line; the unit's cmd_result lands on the timeline.
        await until(lambda: any(c.cmd == "call_centre" for c in unit.commands))
        command = next(c for c in unit.commands if c.cmd == "call_centre")
        assert command.device_id == "serial-unit-1" and command.args == {"alert_id": answer.alert_id}

        async def result_on_timeline() -> bool:
            entries = await timeline(running, answer.alert_id or "")
            return any(
                e["action"] == "cmd_result" and e["detail"].get("cmd_id") == command.cmd_id for e in entries
            )

        await eventually(result_on_timeline)
        assert await running.store.outbox.pending() == 0

        text = await metrics_text(running)
        assert f'telecare_serial_link_up{{port="{link}"}} 1.0' in text
        assert f'telecare_serial_frames_total{{outcome="accepted",port="{link}"}}' in text
        status, health = await running.call("GET", "/healthz", user=None)
        assert status == 200, health


async def test_bad_frames_are_naked_and_the_bridge_keeps_serving(tmp_path: Path) -> None:
    link = tmp_path / "unit"
    async with (
        SimulatedSerialUnit("serial-unit-2", link=str(link), retry_interval=0.5) as unit,
        running_bridge(serial_config(tmp_path, unit=link)) as running,
    ):
        (transport,) = feature(running).transports
        await within(transport.wait_connected())
        good = encode_event("serial-unit-2", "e-1", "pendant", test=False)
        bad_crc = good[:-6] + (b"0000" if good[-6:-2] != b"0000" else b"1111") + b"\r\n"
        await unit.send_raw(b"\x00\xffnoise" + bad_crc)
        await unit.send_raw(b"$TC1,serial-unit-2,e-2,pend")  # truncated: the next $ resynchronises
        await unit.send_raw(b"$" + b"A" * 600 + b"\r\n")  # oversized line
        await unit.send_raw(encode_event("serial-unit-2", "e-3", "no_such_type", test=False))
        await until(lambda: len(unit.naks) >= 4, timeout=10)
        garbled = [n for n in unit.naks if n.event_id is None]
        assert len(garbled) >= 3 and all(n.reason for n in unit.naks)
        assert any(n.event_id == "e-3" for n in unit.naks)  # read correctly, refused with a reason
        assert await running.store.event_count() == 0

        answer = await within(unit.raise_event("fall"))  # still serving
        assert isinstance(answer, AckFrame)
        (alert,) = await alerts(running)
        assert alert["unregistered"] and alert["type"] == "fall"
        text = await metrics_text(running)
        assert metric_value(text, f'telecare_serial_frames_total{{outcome="malformed",port="{link}"}}') >= 3


async def test_a_configured_port_that_is_down_makes_the_bridge_not_ready(tmp_path: Path) -> None:
    unit_link, modem_link = tmp_path / "unit", tmp_path / "modem"
    async with running_bridge(serial_config(tmp_path, unit=unit_link, modem=modem_link)) as running:
        status, body = await running.call("GET", "/healthz", user=None)
        assert status == 503
        problems = " | ".join(body["problems"])
        assert f"serial port {unit_link} is down" in problems
        assert f"GSM modem on {modem_link} is not ready" in problems
        assert f'telecare_serial_link_up{{port="{unit_link}"}} 0.0' in await metrics_text(running)

        async with (
            SimulatedSerialUnit("u", link=str(unit_link)),
            SimulatedModem(link=str(modem_link)) as modem,
        ):

            async def ready() -> bool:
                return (await running.call("GET", "/healthz", user=None))[0] == 200

            await eventually(ready, timeout=20)
            text = await metrics_text(running)
            assert f'telecare_modem_signal_dbm{{port="{modem_link}"}} {-113 + 2 * modem.rssi}.0' in text
            assert f'telecare_modem_registered{{port="{modem_link}"}} 1.0' in text

            modem.reg_stat = 3  # registration denied (SIM barred)

            async def denied() -> bool:
                status, body = await running.call("GET", "/healthz", user=None)
                return status == 503 and any("not registered" in p for p in body["problems"])

            await eventually(denied)


# --- the GSM modem ------------------------------------------------------------------------------------


async def test_sms_alarm_from_a_registered_number_and_a_stranger(tmp_path: Path) -> None:
    link = tmp_path / "modem"
    async with (
        SimulatedModem(link=str(link)) as modem,
        running_bridge(serial_config(tmp_path, modem=link)) as running,
    ):
        await running.store.devices.upsert_resident("res-2", "Bob Example")
        await running.store.devices.upsert_device(
            "gsm-unit-1", "gsm_unit", resident_id="res-2", channel="sms", phone=UNIT_NUMBER
        )
        gsm = feature(running).modem
        assert gsm is not None
        await within(gsm.wait_ready())

        await modem.deliver("07700900001", "ALARM PENDANT")  # national form of the unit's number
        await modem.deliver("+447700900999", "Help, I have fallen and can't get up")

        async def two_alerts() -> bool:
            return len(await alerts(running)) == 2

        await eventually(two_alerts)
        await until(lambda: not modem.storage)
        by_device = {a["device_id"]: a for a in await alerts(running)}
        unit_alert = by_device["gsm-unit-1"]
        assert unit_alert["type"] == "pendant" and not unit_alert["unregistered"]
        stranger = by_device["sms-447700900999"]
        assert stranger["unregistered"] and stranger["type"] == "panic"
        assert stranger["data"]["event_data"]["text"].startswith("Help")

        # call_centre goes to the unit as an SMS in the documented format, and is then done.
        await until(lambda: bool(modem.sent))
        ((number, text),) = modem.sent
        assert number == UNIT_NUMBER
        assert text.startswith("TC1 CMD c")
        assert text.endswith(f'call_centre {{"alert_id":"{unit_alert["id"]}"}}')
        await eventually(lambda: _pending_zero(running))
        entries = await timeline(running, unit_alert["id"])
        assert any(e["action"] == "command_sent" and e["detail"]["cmd"] == "call_centre" for e in entries)

        metrics = await metrics_text(running)
        assert 'telecare_sms_messages_total{outcome="accepted"} 2.0' in metrics
        assert 'telecare_sms_messages_total{outcome="deleted"} 2.0' in metrics
        assert 'telecare_sms_sent_total{result="sent"} 1.0' in metrics


async def test_restart_while_sms_wait_on_the_modem_stores_each_once(tmp_path: Path) -> None:
    link = tmp_path / "modem"
    config = serial_config(tmp_path, modem=link)
    async with SimulatedModem(link=str(link)) as modem:
        async with running_bridge(config) as first:
            for n in (1, 2, 3):
                # channel mqtt: no command SMS is being typed into the modem when the bridge stops
                await first.store.devices.upsert_device(
                    f"gsm-{n}", "gsm_unit", channel="mqtt", phone=f"+44770090010{n}"
                )
            first_gsm = feature(first).modem
            assert first_gsm is not None
            await within(first_gsm.wait_ready())
            await until(lambda: any(c.upper().startswith("AT+CMGL") for c in modem.commands))
            # Stored, but the delete fails: the SMS is still on the SIM when this bridge stops.
            modem.fail_next("AT+CMGD", "+CMS ERROR: 500")
            await modem.deliver("+447700900101", "ALARM PENDANT")
            await until(lambda: first_gsm.counts.get("accepted") == 1)
            assert len(modem.storage) == 1
        # While no bridge runs, two more alarms arrive.
        await modem.deliver("+447700900102", "ALARM FALL")
        await modem.deliver("+447700900103", "SMOKE ALARM")
        assert len(modem.storage) == 3
        waiting = {sms.text for sms in modem.storage.values()}

        modem.silent = True  # hold the new bridge off until the witness below is in place
        async with running_bridge(config) as second:
            on_sim_when_stored: dict[str, bool] = {}

            async def witness(tx: Any, post: Any, event: DeviceEvent, device: Any, alert_id: Any) -> None:
                texts = {sms.text for sms in modem.storage.values()}
                on_sim_when_stored[event.data["text"]] = event.data["text"] in texts

            second.store.add_event_hook(witness, HookOrder.REGISTRY)
            modem.silent = False
            gsm = feature(second).modem
            assert gsm is not None
            await until(lambda: not modem.storage, timeout=20)
            # The two new ones were still on the SIM when their transaction stored them; the pendant
            # stored before the restart was read again and collapsed (a duplicate never reaches hooks).
            assert on_sim_when_stored == {text: True for text in waiting - {"ALARM PENDANT"}}
            assert gsm.counts.get("duplicate") == 1 and gsm.counts.get("accepted") == 2

            async with second.store.read() as tx:
                rows = await tx.fetchall("SELECT device_id, COUNT(*) AS n FROM events GROUP BY device_id")
            assert {r["device_id"]: r["n"] for r in rows} == {"gsm-1": 1, "gsm-2": 1, "gsm-3": 1}
            by_device = {a["device_id"]: a for a in await alerts(second)}
            assert sorted(by_device) == ["gsm-1", "gsm-2", "gsm-3"]
            assert by_device["gsm-1"]["repeat_count"] == 0


async def _pending_zero(running: RunningBridge) -> bool:
    return bool(await running.store.outbox.pending() == 0)


async def test_a_modem_left_in_sms_text_entry_is_recovered(tmp_path: Path) -> None:
    link = tmp_path / "modem"
    async with SimulatedModem(link=str(link)) as modem:
        # A previous bridge stopped while typing a command SMS: the modem waits for Ctrl-Z or ESC.
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"AT+CMGF=1\r")
            await until(lambda: "AT+CMGF=1" in modem.commands)
            os.write(fd, b'AT+CMGS="+447700900001"\r')
            await until(lambda: any(c.startswith("AT+CMGS") for c in modem.commands))
        finally:
            os.close(fd)
        async with running_bridge(serial_config(tmp_path, modem=link)) as running:
            gsm = feature(running).modem
            assert gsm is not None
            await within(gsm.wait_ready(), timeout=4)
