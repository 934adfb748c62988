"""The GSM modem driver over real pty pairs against the simulated modem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from serial_support import MemoryIntake, eventually, within

from alarm_centre.alerts.intake import IngestResult
from bridge.transports.gsm import AtCommandError, GsmModem
from devices.events import DeviceEvent
from simulators.gsm_modem import SimulatedModem

UNIT_NUMBER = "+447700900001"
STRANGER = "+447700900123"


async def resolve(number: str) -> str | None:
    return {UNIT_NUMBER: "gsm-unit-1"}.get(number)


def driver(modem: SimulatedModem, intake: Any, **kw: Any) -> GsmModem:
    options: dict[str, Any] = {
        "command_timeout": 0.5,
        "poll_interval": 0.3,
        "reinit_initial": 0.05,
        "reinit_max": 0.2,
    }
    options.update(kw)
    return GsmModem(modem.path, intake=intake, resolve_sender=resolve, **options)


class WitnessIntake(MemoryIntake):
    """Records whether each SMS was still on the SIM when it was stored (delete only afterwards)."""

    def __init__(self, modem: SimulatedModem) -> None:
        super().__init__()
        self.modem = modem
        self.on_sim_at_submit: list[bool] = []

    async def submit(self, event: DeviceEvent) -> IngestResult:
        texts = {sms.text for sms in self.modem.storage.values()}
        self.on_sim_at_submit.append(event.data["text"] in texts)
        return await super().submit(event)


async def test_new_sms_is_stored_then_deleted_and_status_is_polled(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = WitnessIntake(modem)
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            await modem.deliver(UNIT_NUMBER, "ALARM PENDANT")
            await within(intake.wait_for(1))
            await eventually(lambda: not modem.storage)
            (event,) = intake.events.values()
            assert (event.device_id, event.type, event.source) == ("gsm-unit-1", "pendant", "sms")
            assert event.data["sender"] == UNIT_NUMBER and "unregistered" not in event.data
            assert intake.on_sim_at_submit == [True]
            assert gsm.signal is not None and gsm.signal.dbm == -113 + 2 * 21
            assert gsm.registration is not None and gsm.registration.registered
            assert gsm.charset == "UCS2"
            assert any(c.startswith("AT+CMGR=") for c in modem.commands)


async def test_restart_while_sms_wait_each_is_stored_once_and_deleted_after(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = WitnessIntake(modem)
        for text in ("ALARM FALL", "LOW BATTERY", "CID 1101 01 001"):
            await modem.deliver(UNIT_NUMBER, text, ts=datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
        # First bridge run: the store is down, so nothing may be deleted.
        intake.unavailable = True
        async with driver(modem, intake) as gsm:
            await eventually(lambda: gsm.counts.get("store_unavailable", 0) >= 3)
        assert len(modem.storage) == 3 and intake.events == {}
        # Second run, store back: the start-up listing handles all three.
        intake.unavailable = False
        intake.on_sim_at_submit.clear()
        async with driver(modem, intake) as gsm:
            await within(intake.wait_for(3))
            await eventually(lambda: not modem.storage)
            assert gsm.counts.get("accepted") == 3
        assert sorted(e.type for e in intake.events.values()) == ["fall", "low_battery", "pendant"]
        assert intake.on_sim_at_submit == [True, True, True]
        assert any(c.startswith("AT+CMGL") for c in modem.commands)


@pytest.mark.parametrize("ucs2", [True, False])
async def test_sms_waiting_on_the_sim_are_stored_help_first(tmp_path: Path, ucs2: bool) -> None:
    """A call for help that waits on the SIM behind technical alarms is stored before them (each SMS is
    stored only when the one before it is, so the order is decided here, not in the intake)."""
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        modem.ucs2_supported = ucs2
        intake = MemoryIntake()
        for text in ("LOW BATTERY", "MAINS FAIL", "ALARM FALL", "TAMPER", "help me please"):
            await modem.deliver(UNIT_NUMBER, text, ts=datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
        async with driver(modem, intake):
            await within(intake.wait_for(5))
            await eventually(lambda: not modem.storage)
        stored = [e.type.value for e in intake.events.values()]
        assert stored == ["fall", "panic", "low_battery", "mains_fail", "tamper"]


async def test_sms_stored_but_not_deleted_is_a_duplicate_next_time(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        await modem.deliver(UNIT_NUMBER, "ALARM SMOKE")
        modem.fail_next("AT+CMGD", "+CMS ERROR: 500")
        async with driver(modem, intake, poll_interval=30) as gsm:
            await within(intake.wait_for(1))
            await eventually(lambda: gsm.counts.get("accepted") == 1 and "AT+CMGD" not in str(modem._faults))
        assert len(modem.storage) == 1  # the delete failed
        async with driver(modem, intake) as gsm:
            await eventually(lambda: not modem.storage)
            assert gsm.counts.get("duplicate") == 1
        assert len(intake.events) == 1


async def test_unknown_sender_calling_for_help_raises_an_unregistered_alert(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            await modem.deliver(STRANGER, "hello, see you tuesday")
            await modem.deliver(STRANGER, "Hilfe! Ich bin gestürzt 😢")
            await within(intake.wait_for(1))
            await eventually(lambda: not modem.storage)
            assert gsm.counts.get("ignored") == 1
        (event,) = intake.events.values()
        assert event.device_id == "sms-447700900123"
        assert event.data == {"sender": STRANGER, "text": "Hilfe! Ich bin gestürzt 😢", "unregistered": True}
        assert event.type == "panic" and event.unregistered_hint == {"sender": STRANGER, "channel": "sms"}


async def test_modem_without_ucs2_still_decodes_unicode_sms(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        modem.ucs2_supported = False
        intake = MemoryIntake()
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            assert gsm.charset == "IRA"
            await modem.deliver(UNIT_NUMBER, "TEST ALARM FALL — Zoë")
            await modem.deliver(UNIT_NUMBER, "OK")  # a body that looks like a result code
            await eventually(lambda: not modem.storage)
        texts = sorted(e.data["text"] for e in intake.events.values())
        assert texts == ["TEST ALARM FALL — Zoë"]  # "OK" from a unit is not an alarm: ignored
        (event,) = intake.events.values()
        assert event.type == "fall" and event.test


async def test_modem_reset_mid_session_is_initialised_again(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            await modem.reset()
            assert modem.cmgf == 0
            await eventually(lambda: gsm.sessions >= 2 and gsm.ready and modem.cmgf == 1)
            await modem.deliver(UNIT_NUMBER, "MAINS FAIL")
            await within(intake.wait_for(1))
            assert next(iter(intake.events.values())).type == "mains_fail"


async def test_silent_modem_times_out_and_recovers(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            modem.silent = True
            await eventually(lambda: not gsm.ready)
            assert gsm.last_error is not None
            await modem.deliver(UNIT_NUMBER, "ALARM PENDANT")  # no +CMTI while silent
            modem.silent = False
            await within(intake.wait_for(1))  # found by the listing after re-initialising
            await eventually(lambda: not modem.storage)
            assert gsm.sessions >= 2


async def test_send_sms_and_a_cms_error(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem, driver(modem, MemoryIntake()) as gsm:
        await within(gsm.wait_ready())
        ref = await within(gsm.send_sms(UNIT_NUMBER, "Alarm received, help is coming"))
        assert ref == 1
        assert modem.sent == [(UNIT_NUMBER, "Alarm received, help is coming")]
        modem.fail_next("AT+CMGS", "+CMS ERROR: 330")
        with pytest.raises(AtCommandError) as info:
            await within(gsm.send_sms(UNIT_NUMBER, "second"))
        assert info.value.result.kind == "CMS" and info.value.result.code == 330
        assert gsm.ready  # an error answer is not a dead modem
        ref = await within(gsm.send_sms(UNIT_NUMBER, "third"))
        assert modem.sent[-1] == (UNIT_NUMBER, "third")


async def test_modem_unplugged_and_plugged_back(tmp_path: Path) -> None:
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            modem.unplug()
            await eventually(lambda: not gsm.ready)
            await modem.deliver(UNIT_NUMBER, "ALARM FALL")  # arrives while the lead is out
            modem.plug()
            await within(intake.wait_for(1))
            await eventually(lambda: not modem.storage)
            assert gsm.ready and gsm.sessions >= 2


async def test_registry_failure_leaves_the_sms_on_the_sim(tmp_path: Path) -> None:
    calls = 0

    async def flaky(number: str) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("registry down")
        return await resolve(number)

    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        await modem.deliver(UNIT_NUMBER, "ALARM PENDANT")
        async with GsmModem(
            modem.path, intake=intake, resolve_sender=flaky, command_timeout=0.5, poll_interval=0.2
        ) as gsm:
            await within(intake.wait_for(1))
            await eventually(lambda: not modem.storage)
            assert calls >= 2 and gsm.sessions == 1


async def test_a_contact_id_restore_by_sms_is_the_generic_restore(tmp_path: Path) -> None:
    """``3302`` ends the unit's low battery (the store resolves it); ``3101`` never cancels a call for
    help on the resident's behalf: it is a restore the store records on the open alert's timeline."""
    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        async with driver(modem, intake) as gsm:
            await within(gsm.wait_ready())
            await modem.deliver(UNIT_NUMBER, "CID 3302 00 000")
            await within(intake.wait_for(1))
            await modem.deliver(UNIT_NUMBER, "CID 3101 01 001")
            await within(intake.wait_for(2))
    restores = sorted((e.type, e.data["restores"], e.data["contact_id"]) for e in intake.events.values())
    assert restores == [("restored", "low_battery", 302), ("restored", "pendant", 101)]
