"""A resident's ``dc09_account`` (the account the upstream centre knows them by) through the CLI and the
bulk import: upper-cased, unique (a clash is a row error naming the field), exported and read back."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import pytest
from harness import RunningBridge

from devices.csv_yaml import parse_csv, to_csv
from devices.registry import Resident


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


@pytest.fixture
def cli_env(embedded_bridge: RunningBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELECARE_STORE__URL", embedded_bridge.bridge.config.store.url)
    monkeypatch.setenv("TELECARE_LOG__LEVEL", "WARNING")
    monkeypatch.delenv("TELECARE_CONFIG", raising=False)


async def resident_account(b: RunningBridge, resident_id: str) -> str | None:
    status, body = await b.call("GET", f"/api/v1/residents/{resident_id}")
    assert status == 200, body
    value: str | None = body["dc09_account"]
    return value


async def test_cli_sets_shows_and_clears_the_account(embedded_bridge: RunningBridge, cli_env: None) -> None:
    code, out = await asyncio.to_thread(
        _cli, "residents", "add", "res-ivy", "--name", "Ivy", "--dc09-account", "a1b2"
    )
    assert code == 0, out
    assert await resident_account(embedded_bridge, "res-ivy") == "A1B2"
    code, out = await asyncio.to_thread(_cli, "residents", "show", "res-ivy")
    assert code == 0 and "DC-09 account  A1B2" in out, out
    code, out = await asyncio.to_thread(
        _cli, "residents", "add", "res-jo", "--name", "Jo", "--dc09-account", "A1B2"
    )
    assert code != 0 and "res-ivy" in out, out
    code, out = await asyncio.to_thread(
        _cli, "residents", "add", "res-kit", "--name", "Kit", "--dc09-account", "xyz"
    )
    assert code != 0 and "dc09_account" in out and "3-16 hex" in out, out
    code, out = await asyncio.to_thread(_cli, "residents", "edit", "res-ivy", "--dc09-account", "")
    assert code == 0, out
    assert await resident_account(embedded_bridge, "res-ivy") is None


async def test_bulk_import_reads_the_column_and_refuses_a_clash(
    embedded_bridge: RunningBridge, cli_env: None, tmp_path: Path
) -> None:
    good = tmp_path / "residents.csv"
    good.write_text("id,name,dc09_account\nres-lee,Lee,00c1\nres-mo,Mo,\n", encoding="utf-8")
    code, out = await asyncio.to_thread(_cli, "import", str(good), "--kind", "residents")
    assert code == 0, out
    assert await resident_account(embedded_bridge, "res-lee") == "00C1"
    assert await resident_account(embedded_bridge, "res-mo") is None
    clash = tmp_path / "clash.csv"
    clash.write_text("id,name,dc09_account\nres-ned,Ned,00C1\n", encoding="utf-8")
    code, out = await asyncio.to_thread(_cli, "import", str(clash), "--kind", "residents")
    assert code != 0 and "dc09_account" in out and "res-lee" in out, out
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,dc09_account\nres-oz,Oz,nothex\n", encoding="utf-8")
    code, out = await asyncio.to_thread(_cli, "import", str(bad), "--kind", "residents")
    assert code != 0 and "dc09_account" in out, out


def test_the_account_survives_an_export_and_import() -> None:
    resident = Resident(id="res-pat", name="Pat", dc09_account="beef01")
    text = to_csv("residents", [resident])
    assert "BEEF01" in text
    batch = parse_csv(text, "residents")
    assert [r.dc09_account for _, r in batch.residents] == ["BEEF01"]
    assert "dc09_account" not in resident.data()
