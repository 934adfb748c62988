"""The serial transport over real pty pairs against the simulated unit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from serial_support import MemoryIntake, eventually, within

from alarm_centre.alerts.intake import IngestResult
from bridge.transports.serial import LinkDown, SerialTransport
from devices.events import DeviceEvent
from devices.serial_frame import AckFrame, NakFrame, crc16
from simulators.serial_unit import SimulatedSerialUnit


def sealed(body: bytes) -> bytes:
    return b"$" + body + b"*" + b"%04X" % crc16(body) + b"\r\n"


async def test_event_is_acked_with_its_alert_id_and_stored_once(tmp_path: Path) -> None:
    intake = MemoryIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty"), retry_interval=0.5) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        answer = await within(unit.raise_event("pendant"))
        assert isinstance(answer, AckFrame)
        assert answer.alert_id == "A00001"
        assert len(intake.events) == 1
        (event,) = intake.events.values()
        assert event.source == "serial" and event.device_id == "unit-1" and event.type == "pendant"
        assert transport.serves("unit-1")
        assert transport.counts["accepted"] == 1


async def test_ack_is_written_only_after_the_store_returns(tmp_path: Path) -> None:
    gate = asyncio.Event()

    class GatedIntake(MemoryIntake):
        async def submit(self, event: DeviceEvent) -> IngestResult:
            await gate.wait()
            return await super().submit(event)

    intake = GatedIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty"), retry_interval=0.2) as unit,
        SerialTransport(unit.path, intake=intake),
    ):
        pending = asyncio.create_task(unit.raise_event("fall", event_id="e-1"))
        await eventually(lambda: unit.frames_sent >= 3)  # retransmitting: no ACK while not stored
        assert unit.acks == [] and intake.events == {}
        gate.set()
        answer = await within(pending)
        assert isinstance(answer, AckFrame) and answer.event_id == "e-1"
        assert list(intake.events) == [("unit-1", "e-1")]
        # The retransmissions collapse onto the first delivery: every ACK names the same alert.
        await asyncio.sleep(0.3)
        assert {a.alert_id for a in unit.acks} == {"A00001"}


async def test_duplicate_gets_the_same_alert_id(tmp_path: Path) -> None:
    intake = MemoryIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty")) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        first = await within(unit.raise_event("smoke", event_id="same"))
        second = await within(unit.raise_event("smoke", event_id="same"))
        assert isinstance(first, AckFrame) and isinstance(second, AckFrame)
        assert first.alert_id == second.alert_id == "A00001"
        assert transport.counts == {"accepted": 1, "duplicate": 1}


async def test_store_unavailable_means_no_answer_and_the_unit_retries(tmp_path: Path) -> None:
    intake = MemoryIntake()
    intake.unavailable = True
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty"), retry_interval=0.2) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        pending = asyncio.create_task(unit.raise_event("pendant", event_id="p-1"))
        await eventually(lambda: transport.counts.get("store_unavailable", 0) >= 2)
        assert unit.acks == [] and unit.naks == []
        intake.unavailable = False
        answer = await within(pending)
        assert isinstance(answer, AckFrame)
        assert list(intake.events) == [("unit-1", "p-1")]


async def test_noise_and_bad_checksum_get_a_nak_and_the_frame_still_arrives(tmp_path: Path) -> None:
    intake = MemoryIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty"), retry_interval=0.3) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        await within(transport.wait_connected())
        await unit.send_raw(b"\x00\xff line noise ")
        await unit.send_raw(b"$TC1,unit-1,x,pendant,,0*0000\r\n")  # wrong checksum
        await eventually(lambda: len(unit.naks) >= 1)
        assert unit.naks[0] == NakFrame(None, None, "checksum mismatch")
        answer = await within(unit.raise_event("pendant", event_id="after-noise"))
        assert isinstance(answer, AckFrame)
        assert list(intake.events) == [("unit-1", "after-noise")]
        assert transport.counts["malformed"] == 1


async def test_a_frame_we_refuse_gets_a_nak_naming_the_event(tmp_path: Path) -> None:
    intake = MemoryIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty")) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        await within(transport.wait_connected())
        await unit.send_raw(sealed(b"TC1,unit-1,e9,teleport,,0"))
        await unit.send_raw(sealed(b"TC1,unit-1,e10,no_heartbeat,,0"))
        await eventually(lambda: len(unit.naks) >= 2)
        assert unit.naks[0].event_id == "e9" and "unknown event type" in unit.naks[0].reason
        assert unit.naks[1].event_id == "e10" and "bridge" in unit.naks[1].reason
        assert intake.events == {}
        # The transport keeps serving after bad input.
        assert isinstance(await within(unit.raise_event("heartbeat")), AckFrame)


async def test_store_rejection_becomes_a_nak(tmp_path: Path) -> None:
    intake = MemoryIntake()
    intake.reject_types = {"tamper"}
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty")) as unit,
        SerialTransport(unit.path, intake=intake),
    ):
        answer = await within(unit.raise_event("tamper", event_id="t-1"))
        assert isinstance(answer, NakFrame) and answer.event_id == "t-1"
        assert "refused" in answer.reason


async def test_port_vanishes_and_comes_back(tmp_path: Path) -> None:
    intake = MemoryIntake()
    links: list[bool] = []
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty"), retry_interval=0.3) as unit,
        SerialTransport(
            unit.path, intake=intake, reopen_initial=0.05, reopen_max=0.2, on_link=links.append
        ) as transport,
    ):
        assert isinstance(await within(unit.raise_event("pendant", event_id="before")), AckFrame)
        unit.unplug()  # USB lead pulled: the bridge's reads fail
        await eventually(lambda: not transport.connected)
        with pytest.raises(LinkDown):
            await transport.send_command("unit-1", "c-1", "test", None)
        await asyncio.sleep(0.3)  # a few failed reopen attempts while the symlink dangles
        unit.plug()
        answer = await within(unit.raise_event("fall", event_id="after"))
        assert isinstance(answer, AckFrame)
        assert set(intake.events) == {("unit-1", "before"), ("unit-1", "after")}
        assert transport.opens >= 2
        assert links[:3] == [True, False, True]


async def test_command_reaches_the_unit_and_its_result_is_stored(tmp_path: Path) -> None:
    intake = MemoryIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty")) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        await within(transport.wait_connected())
        await transport.send_command("unit-1", "cmd-7", "configure", {"heartbeat_s": 600})
        await within(intake.wait_for(1))
        (event,) = intake.events.values()
        assert event.type == "cmd_result" and event.data["cmd_id"] == "cmd-7"
        assert unit.commands[0].args == {"heartbeat_s": 600}


async def test_a_blocked_write_waits_without_spinning(tmp_path: Path) -> None:
    """The DESIGN.md trap: a partly completed write must wait for writability, not busy-loop."""
    intake = MemoryIntake()
    async with (
        SimulatedSerialUnit("unit-1", link=str(tmp_path / "tty"), answer_commands=False) as unit,
        SerialTransport(unit.path, intake=intake) as transport,
    ):
        await within(transport.wait_connected())
        unit.pause_reading()
        args = {"message": "x" * 400}
        sent = 0
        blocked: asyncio.Task[None] | None = None
        for i in range(2000):  # fill the pty buffer until a write cannot finish
            task = asyncio.create_task(transport.send_command("unit-1", f"c{i}", "announce", args))
            await asyncio.wait({task}, timeout=0.2)
            if not task.done():
                blocked = task
                break
            sent += 1
        assert blocked is not None, "the pty never filled up"
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.sleep(1.0)
        cpu_used = time.process_time() - cpu_before
        assert time.perf_counter() - wall_before >= 1.0
        assert cpu_used < 0.3, f"writer spun: {cpu_used:.2f}s CPU in 1s of waiting"
        unit.resume_reading()
        await within(blocked)
        await eventually(lambda: len(unit.commands) >= sent + 1)
        assert unit.commands[-1].cmd_id == f"c{sent}"
