"""Per-device credentials with a REAL private Mosquitto that uses the bridge's password and ACL files:
a unit publishes only as itself, a wrong or missing password is refused, a retired unit cannot connect."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from harness import IN_CI, eventually, free_port, make_config, reachable, running_bridge

from bridge.credentials import (
    check_mosquitto_hash,
    mosquitto_hash,
    render_acl,
    render_password_file,
    write_atomically,
)
from devices.mqtt_codec import encode_event
from simulators.unit import SimulatedUnit

BRIDGE_PASSWORD = "bridge-secret-0123456789"


def test_hash_format_is_mosquitto_2() -> None:
    hashed = mosquitto_hash("s3cret", salt=b"0123456789ab")
    kind, iterations, salt, key = hashed.split("$")[1:]
    assert (kind, iterations, salt) == ("7", "101", "MDEyMzQ1Njc4OWFi") and len(key) == 88
    assert check_mosquitto_hash("s3cret", hashed) and not check_mosquitto_hash("secret", hashed)
    assert mosquitto_hash("s3cret") != mosquitto_hash("s3cret")  # a fresh salt each time


def test_our_check_reads_mosquitto_passwd_output(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        if IN_CI:
            pytest.fail("mosquitto_passwd not found; CI must have Mosquitto's tools")
        pytest.skip("mosquitto_passwd not installed")
    subprocess.run([binary, "-c", "-b", str(tmp_path / "pw"), "unit-1", "pa55word"], check=True)
    user, hashed = (tmp_path / "pw").read_text().strip().split(":", 1)
    assert user == "unit-1" and check_mosquitto_hash("pa55word", hashed)


def test_acl_confines_units_to_their_own_topics() -> None:
    acl = render_acl("telecare", "telecare-bridge")
    assert "user telecare-bridge\ntopic readwrite telecare/v1/#\n" in acl
    assert "pattern write telecare/v1/%u/event\n" in acl and "pattern read telecare/v1/%u/cmd\n" in acl
    assert "#" not in acl.split("pattern", 1)[1]  # no wildcard for units
    assert render_password_file([("a", "$7$x"), ("b", "$7$y")]) == "a:$7$x\nb:$7$y\n"


@pytest.fixture
def secured_mosquitto(tmp_path: Path) -> Iterator[tuple[int, Path, Path, subprocess.Popen[bytes]]]:
    """Our own Mosquitto with password_file and acl_file; it starts with only the bridge's user."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        if IN_CI:
            pytest.fail("mosquitto binary not found; CI must install it")
        pytest.skip("mosquitto binary not found")
    port = free_port()
    passwd, acl = tmp_path / "mosquitto.passwd", tmp_path / "mosquitto.acl"
    write_atomically(
        passwd, render_password_file([("telecare-bridge", mosquitto_hash(BRIDGE_PASSWORD))]), 0o644
    )
    write_atomically(acl, render_acl("secure", "telecare-bridge"), 0o644)
    conf = tmp_path / "mosquitto.conf"
    # Run as ourselves: as root Mosquitto would drop to the mosquitto user, which cannot read tmp_path.
    conf.write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"persistence false\npassword_file {passwd}\nacl_file {acl}\nmax_queued_messages 100000\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if reachable("127.0.0.1", port):
                break
            if proc.poll() is not None:
                pytest.fail("mosquitto exited at start")
            import time

            time.sleep(0.05)
        yield port, passwd, acl, proc
    finally:
        proc.terminate()
        proc.wait(10)


async def connect_as(port: int, username: str | None, password: str | None) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"probe-{username}", username=username, password=password, timeout=5
    ):
        pass


async def test_units_publish_only_as_themselves(
    tmp_path: Path, secured_mosquitto: tuple[int, Path, Path, subprocess.Popen[bytes]]
) -> None:
    port, passwd, acl, proc = secured_mosquitto
    config = make_config(
        tmp_path,
        mqtt_url=f"mqtt://telecare-bridge:{BRIDGE_PASSWORD}@127.0.0.1:{port}",
        topic_root="secure",
        TELECARE_CREDENTIALS__ENABLED="true",
        TELECARE_CREDENTIALS__PASSWORD_FILE=str(passwd),
        TELECARE_CREDENTIALS__ACL_FILE=str(acl),
        TELECARE_CREDENTIALS__RELOAD_COMMAND=f"kill -HUP {proc.pid}",
    )
    async with running_bridge(config) as b:
        passwords = {}
        for unit in ("unit-a", "unit-b"):
            assert (
                await b.call(
                    "POST",
                    "/api/v1/devices",
                    user="ian",
                    role="installer",
                    json={"id": unit, "kind": "gsm_unit"},
                )
            )[0] == 201
            status, body = await b.call(
                "POST", f"/api/v1/devices/{unit}/credential", user="ian", role="installer"
            )
            assert status == 201 and body["username"] == unit
            passwords[unit] = body["password"]
        status, _ = await b.call("POST", "/api/v1/devices/unit-a/credential", user="olive", role="operator")
        assert status == 403
        text = passwd.read_text()
        assert (
            text.startswith("telecare-bridge:$7$101$")
            and "unit-a:$7$" in text
            and passwords["unit-a"] not in text
        )
        await asyncio.sleep(0.3)  # the bridge's reload_command sent SIGHUP; let the broker reread

        async with SimulatedUnit(
            "unit-a",
            port=port,
            topic_root="secure",
            username="unit-a",
            password=passwords["unit-a"],
            call_connects=False,
        ) as unit_a:
            ack = await unit_a.send("pendant", timeout=20)
            assert ack["result"] == "accepted" and ack["alert_id"]
            # Unit A forges an event as unit B: the broker drops it; the bridge never sees it.
            await unit_a.publish_raw(encode_event("forged-1", "fall"), topic="secure/v1/unit-b/event")
            ack = await unit_a.send("low_battery", timeout=20)  # after the forgery, in order
            assert ack["result"] == "accepted"
            async with b.store.read() as tx:
                rows = await tx.fetchall("SELECT device_id, event_id FROM events ORDER BY received_at")
            assert rows and all(r["device_id"] == "unit-a" for r in rows)  # nothing as unit-b
            assert "forged-1" not in {r["event_id"] for r in rows}

        # Wrong password, someone else's password, and no credentials at all: refused.
        for user, password in (("unit-a", "guess"), ("unit-a", passwords["unit-b"]), (None, None)):
            with pytest.raises(aiomqtt.MqttError):
                await connect_as(port, user, password)
        await connect_as(port, "unit-b", passwords["unit-b"])  # B may, for now

        status, body = await b.call(
            "POST",
            "/api/v1/devices/unit-b/retire",
            user="ian",
            role="installer",
            json={"reason": "returned to stock"},
        )
        assert status == 200
        assert "unit-b:" not in passwd.read_text()

        async def b_refused() -> bool:
            try:
                await connect_as(port, "unit-b", passwords["unit-b"])
            except aiomqtt.MqttError:
                return True
            return False

        await eventually(b_refused, timeout=10)
        await connect_as(port, "unit-a", passwords["unit-a"])  # A is unaffected
        status, body = await b.call("POST", "/api/v1/devices/unit-b/credential", user="ian", role="installer")
        assert status == 409 and "not an active unit" in body["detail"]["message"]
