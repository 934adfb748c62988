"""SCAIP units in the registry: the caller id's rule and uniqueness, the answer mode, and the SIP password
that is written but never read back (API answers, export, repr, the CLI); bulk import of the columns."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge

from devices.registry import Device

PASSWORD = "unit-sip-secret-77"


async def installer(b: RunningBridge, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await b.call(method, path, user="ian", role="installer", json=body)


def unit(device_id: str, cid: str, **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "kind": "ip_unit", "channel": "scaip", "scaip_cid": cid, **extra}


async def stored_password(b: RunningBridge, device_id: str) -> str | None:
    async with b.store.read() as tx:
        row = await tx.fetchone("SELECT scaip_password FROM devices WHERE id = ?", device_id)
    assert row is not None
    return row["scaip_password"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (unit("s1", ""), "scaip_cid"),  # scaip without a cid
        (unit("s1", "1" * 33), "scaip_cid"),  # 33 digits
        (unit("s1", "12a4"), "scaip_cid"),
        (unit("s1", "1234", scaip_answer="sms"), "scaip_answer"),
        (unit("s1", "1234", scaip_password="short"), "scaip_password"),
        ({"id": "s1", "kind": "ip_unit", "scaip_password": "long-enough-pw"}, "scaip_password"),
    ],
)
async def test_bad_scaip_fields_are_422_naming_the_field(
    embedded_bridge: RunningBridge, body: dict[str, Any], field: str
) -> None:
    status, answer = await installer(embedded_bridge, "POST", "/api/v1/devices", body)
    assert status == 422, answer
    assert field in str(answer)
    assert "short" not in str(answer).replace("scaip_password", "")  # a refused password is never echoed


async def test_cid_is_unique_and_freed_by_retiring(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, first = await installer(b, "POST", "/api/v1/devices", unit("unit-a", "4670001"))
    assert status == 201 and first["scaip_cid"] == "4670001" and first["scaip_answer"] is None
    status, answer = await installer(b, "POST", "/api/v1/devices", unit("unit-b", "4670001"))
    assert status in (409, 422) and "scaip_cid" in str(answer)
    assert (await installer(b, "POST", "/api/v1/devices/unit-a/retire", {"reason": "replaced"}))[0] == 200
    status, answer = await installer(
        b, "POST", "/api/v1/devices", unit("unit-b", "4670001", scaip_answer="message")
    )
    assert status == 201 and answer["scaip_answer"] == "message", answer


async def test_password_is_write_only_and_kept_across_edits(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, created = await installer(
        b, "POST", "/api/v1/devices", unit("unit-p", "4670002", scaip_password=PASSWORD)
    )
    assert status == 201 and created["scaip_password_set"] is True and "scaip_password" not in created
    status, edited = await installer(b, "PATCH", "/api/v1/devices/unit-p", {"firmware": "3.1"})
    assert status == 200 and edited["scaip_password_set"] is True
    assert await stored_password(b, "unit-p") == PASSWORD
    for path in ("/api/v1/devices/unit-p", "/api/v1/devices", "/api/v1/registry/export?format=yaml"):
        status, body = await installer(b, "GET", path)
        assert status == 200 and PASSWORD not in str(body), path
    status, csv_text = await installer(b, "GET", "/api/v1/registry/export?format=csv&kind=devices")
    assert status == 200 and "scaip_cid" in csv_text and "4670002" in csv_text and PASSWORD not in csv_text
    status, _ = await installer(b, "PATCH", "/api/v1/devices/unit-p", {"scaip_password": "another-password"})
    assert status == 200 and await stored_password(b, "unit-p") == "another-password"


def test_the_password_is_not_in_a_device_repr_or_dump() -> None:
    device = Device.model_validate(unit("unit-r", "1", scaip_password=PASSWORD))
    assert device.scaip_password == PASSWORD
    assert PASSWORD not in repr(device) and PASSWORD not in str(device.model_dump())


async def test_bulk_import_takes_the_scaip_columns(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    text = (
        "id,kind,channel,scaip_cid,scaip_answer,scaip_password\n"
        f"unit-i1,ip_unit,scaip,4670010,message,{PASSWORD}\n"
        "unit-i2,ip_unit,scaip,4670011,,\n"
    )
    token = await b.token("ian", "installer")
    async with b.session.post(
        f"{b.url}/api/v1/registry/import?format=csv&kind=devices",
        data=text.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    ) as resp:
        report = await resp.json()
        assert resp.status == 200, report
    status, one = await installer(b, "GET", "/api/v1/devices/unit-i1")
    assert status == 200 and (one["scaip_cid"], one["scaip_answer"], one["scaip_password_set"]) == (
        "4670010",
        "message",
        True,
    )
    assert await stored_password(b, "unit-i1") == PASSWORD
    status, two = await installer(b, "GET", "/api/v1/devices/unit-i2")
    assert status == 200 and (two["scaip_answer"], two["scaip_password_set"]) == (None, False)


def _cli(*argv: str) -> tuple[int, str]:
    from bridge.cli.main import main

    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


async def test_cli_registers_a_scaip_unit_keeps_its_password_on_edit_and_never_prints_it(
    embedded_bridge: RunningBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELECARE_STORE__URL", embedded_bridge.bridge.config.store.url)
    monkeypatch.setenv("TELECARE_LOG__LEVEL", "WARNING")
    monkeypatch.delenv("TELECARE_CONFIG", raising=False)
    add = ("devices", "add", "unit-cli", "--kind", "ip_unit", "--channel", "scaip", "--scaip-cid", "4670020")
    code, out = await asyncio.to_thread(_cli, *add, "--scaip-answer", "message", "--scaip-password", PASSWORD)
    assert code == 0, out
    assert "4670020" in out and "message" in out and PASSWORD not in out
    code, out = await asyncio.to_thread(_cli, "devices", "edit", "unit-cli", "--firmware", "2.0")
    assert code == 0 and PASSWORD not in out, out
    assert await stored_password(embedded_bridge, "unit-cli") == PASSWORD
