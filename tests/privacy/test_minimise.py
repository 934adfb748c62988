"""Minimisation: supervisors are texted what they need to act, responders the address; the paths that
once logged phone numbers and SMS texts (Twilio, the GSM modem) log none now, whatever they send or
receive; the log filter masks what any library writes; and a validation error never echoes the
personal data that was sent."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clock import SteppedClock
from escalation_support import SUPERVISOR, advance, at_raise, twilio_config
from harness import RunningBridge, running_bridge
from serial_support import MemoryIntake, eventually, within

from alarm_centre.escalation.notify import DeliveryFailed, Notifier
from bridge.redaction import install_log_redaction
from bridge.transports.gsm import GsmModem
from simulators.gsm_modem import SimulatedModem
from simulators.twilio_server import TwilioServer

ADDRESS = "12 St James's Square, London SW1Y 4JH"
RESPONDER = "+447700900101"
CARD = {
    "address": ADDRESS,
    "key_safe": "left of the door, code 1815",
    "medical_notes": "Multiple sclerosis",
    "responders": [{"name": "Byron King", "phone": RESPONDER}],
}
PERSONAL = [ADDRESS, "Ada Lovelace", "code 1815", "Multiple sclerosis", "Byron King", RESPONDER, SUPERVISOR]


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the bridge and its libraries logged during the test, as the records were made (no
    filter applied). The simulators stand in for the outside world (Twilio's own logs are Twilio's)."""
    return "\n".join(
        f"{r.name}: {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("simulators.")
    )


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


async def test_supervisors_get_no_address_responders_do_and_the_log_gets_neither(
    tmp_path: Path, twilio: TwilioServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = SteppedClock()
    async with running_bridge(twilio_config(tmp_path, twilio), clock=clock) as bridge:
        await bridge.store.devices.upsert_resident("res-ada", "Ada Lovelace", CARD)
        await bridge.store.devices.upsert_device("unit-ada", "gsm_unit", resident_id="res-ada")
        alert_id = await raise_pendant(bridge)
        await at_raise(bridge, clock, alert_id)
        await advance(bridge, clock, 2.1)
        async with asyncio.timeout(15):
            to_supervisor = await twilio.next_message()
        await advance(bridge, clock, 1.0)
        async with asyncio.timeout(15):
            call = await twilio.next_call()
        assert to_supervisor.to == SUPERVISOR
        assert f"alert {alert_id}" in to_supervisor.body and "Pendant alarm for A. L." in to_supervisor.body
        said = " ".join(call.spoken_text)
        for text in (to_supervisor.body, said):
            assert ADDRESS not in text and "Lovelace" not in text and "1815" not in text, text
        # Resolved with responder_sent: the responder, who goes to the home, gets the address.
        assert (await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="olive"))[0] == 200
        status, _ = await bridge.call(
            "POST", f"/api/v1/alerts/{alert_id}/resolve", user="olive", json={"outcome": "responder_sent"}
        )
        assert status == 200
        async with asyncio.timeout(15):
            to_responder = await twilio.next_message()
        assert (
            to_responder.to == RESPONDER
            and ADDRESS in to_responder.body
            and "Ada Lovelace" in to_responder.body
        )
        # The responder texts back; a supervisor's number Twilio refuses (its error names the number).
        reply = await twilio.reply_sms(bridge.url + "/twilio/sms", RESPONDER, "YES on my way, Byron King")
        assert reply.status == 200
    async with Notifier(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        from_number="+441632960000",
        api_base_url=twilio.base_url,
        request_timeout=5.0,
        max_attempts=2,
    ) as notifier:
        twilio.fail_next(2, status=500, message=f"Upstream trouble texting {SUPERVISOR}")
        with pytest.raises(DeliveryFailed):
            await notifier.send_sms(to=SUPERVISOR, body=f"About {ADDRESS}")
        with pytest.raises(DeliveryFailed) as refused:
            await notifier.send_sms(to="+44 7700 900101", body="x")
        assert "7700" not in str(refused.value)
    text = logged(caplog)
    assert "twilio sms" in text and "***001" in text  # the sends are logged, the numbers masked
    leaks = [value for value in PERSONAL if value in text]
    assert leaks == [], leaks


async def raise_pendant(bridge: RunningBridge) -> str:
    from escalation_support import raise_alert

    return await raise_alert(bridge, "unit-ada")


async def test_the_modem_logs_no_sms_text_and_no_sender(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger, unit = "+447700900123", "+447700900001"
    broken = False

    async def resolve(number: str) -> str | None:
        if broken:
            raise ConnectionError("the registry cannot answer")
        return {unit: "gsm-unit-1"}.get(number)

    async with SimulatedModem(link=str(tmp_path / "modem")) as modem:
        intake = MemoryIntake()
        options = {"command_timeout": 0.5, "poll_interval": 0.3, "reinit_initial": 0.05, "reinit_max": 0.2}
        async with GsmModem(modem.path, intake=intake, resolve_sender=resolve, **options) as gsm:
            await within(gsm.wait_ready())
            await modem.deliver(stranger, "hello Ada, see you tuesday at 12 St James's Square")
            await modem.deliver(unit, "ALARM PENDANT")
            await within(intake.wait_for(1))
            await eventually(lambda: not modem.storage)
            assert gsm.counts.get("ignored") == 1
            broken = True
            await modem.deliver(stranger, "are you there")
            await eventually(lambda: gsm.counts.get("ignored") == 1 and bool(modem.storage))
            await eventually(lambda: "cannot resolve sender" in logged(caplog))
    text = logged(caplog)
    assert "not an alarm and not a call for help" in text and "***123" in text
    for value in (stranger, unit, "tuesday", "St James", "are you there", "ALARM PENDANT"):
        assert value not in text, value


def test_the_filter_masks_numbers_whoever_logs_them() -> None:
    """What a library writes (a Twilio error, a traceback) passes the filter on the way out."""
    script = (
        "import logging, sys\n"
        "from bridge.cli.common import load\n"
        "import argparse\n"
        "load(argparse.Namespace(config=None))\n"
        "log = logging.getLogger('twilio.http_client')\n"
        "log.warning('POST To=%s Body=%s', '+447700900101', 'ring 07700 900102 or 07700900103')\n"
        "try:\n"
        "    raise ValueError('The To number +447700900104 is not valid')\n"
        "except ValueError:\n"
        "    log.exception('alert %s failed at %s', 4242, 1715000000.5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TELECARE_STORE__URL": "/nonexistent/x.db"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "To=***101" in err and "07700900103" not in err and "***103" in err
    assert "+447700900104" not in err and "***104" in err and "ValueError" in err  # the traceback stays
    assert "alert 4242 failed at 1715000000.5" in err  # ids and times are not phone numbers


def test_the_filter_is_installed_once_per_handler() -> None:
    logger = logging.getLogger("test-redaction-install")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        first = install_log_redaction(logger)
        assert install_log_redaction(logger) is first and handler.filters == [first]
    finally:
        logger.removeHandler(handler)


#: (method, path, body) with personal data in the wrong shape; none may come back in the answer.
BAD_INPUTS = [
    (
        "POST",
        "/api/v1/residents",
        {"id": "r1", "name": "Ada", "responders": [{"name": "Byron King", "phone": "+44 7700 900101"}]},
    ),
    ("POST", "/api/v1/residents", {"id": "r1", "name": "Ada", "language": "Ada's own private dialect"}),
    ("POST", "/api/v1/residents", {"id": "r1", "name": "Ada", "medical_notes": "Multiple sclerosis " * 400}),
    ("POST", "/api/v1/residents", {"id": "r1", "name": "Ada", "address": ["12 St James's Square"]}),
    ("POST", "/api/v1/residents", {"id": "r1", "name": "Ada", "key_safe": {"code": "1815"}}),
    ("POST", "/api/v1/residents", {"id": "Ada Lovelace's id", "name": "Ada"}),
    ("POST", "/api/v1/residents", {"id": "r1", "name": "Ada", "surname": "Lovelace"}),
    ("POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "phone": "07700 900101"}),
    ("POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "imei": "4901542032375199"}),
    ("POST", "/api/v1/alerts/1/resolve", {"outcome": "ambulance", "note": "Multiple sclerosis " * 200}),
    (
        "PUT",
        "/api/v1/escalation/policies/1",
        {"steps": [{"after_s": 5, "action": "sms", "to": ["+44 7700 900101"]}]},
    ),
    (
        "POST",
        "/api/v1/alexa-links",
        {"device_id": "e1", "alexa_device_id": "Ada Lovelace", "resident_id": "r1"},
    ),
    ("POST", "/api/v1/privacy/residents/r1/erase", {"reference": "SAR-1", "confirm": "Ada Lovelace"}),
]


async def test_validation_errors_never_echo_what_was_sent(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    await b.store.devices.upsert_resident("r1", "Ada")
    for method, path, body in BAD_INPUTS:
        status, answer = await b.call(method, path, user="root", role="admin", json=body)
        assert status == 422, (path, body, answer)
        text = json.dumps(answer)
        sent = json.dumps(body)
        for value in (
            "7700 900101",
            "07700 900101",
            "Byron King",
            "private dialect",
            "Multiple sclerosis",
            "St James",
            "1815",
            "Lovelace",
            "4901542032375199",
        ):
            if value in sent:
                assert value not in text, (path, value, answer)
        assert '"input"' not in text and '"ctx"' not in text
    # A CSV import's row errors too.
    token = await b.token("ian", "installer")
    async with b.session.post(
        b.url + "/api/v1/registry/import?format=csv&kind=residents",
        data="id,name,responders\nr2,Bill,Dorothy Tutte +447700900201\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    ) as resp:
        text = await resp.text()
    assert resp.status == 422 and "responder 1 must be written" in text
    assert "Dorothy" not in text and "900201" not in text
