"""DC-09 units in the registry: the account's rule and uniqueness, and the key that is written but never
read back (API answers, export, repr, the log)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from harness import RunningBridge

from devices.registry import Device

KEY_TEXT = "SecretPanelKey16"  # 16 characters: an AES-128 key as installers type it


async def installer(b: RunningBridge, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await b.call(method, path, user="ian", role="installer", json=body)


def unit(device_id: str, account: str, **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "kind": "ip_unit", "channel": "dc09", "dc09_account": account, **extra}


async def stored_key(b: RunningBridge, device_id: str) -> str | None:
    async with b.store.read() as tx:
        row = await tx.fetchone("SELECT dc09_key FROM devices WHERE id = ?", device_id)
    assert row is not None
    return row["dc09_key"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (unit("p1", "12"), "dc09_account"),  # too short
        (unit("p1", "12345678901234567"), "dc09_account"),  # too long
        (unit("p1", "12G4"), "dc09_account"),  # not hex
        (unit("p1", "1234", dc09_key="short"), "dc09_key"),
        ({"id": "p1", "kind": "ip_unit", "channel": "dc09"}, "dc09_account"),  # dc09 without an account
    ],
)
async def test_bad_dc09_fields_are_422_naming_the_field(
    embedded_bridge: RunningBridge, body: dict[str, Any], field: str
) -> None:
    status, answer = await installer(embedded_bridge, "POST", "/api/v1/devices", body)
    assert status == 422, answer
    assert field in str(answer)
    assert "short" not in str(answer).replace("dc09_key", "")  # a refused key is never echoed


async def test_account_is_unique_whatever_its_case_and_freed_by_retiring(
    embedded_bridge: RunningBridge,
) -> None:
    b = embedded_bridge
    status, first = await installer(b, "POST", "/api/v1/devices", unit("panel-a", "abcd"))
    assert status == 201 and first["dc09_account"] == "ABCD"
    status, answer = await installer(b, "POST", "/api/v1/devices", unit("panel-b", "ABCD"))
    assert status in (409, 422) and "dc09_account" in str(answer)
    assert (await installer(b, "POST", "/api/v1/devices/panel-a/retire", {"reason": "replaced"}))[0] == 200
    status, answer = await installer(b, "POST", "/api/v1/devices", unit("panel-b", "ABCD"))
    assert status == 201, answer


async def test_key_is_write_only_and_kept_across_edits(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, created = await installer(
        b, "POST", "/api/v1/devices", unit("panel-k", "4455", dc09_key=KEY_TEXT)
    )
    assert status == 201 and created["dc09_key_set"] is True and "dc09_key" not in created
    status, edited = await installer(b, "PATCH", "/api/v1/devices/panel-k", {"firmware": "3.1"})
    assert status == 200 and edited["dc09_key_set"] is True
    assert await stored_key(b, "panel-k") == KEY_TEXT
    for path in ("/api/v1/devices/panel-k", "/api/v1/devices", "/api/v1/registry/export?format=yaml"):
        status, body = await installer(b, "GET", path)
        assert status == 200 and KEY_TEXT not in str(body), path
    status, csv_text = await installer(b, "GET", "/api/v1/registry/export?format=csv&kind=devices")
    assert status == 200 and "dc09_account" in csv_text and KEY_TEXT not in csv_text
    status, changed = await installer(b, "PATCH", "/api/v1/devices/panel-k", {"dc09_key": "00" * 16})
    assert status == 200 and await stored_key(b, "panel-k") == "00" * 16


def test_the_key_is_not_in_a_device_repr_or_dump() -> None:
    device = Device.model_validate(unit("panel-r", "ABC", dc09_key=KEY_TEXT))
    assert device.dc09_key == KEY_TEXT
    assert KEY_TEXT not in repr(device) and KEY_TEXT not in str(device.model_dump())


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


async def test_cli_registers_a_dc09_unit_keeps_its_key_on_edit_and_never_prints_it(
    embedded_bridge: RunningBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELECARE_STORE__URL", embedded_bridge.bridge.config.store.url)
    monkeypatch.setenv("TELECARE_LOG__LEVEL", "WARNING")
    monkeypatch.delenv("TELECARE_CONFIG", raising=False)
    add = ("devices", "add", "panel-cli", "--kind", "ip_unit", "--channel", "dc09")
    code, out = await asyncio.to_thread(_cli, *add, "--dc09-account", "beef", "--dc09-key", KEY_TEXT)
    assert code == 0, out
    assert "BEEF" in out and KEY_TEXT not in out
    code, out = await asyncio.to_thread(_cli, "devices", "edit", "panel-cli", "--firmware", "2.0")
    assert code == 0 and KEY_TEXT not in out, out
    assert await stored_key(embedded_bridge, "panel-cli") == KEY_TEXT
