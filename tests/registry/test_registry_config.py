"""Remote configuration over the real Mosquitto: a configure command through the outbox, pending until the
unit's cmd_result confirms it, retried meanwhile, the applied version recorded, newer versions superseding."""

from __future__ import annotations

from harness import RunningBridge, eventually

from simulators.unit import SimulatedUnit


async def config_of(b: RunningBridge, device_id: str) -> dict[str, object]:
    status, body = await b.call("GET", f"/api/v1/devices/{device_id}/config", user="olive", role="operator")
    assert status == 200
    return body  # type: ignore[no-any-return]


async def test_configure_is_confirmed_by_the_unit(bridge: RunningBridge, topic_root: str) -> None:
    b = bridge
    assert (
        await b.call(
            "POST", "/api/v1/devices", user="ian", role="installer", json={"id": "unit-k", "kind": "gsm_unit"}
        )
    )[0] == 201
    host, port = b.broker
    async with SimulatedUnit("unit-k", host=host, port=port, topic_root=topic_root) as unit:
        status, body = await b.call(
            "POST",
            "/api/v1/devices/unit-k/config",
            user="ian",
            role="installer",
            json={
                "settings": {"heartbeat_interval_s": 300, "volume": 7, "centre_numbers": ["+441134960000"]}
            },
        )
        assert status == 202 and body["version"] == 1 and body["pending"]
        command = await unit.wait_command("configure", timeout=15)
        assert command["args"] == {
            "version": 1,
            "settings": {"heartbeat_interval_s": 300, "volume": 7, "centre_numbers": ["+441134960000"]},
        }

        async def applied() -> bool:
            return (await config_of(b, "unit-k"))["applied_version"] == 1

        await eventually(applied)
        body = await config_of(b, "unit-k")
        assert not body["pending"] and body["history"][0]["state"] == "applied"
        status, device = await b.call("GET", "/api/v1/devices/unit-k", user="ian", role="installer")
        assert device["heartbeat_interval_s"] == 300 and device["config"] == {
            "version": 1,
            "applied_version": 1,
            "pending": False,
        }
        assert "config_applied" in [h["action"] for h in device["history"]]


async def test_pending_until_confirmed_and_retried(bridge: RunningBridge, topic_root: str) -> None:
    b = bridge
    assert (
        await b.call(
            "POST", "/api/v1/devices", user="ian", role="installer", json={"id": "unit-q", "kind": "ip_unit"}
        )
    )[0] == 201
    host, port = b.broker
    async with SimulatedUnit(
        "unit-q", host=host, port=port, topic_root=topic_root, answer_commands=False
    ) as unit:
        status, body = await b.call(
            "POST",
            "/api/v1/devices/unit-q/config",
            user="ian",
            role="installer",
            json={"settings": {"volume": 3}},
        )
        assert status == 202
        first = await unit.wait_command("configure", timeout=15)
        assert (await config_of(b, "unit-q"))["pending"]
        # The outbox retries an unconfirmed command (bring its next attempt forward rather than wait 15 s).
        async with b.store.read() as tx:
            row = await tx.fetchone("SELECT attempts FROM outbox WHERE cmd_id = ?", first["cmd_id"])
        assert row["attempts"] == 1

        async def bump(tx: object, post: object) -> None:
            await tx.execute("UPDATE outbox SET next_attempt_at = 0 WHERE cmd_id = ?", first["cmd_id"])  # type: ignore[attr-defined]

        await b.store.transaction(bump)
        b.bridge.outbox.wake()

        async def resent() -> bool:
            return sum(1 for c in unit.log.commands if c["cmd_id"] == first["cmd_id"]) >= 2

        await eventually(resent)
        body = await config_of(b, "unit-q")
        assert body["pending"] and body["history"][0]["attempts"] >= 2
        # A newer change supersedes the pending one: its command stops being retried.
        status, body = await b.call(
            "POST",
            "/api/v1/devices/unit-q/config",
            user="ian",
            role="installer",
            json={"settings": {"volume": 5}},
        )
        assert body["version"] == 2 and [h["state"] for h in body["history"]] == ["pending", "superseded"]
        async with b.store.read() as tx:
            row = await tx.fetchone(
                "SELECT done_at, last_error FROM outbox WHERE cmd_id = ?", first["cmd_id"]
            )
        assert row["done_at"] is not None and "superseded" in row["last_error"]

        async def second() -> bool:
            return any(c["args"]["version"] == 2 for c in unit.log.commands if c["cmd"] == "configure")

        await eventually(second)
        latest = next(c for c in unit.log.commands if c["cmd"] == "configure" and c["args"]["version"] == 2)
        # A late answer to the superseded version is recorded as what the unit now runs; v2 stays pending.
        await unit.send("cmd_result", data={"cmd_id": first["cmd_id"], "ok": True}, timeout=15)
        body = await config_of(b, "unit-q")
        assert body["applied_version"] == 1 and body["pending"]
        # A unit that refuses a version leaves it pending (and shown failed once the outbox closes it).
        await unit.send(
            "cmd_result", data={"cmd_id": latest["cmd_id"], "ok": False, "error": "busy"}, timeout=15
        )
        body = await config_of(b, "unit-q")
        assert body["pending"] and body["history"][0]["state"] == "failed"
        status, body = await b.call(
            "POST",
            "/api/v1/devices/unit-q/config",
            user="ian",
            role="installer",
            json={"settings": {"volume": 5}},
        )

        async def third_sent() -> bool:
            return any(c["args"].get("version") == 3 for c in unit.log.commands if c["cmd"] == "configure")

        await eventually(third_sent)
        third = next(c for c in unit.log.commands if c["cmd"] == "configure" and c["args"]["version"] == 3)
        await unit.send("cmd_result", data={"cmd_id": third["cmd_id"], "ok": True}, timeout=15)
        body = await config_of(b, "unit-q")
        assert body["applied_version"] == 3 and not body["pending"]


async def test_configure_bad_requests(bridge: RunningBridge) -> None:
    b = bridge
    assert (
        await b.call(
            "POST", "/api/v1/devices", user="ian", role="installer", json={"id": "echo-z", "kind": "alexa"}
        )
    )[0] == 201
    assert (
        await b.call(
            "POST", "/api/v1/devices", user="ian", role="installer", json={"id": "unit-z", "kind": "gsm_unit"}
        )
    )[0] == 201
    cases = [
        ("unit-z", {"settings": {}}, 422),
        ("unit-z", {"settings": {"volume": 99}}, 422),
        ("unit-z", {"settings": {"centre_numbers": ["0113 496 0000"]}}, 422),
        ("unit-z", {"settings": {"colour": "red"}}, 422),
        ("echo-z", {"settings": {"volume": 1}}, 409),
        ("ghost", {"settings": {"volume": 1}}, 404),
    ]
    for device, body, code in cases:
        status, answer = await b.call(
            "POST", f"/api/v1/devices/{device}/config", user="ian", role="installer", json=body
        )
        assert status == code, (device, body, answer)
    status, _ = await b.call(
        "POST",
        "/api/v1/devices/unit-z/config",
        user="olive",
        role="operator",
        json={"settings": {"volume": 1}},
    )
    assert status == 403
