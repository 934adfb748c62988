"""Per-device credentials on REAL brokers: a private Mosquitto that uses the bridge's password and ACL
files, and the embedded broker (amqtt) that reads the same password file and enforces the same ACL.
The same tests run on both: a unit publishes only as itself and reads only its own replies, a wrong
or missing password is refused, a retired unit cannot connect, only the bridge's user does everything."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from harness import (
    IN_CI,
    RunningBridge,
    credentials_env,
    eventually,
    free_port,
    make_config,
    reachable,
    running_bridge,
)

from bridge.credentials import (
    UNIT_PUBLISHES,
    UNIT_READS,
    acl_allows,
    broker_acl,
    check_mosquitto_hash,
    mosquitto_hash,
    read_password_file,
    render_acl,
    render_password_file,
    write_atomically,
)
from devices.mqtt_codec import encode_command, encode_event
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
    for kind in ("event", "alarm", "status"):  # v1.1: a unit publishes its own alarm too
        assert f"pattern write telecare/v1/%u/{kind}\n" in acl
    assert "pattern read telecare/v1/%u/ack\n" in acl and "pattern read telecare/v1/%u/cmd\n" in acl
    assert "#" not in acl.split("pattern", 1)[1]  # no wildcard for units
    assert render_password_file([("a", "$7$x"), ("b", "$7$y")]) == "a:$7$x\nb:$7$y\n"
    text = "# units\n" + render_password_file([("a", "$7$x"), ("b", "$7$y")]) + "\n  \nnocolon\n"
    assert read_password_file(text) == {"a": "$7$x", "b": "$7$y"}


def test_one_rule_set_decides_like_the_mosquitto_file() -> None:
    """The embedded broker's decisions come from the same rules the Mosquitto file is rendered from."""
    rules = broker_acl("t", "br")
    assert len([line for line in render_acl("t", "br").splitlines() if line.startswith("pattern")]) == len(
        UNIT_PUBLISHES + UNIT_READS
    )
    for kind in UNIT_PUBLISHES:
        assert acl_allows(rules, "a", f"t/v1/a/{kind}", "write")
        assert not acl_allows(rules, "a", f"t/v1/b/{kind}", "write")
        assert not acl_allows(rules, "a", f"t/v1/a/{kind}", "read")
    for kind in UNIT_READS:
        assert acl_allows(rules, "a", f"t/v1/a/{kind}", "read")
        assert acl_allows(rules, "a", f"t/v1/a/{kind}", "read", subscribe=True)
        assert not acl_allows(rules, "a", f"t/v1/a/{kind}", "write")  # a unit never acks or commands
        assert not acl_allows(rules, "a", f"t/v1/b/{kind}", "read")
    for wide in ("t/v1/+/ack", "t/v1/#", "t/#", "#", "t/v1/a/+"):
        assert not acl_allows(rules, "a", wide, "read", subscribe=True), wide
    assert not acl_allows(rules, "a/b", "t/v1/a/b/event", "write")  # no pattern for a username with /
    assert acl_allows(rules, "br", "t/v1/+/event", "read", subscribe=True)
    assert acl_allows(rules, "br", "t/v1/x/cmd", "write") and not acl_allows(rules, "br", "t2/v1/x", "write")
    # Anonymous (only the embedded broker's demo mode lets it in): a unit's rights, never the bridge's.
    assert acl_allows(rules, None, "t/v1/x/event", "write")
    assert not acl_allows(rules, None, "t/v1/x/cmd", "write")


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
        deadline = time.monotonic() + 30  # polling another process's listener: nothing to wait on here
        while not reachable("127.0.0.1", port):
            if proc.poll() is not None:
                pytest.fail("mosquitto exited at start")
            assert time.monotonic() < deadline, "mosquitto never listened"
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

        async def a_signs_in() -> bool:  # the bridge's reload_command sent SIGHUP; the broker rereads
            try:
                await connect_as(port, "unit-a", passwords["unit-a"])
            except aiomqtt.MqttError:
                return False
            return True

        await eventually(a_signs_in, timeout=20)

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


# -- the same ACL on both brokers: A cannot act as B ------------------------------------------------
ROOT = "secure"


@dataclass
class Secured:
    """A bridge on a broker that requires credentials, with units ``unit-a`` and ``unit-b`` issued."""

    b: RunningBridge
    port: int
    bridge_password: str
    passwords: dict[str, str]

    @staticmethod
    def topic(device_id: str, kind: str) -> str:
        return f"{ROOT}/v1/{device_id}/{kind}"

    def unit(self, device_id: str, **kw: Any) -> SimulatedUnit:
        """A simulated unit signed in with its own credentials."""
        return SimulatedUnit(
            device_id,
            port=self.port,
            topic_root=ROOT,
            username=device_id,
            password=self.passwords[device_id],
            retry_initial_s=0.5,
            **kw,
        )

    def client(self, username: str, identifier: str, **kw: Any) -> aiomqtt.Client:
        """A raw MQTT client signed in as ``username`` (a unit or the bridge's user)."""
        password = self.bridge_password if username == "telecare-bridge" else self.passwords[username]
        return aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=identifier,
            username=username,
            password=password,
            timeout=10,
            **kw,
        )

    async def online(self, device_id: str) -> Any:
        async with self.b.store.read() as tx:
            row = await tx.fetchone("SELECT online FROM devices WHERE id = ?", device_id)
        return row["online"] if row else None


async def connects(port: int, username: str | None, password: str | None, **kw: Any) -> bool:
    kw.setdefault("identifier", f"probe-{username}")
    try:
        async with aiomqtt.Client("127.0.0.1", port, username=username, password=password, timeout=5, **kw):
            return True
    except aiomqtt.MqttError:
        return False


@pytest.fixture(params=["embedded", "mosquitto"])
async def secured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Secured]:
    """The same set-up on the embedded broker and on a private Mosquitto with the bridge's files."""
    if request.param == "mosquitto":
        port, passwd, acl, proc = request.getfixturevalue("secured_mosquitto")
        config = make_config(
            tmp_path,
            mqtt_url=f"mqtt://telecare-bridge:{BRIDGE_PASSWORD}@127.0.0.1:{port}",
            topic_root=ROOT,
            TELECARE_CREDENTIALS__ENABLED="true",
            TELECARE_CREDENTIALS__PASSWORD_FILE=str(passwd),
            TELECARE_CREDENTIALS__ACL_FILE=str(acl),
            TELECARE_CREDENTIALS__RELOAD_COMMAND=f"kill -HUP {proc.pid}",
        )
    else:
        config = make_config(tmp_path, topic_root=ROOT, **credentials_env(tmp_path))
    async with running_bridge(config) as b:
        if b.bridge.broker is not None:
            port, bridge_password = b.bridge.broker.port, b.bridge.broker.bridge_password
        else:
            bridge_password = BRIDGE_PASSWORD
        passwords = {}
        for unit in ("unit-a", "unit-b"):
            status, _ = await b.call(
                "POST", "/api/v1/devices", user="ian", role="installer", json={"id": unit, "kind": "gsm_unit"}
            )
            assert status == 201
            status, body = await b.call(
                "POST", f"/api/v1/devices/{unit}/credential", user="ian", role="installer"
            )
            assert status == 201
            passwords[unit] = body["password"]
        # Mosquitto rereads its files on the SIGHUP the bridge sent; the embedded broker on the next sign-in.
        await eventually(lambda: connects(port, "unit-b", passwords["unit-b"]), timeout=10)
        yield Secured(b, port, bridge_password, passwords)


async def test_strangers_are_refused(secured: Secured) -> None:
    s = secured
    for username, password in (
        (None, None),  # anonymous
        ("unit-a", "guess"),  # wrong password
        ("unit-a", s.passwords["unit-b"]),  # someone else's password
        ("unit-z", s.passwords["unit-a"]),  # no such unit
        ("telecare-bridge", "guess"),  # the bridge's user with a guess
        ("telecare-bridge", s.passwords["unit-a"]),
    ):
        assert not await connects(s.port, username, password), (username, password)
    assert await connects(s.port, "unit-a", s.passwords["unit-a"])


async def test_a_unit_cannot_raise_clear_or_answer_for_another(secured: Secured) -> None:
    """The spoofs from the issue: a forged pendant, mains_restored, cmd_result and status as unit B."""
    s = secured
    async with s.unit("unit-b", answer_commands=False) as unit_b, s.unit("unit-a") as unit_a:
        fail = await unit_b.send("mains_fail", timeout=20)
        help_b = await unit_b.send("pendant", timeout=20)
        command = await unit_b.wait_command("call_centre", timeout=20)  # pending: B does not answer it
        await eventually(lambda: _is(s.online("unit-b"), 1))
        forgeries = [
            ("event", encode_event("forged-pendant", "pendant")),
            ("alarm", encode_event("forged-fall", "fall")),
            ("event", encode_event("forged-restored", "mains_restored")),
            ("event", encode_event("forged-result", "cmd_result", data={"cmd_id": command["cmd_id"]})),
            ("status", b"offline"),
        ]
        for kind, payload in forgeries:
            await unit_a.publish_raw(payload, topic=s.topic("unit-b", kind))
        own = await unit_a.send("low_battery", timeout=20)  # after the forgeries, on the same connection
        assert own["result"] == "accepted" and own["alert_id"]
    async with s.b.store.read() as tx:
        rows = await tx.fetchall("SELECT device_id, event_id FROM events")
        outbox = await tx.fetchone("SELECT done_at FROM outbox WHERE cmd_id = ?", command["cmd_id"])
    b_events = {r["event_id"] for r in rows if r["device_id"] == "unit-b"}
    assert b_events == {fail["event_id"], help_b["event_id"]}
    assert not any(r["event_id"].startswith("forged-") for r in rows)
    alert, _ = await s.b.store.get_alert(fail["alert_id"])
    assert alert.state == "raised"  # the forged mains_restored did not clear it
    assert outbox is not None and outbox["done_at"] is None  # the forged cmd_result did not close it
    status, body = await s.b.call("GET", "/api/v1/alerts?state=open")
    b_alerts = sorted(a["type"] for a in body["alerts"] if a["device_id"] == "unit-b")
    assert status == 200 and b_alerts == ["mains_fail", "pendant"]
    assert await s.online("unit-b") == 1  # SimulatedUnit B left cleanly; nobody said offline for it


async def test_a_unit_reads_only_its_own_replies(secured: Secured) -> None:
    s = secured
    own_ack = s.topic("unit-a", "ack")
    async with s.client("unit-a", "spy-a") as spy:
        granted = {}
        for topic_filter in (
            s.topic("unit-b", "ack"),
            s.topic("unit-b", "cmd"),
            f"{ROOT}/v1/+/ack",
            f"{ROOT}/v1/#",
            own_ack,
        ):
            # Refused in the SUBACK (embedded) or granted and filtered per message (Mosquitto 2).
            granted[topic_filter] = [code.value for code in await spy.subscribe(topic_filter, qos=1)]
        if s.b.bridge.broker is not None:
            assert granted == {f: [0x80] for f in granted} | {own_ack: [1]}, granted
        # A unit may not answer itself either: its own ack topic is the bridge's to write.
        await spy.publish(own_ack, json.dumps({"event_id": "self-ack", "result": "accepted"}), qos=1)
        async with s.unit("unit-b") as unit_b:
            await unit_b.send("pendant", timeout=20)
            await unit_b.wait_command("call_centre", timeout=20)  # B's ack and command were sent
        await spy.publish(s.topic("unit-a", "event"), encode_event("spy-1", "low_battery"), qos=1)
        seen: list[tuple[str, dict[str, Any]]] = []
        async with asyncio.timeout(20):
            async for message in spy.messages:
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                seen.append((message.topic.value, body))
                if message.topic.value == own_ack and body.get("event_id") == "spy-1":
                    break
    assert {topic for topic, _ in seen} == {own_ack}, seen
    assert {body["event_id"] for _, body in seen} == {"spy-1"}, seen


async def test_a_unit_cannot_ack_or_command_another(secured: Secured) -> None:
    s = secured
    async with s.unit("unit-b") as unit_b, s.client("unit-a", "forger-a") as forger:
        await forger.publish(
            s.topic("unit-b", "ack"),
            json.dumps({"event_id": "forged-ack", "result": "accepted", "alert_id": "999"}),
            qos=1,
        )
        await forger.publish(
            s.topic("unit-b", "cmd"),
            encode_command("forged-cmd", "configure", {"numbers": ["+447700900999"]}),
            qos=1,
        )
        ack = await unit_b.send("low_battery", timeout=20)
    assert ack["result"] == "accepted"
    assert [a["event_id"] for a in unit_b.log.acks] == [ack["event_id"]]
    assert unit_b.log.commands == []


async def test_the_bridge_user_reads_and_writes_everything(secured: Secured) -> None:
    s = secured
    async with s.client("telecare-bridge", "bridge-watch") as watch, s.unit("unit-a") as unit_a:
        await watch.subscribe(f"{ROOT}/v1/#", qos=1)
        await unit_a.publish_raw(encode_event("a-alarm", "fall"), topic=s.topic("unit-a", "alarm"))
        await unit_a.publish_raw(encode_event("forged-alarm", "fall"), topic=s.topic("unit-b", "alarm"))
        await watch.publish(
            s.topic("unit-a", "cmd"), encode_command("from-watch", "announce", {"message": "hello"}), qos=1
        )
        command = await unit_a.wait_command("announce", timeout=20)
        assert command["cmd_id"] == "from-watch"
        seen: list[str] = []
        async with asyncio.timeout(20):
            async for message in watch.messages:
                seen.append(message.topic.value)
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if isinstance(body, dict) and body.get("data", {}).get("cmd_id") == "from-watch":
                    break  # unit A's cmd_result: everything before it was delivered
    assert {s.topic("unit-a", "alarm"), s.topic("unit-a", "cmd"), s.topic("unit-a", "event")} <= set(seen)
    assert s.topic("unit-b", "alarm") not in seen


async def test_a_refused_stranger_disturbs_no_session(secured: Secured) -> None:
    """amqtt used to drop or rewrite the session under a client id before authenticating the newcomer:
    an anonymous client taking the bridge's client id silenced it."""
    s = secured
    bridge_id = s.b.bridge.mqtt._client_id
    async with s.unit("unit-b") as unit_b:
        for identifier in (bridge_id, "unit-unit-b"):
            for clean in (True, False):
                for username, password in ((None, None), ("unit-b", "guess")):
                    assert not await connects(
                        s.port, username, password, identifier=identifier, clean_session=clean
                    )
        ack = await unit_b.send("pendant", timeout=20)  # the bridge still reads B; B still reads its acks
        assert ack["result"] == "accepted"
        await unit_b.wait_command("call_centre", timeout=20)


async def test_a_will_on_another_units_status_is_never_published(secured: Secured) -> None:
    s = secured
    async with s.unit("unit-b"):
        await eventually(lambda: _is(s.online("unit-b"), 1))
        for identifier, will_of in (("a-with-b-will", "unit-b"), ("a-with-own-will", "unit-a")):
            client = s.client(
                "unit-a", identifier, will=aiomqtt.Will(s.topic(will_of, "status"), b"offline", qos=1)
            )
            await client.__aenter__()
            if will_of == "unit-a":
                await client.publish(s.topic("unit-a", "status"), b"online", qos=1)
                await eventually(lambda: _is(s.online("unit-a"), 1))
            # Vanish without DISCONNECT, so the broker publishes the will (shut down, not closed: see
            # test_alarm_path.test_will_message_marks_unit_offline).
            client._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            # The socket is gone, so the client's own DISCONNECT fails: that failure is the point of the
            # test, not a fault (an Exception; a cancellation would still propagate).
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
        await eventually(lambda: _is(s.online("unit-a"), 0), timeout=60)  # A's own will arrived
        assert await s.online("unit-b") == 1


async def test_retained_messages_reach_no_one_else(secured: Secured) -> None:
    """amqtt replayed retained messages to any client that connected while anyone held a matching
    subscription -- unit B got unit A's retained event, past the read ACL."""
    s = secured
    async with s.client("unit-a", "retainer") as unit_a:
        await unit_a.subscribe(s.topic("unit-a", "ack"), qos=1)
        kept = encode_event("kept-1", "low_battery")
        await unit_a.publish(s.topic("unit-a", "event"), kept, qos=1, retain=True)
        async with asyncio.timeout(20):
            async for message in unit_a.messages:
                if json.loads(bytes(message.payload)).get("event_id") == "kept-1":  # type: ignore[arg-type]
                    break
    async with s.client("unit-b", "late-b") as unit_b:
        await unit_b.subscribe(s.topic("unit-b", "ack"), qos=1)
        await unit_b.publish(s.topic("unit-b", "event"), encode_event("b-1", "low_battery"), qos=1)
        seen: list[str] = []
        async with asyncio.timeout(20):
            async for message in unit_b.messages:
                seen.append(message.topic.value)
                if json.loads(bytes(message.payload)).get("event_id") == "b-1":  # type: ignore[arg-type]
                    break
    assert seen == [s.topic("unit-b", "ack")]


async def test_embedded_broker_refuses_anonymous_by_default(tmp_path: Path) -> None:
    async with running_bridge(make_config(tmp_path)) as b:  # credentials off, anonymous off: bridge only
        assert b.bridge.broker is not None
        assert not await connects(b.bridge.broker.port, None, None)
        status, body = await b.call("GET", "/healthz", user=None)
        assert status == 200, body  # the bridge itself signed in


async def test_embedded_demo_mode_lets_anonymous_units_in_but_never_as_the_bridge(tmp_path: Path) -> None:
    config = make_config(tmp_path, TELECARE_MQTT__EMBEDDED_ALLOW_ANONYMOUS="true")
    async with running_bridge(config) as b:
        host, port = b.broker
        async with SimulatedUnit("anon-1", host=host, port=port, retry_initial_s=0.5) as unit:
            first = await unit.send("low_battery", timeout=20)
            assert first["result"] == "accepted"
            async with aiomqtt.Client(host, port, identifier="anon-forger", timeout=10) as forger:
                forged_ack = json.dumps({"event_id": "x", "result": "accepted"})
                await forger.publish("telecare/v1/anon-1/ack", forged_ack, qos=1)
                await forger.publish("telecare/v1/anon-1/cmd", encode_command("forged", "configure"), qos=1)
            second = await unit.send("low_battery", timeout=20)
        assert [a["event_id"] for a in unit.log.acks] == [first["event_id"], second["event_id"]]
        assert unit.log.commands == []
        assert not await connects(port, "anon-1", "any")  # a name without a credential is still refused


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_no_unit_gets_the_bridges_user_name(tmp_path: Path) -> None:
    """A unit registered as ``telecare-bridge`` would otherwise get a password-file line with the
    bridge's rights."""
    async with running_bridge(make_config(tmp_path, **credentials_env(tmp_path))) as b:
        status, _ = await b.call(
            "POST",
            "/api/v1/devices",
            user="ian",
            role="installer",
            json={"id": "telecare-bridge", "kind": "gsm_unit"},
        )
        assert status == 201
        status, body = await b.call(
            "POST", "/api/v1/devices/telecare-bridge/credential", user="ian", role="installer"
        )
        assert status == 409 and "bridge's own broker user" in body["detail"]["message"]
        assert "telecare-bridge" not in (tmp_path / "mosquitto.passwd").read_text()


async def test_a_retired_unit_can_no_longer_sign_in(secured: Secured) -> None:
    s = secured
    status, _ = await s.b.call(
        "POST", "/api/v1/devices/unit-b/retire", user="ian", role="installer", json={"reason": "returned"}
    )
    assert status == 200

    async def b_refused() -> bool:
        return not await connects(s.port, "unit-b", s.passwords["unit-b"])

    await eventually(b_refused, timeout=10)  # the embedded broker rereads the file; Mosquitto on SIGHUP
    assert await connects(s.port, "unit-a", s.passwords["unit-a"])
