"""The SCAIP receiver against a SIP client nobody here wrote: SIPp (Debian's ``sip-tester``), driving the
scenario files in ``tests/scaip/sipp/`` over UDP and TCP against a real bridge. Each scenario checks the
SIP status and the ``snu`` in the answer itself (SIPp fails the call when a check does not match); these
tests then check what the bridge stored."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import IN_CI, RunningBridge, make_config, running_bridge

from bridge.transports.scaip import SCAIP_RECEIVER

SCENARIOS = Path(__file__).parent / "sipp"


def need_sipp() -> str:
    """SIPp's path: skip locally, fail in CI, when it is missing (scripts/test installs it)."""
    found = shutil.which("sipp")
    if found is None:
        message = "sipp is not installed (apt-get install sip-tester; scripts/test does it as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
async def scaip_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    need_sipp()
    config = make_config(tmp_path, TELECARE_SCAIP__LISTEN="127.0.0.1:0")
    async with running_bridge(config) as running:
        yield running


async def sipp(
    b: RunningBridge, scenario: str, transport: str, tmp_path: Path, *, calls: int = 1, **keys: str
) -> tuple[int, str]:
    """Run one scenario to its end; its exit code (0: every call passed) and what it logged."""
    port = b.bridge.app[SCAIP_RECEIVER].port
    errors = tmp_path / f"{scenario}-{transport}-errors.log"
    argv = [
        need_sipp(),
        f"127.0.0.1:{port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-t",
        {"udp": "u1", "tcp": "t1"}[transport],
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        str(calls),
        "-l",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(errors),
    ]
    for key, value in keys.items():
        argv += ["-key", key, value]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    logged = err.decode(errors="replace") + (errors.read_text(errors="replace") if errors.exists() else "")
    assert process.returncode is not None
    return process.returncode, logged + out.decode(errors="replace")[-2000:]


async def register(b: RunningBridge, device_id: str, cid: str, **extra: Any) -> None:
    body = {"id": device_id, "kind": "ip_unit", "channel": "scaip", "scaip_cid": cid, **extra}
    status, answer = await b.call("POST", "/api/v1/devices", user="ian", role="installer", json=body)
    assert status == 201, answer


async def open_alerts(b: RunningBridge, device_id: str) -> list[dict[str, Any]]:
    status, body = await b.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    return [a for a in body["alerts"] if a["device_id"] == device_id]


def rejected(b: RunningBridge, reason: str) -> float:
    value = b.bridge.metrics.registry.get_sample_value(
        "telecare_events_rejected_reasons_total", {"reason": reason, "transport": "scaip"}
    )
    return value or 0.0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_alarm_gets_snu_0_after_storing_and_a_resend_with_the_same_ref_collapses(
    scaip_bridge: RunningBridge, tmp_path: Path, transport: str
) -> None:
    cid = {"udp": "4671001", "tcp": "4671002"}[transport]
    await register(scaip_bridge, f"sipp-{transport}", cid)
    # Two calls: the same mrq (same ref) in two SIP transactions with different Call-IDs.
    code, logged = await sipp(scaip_bridge, "alarm.xml", transport, tmp_path, calls=2, cid=cid, ref="S1")
    assert code == 0, logged
    alerts = await open_alerts(scaip_bridge, f"sipp-{transport}")
    assert [(a["type"], a["repeat_count"]) for a in alerts] == [("pendant", 0)]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_retransmission_gets_the_same_answer_and_one_alert(
    scaip_bridge: RunningBridge, tmp_path: Path, transport: str
) -> None:
    await register(scaip_bridge, "sipp-rt", "4671003")
    code, logged = await sipp(scaip_bridge, "retransmit.xml", transport, tmp_path, cid="4671003", ref="RT1")
    assert code == 0, logged
    assert [a["type"] for a in await open_alerts(scaip_bridge, "sipp-rt")] == ["fall"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("scenario", "reason"), [("malformed.xml", "invalid_format"), ("missing_tag.xml", "mandatory_missing")]
)
async def test_sipp_bad_messages_get_their_snu_and_store_nothing(
    scaip_bridge: RunningBridge, tmp_path: Path, transport: str, scenario: str, reason: str
) -> None:
    await register(scaip_bridge, "sipp-bad", "4671004")
    code, logged = await sipp(scaip_bridge, scenario, transport, tmp_path, cid="4671004", ref="BAD1")
    assert code == 0, logged
    assert rejected(scaip_bridge, reason) == 1.0
    assert await open_alerts(scaip_bridge, "sipp-bad") == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_heartbeat_feeds_supervision(
    scaip_bridge: RunningBridge, tmp_path: Path, transport: str
) -> None:
    await register(scaip_bridge, "sipp-hb", "4671005", heartbeat_interval_s=600)
    code, logged = await sipp(scaip_bridge, "heartbeat.xml", transport, tmp_path, cid="4671005", ref="HB1")
    assert code == 0, logged
    status, device = await scaip_bridge.call("GET", "/api/v1/devices/sipp-hb")
    assert status == 200 and device["last_seen_at"] is not None
    assert await open_alerts(scaip_bridge, "sipp-hb") == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_receives_the_answer_as_a_message_of_its_own(
    scaip_bridge: RunningBridge, tmp_path: Path, transport: str
) -> None:
    await register(scaip_bridge, "sipp-msg", "4671006", scaip_answer="message")
    code, logged = await sipp(
        scaip_bridge, "answer_message.xml", transport, tmp_path, cid="4671006", ref="M1"
    )
    assert code == 0, logged
    assert [a["type"] for a in await open_alerts(scaip_bridge, "sipp-msg")] == ["fall"]


@pytest.mark.parametrize("scenario", ["options.xml", "invite.xml"])
async def test_sipp_options_answered_and_invite_refused(
    scaip_bridge: RunningBridge, tmp_path: Path, scenario: str
) -> None:
    code, logged = await sipp(scaip_bridge, scenario, "udp", tmp_path, cid="4671007")
    assert code == 0, logged


async def test_the_scenarios_checks_bite(scaip_bridge: RunningBridge, tmp_path: Path) -> None:
    # A scenario expecting snu 3 for a valid alarm must fail: the snu checks are not decoration.
    code, _ = await sipp(scaip_bridge, "wrong_snu.xml", "udp", tmp_path, cid="4671008", ref="W1")
    assert code != 0
