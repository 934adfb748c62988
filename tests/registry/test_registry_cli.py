"""The installer's CLI as a real process beside a running bridge on the same store: tables, refusals,
bulk import with per-line errors, and the commissioning checklist confirming presses as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
from harness import RunningBridge

from simulators.unit import SimulatedUnit

CLI = [sys.executable, "-m", "bridge.cli"]


def env_for(b: RunningBridge) -> dict[str, str]:
    return {
        **os.environ,
        "TELECARE_STORE__URL": b.bridge.config.store.url,
        "TELECARE_LOG__LEVEL": "WARNING",
        "TELECARE_CONFIG": "",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@pytest.fixture(autouse=True)
def cli_env(embedded_bridge: RunningBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI calls use the running bridge's store (its SQLite file, opened a second time)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELECARE_STORE__URL", embedded_bridge.bridge.config.store.url)
    monkeypatch.setenv("TELECARE_LOG__LEVEL", "WARNING")
    monkeypatch.delenv("TELECARE_CONFIG", raising=False)


def _main(argv: tuple[str, ...]) -> tuple[int, str, str]:
    from bridge.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


async def run(b: RunningBridge, *args: str) -> tuple[int, str, str]:
    """The real CLI entry point, in a worker thread (it runs its own event loop), output captured."""
    return await asyncio.to_thread(_main, args)


async def run_process(b: RunningBridge, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env_for(b), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_register_list_show_and_refusals(embedded_bridge: RunningBridge, tmp_path: Path) -> None:
    b = embedded_bridge
    code, out, _ = await run(
        b,
        "residents",
        "add",
        "res-1",
        "--name",
        "Ada Lovelace",
        "--address",
        "1 Mill Lane",
        "--responder",
        "Tom=+447700900123",
        "--responder",
        "Ann=+447700900456",
    )
    assert code == 0 and "added with 2 responder(s)" in out
    code, _, err = await run(
        b, "residents", "add", "res-2", "--name", "Bob", "--responder", "Tom=07700 900123"
    )
    assert code == 2 and "responders.0.phone" in err and "E.164" in err
    code, out, _ = await run(
        b,
        "devices",
        "add",
        "unit-1",
        "--kind",
        "gsm_unit",
        "--resident",
        "res-1",
        "--peripheral",
        "p1:pendant@neck",
        "--heartbeat",
        "600",
    )
    assert code == 0 and "every 600s" in out
    code, _, err = await run(b, "devices", "add", "unit-1", "--kind", "gsm_unit")
    assert code == 1 and "refused" in err and "already registered" in err
    code, _, err = await run(b, "link", "unit-1", "nobody")
    assert code == 1 and "no resident 'nobody'" in err
    code, out, _ = await run(b, "devices", "list")
    header, rule, row = out.splitlines()
    assert header.split()[:4] == ["ID", "KIND", "RESIDENT", "STATUS"] and rule.startswith("---")
    assert row.split()[:4] == ["unit-1", "gsm_unit", "res-1", "active"]
    code, out, _ = await run(b, "residents", "show", "res-1")
    assert "1. Tom  +447700900123" in out and "2. Ann  +447700900456" in out and "unit-1" in out
    # An open alert blocks retiring, with the reason.
    host, port = b.broker
    login = await b.unit_login("unit-1")
    async with SimulatedUnit("unit-1", host=host, port=port, call_connects=False, **login) as unit:
        ack = await unit.send("fall", timeout=20)
    code, _, err = await run(b, "devices", "retire", "unit-1")
    assert code == 1 and f"open alerts: {ack['alert_id']} (fall, raised)" in err
    code, out, _ = await run_process(b, "devices", "--help")
    assert code == 0 and "retire" in out and "configure" in out


async def test_import_reports_bad_lines_and_imports_nothing(
    embedded_bridge: RunningBridge, tmp_path: Path
) -> None:
    b = embedded_bridge
    bad = tmp_path / "devices.csv"
    bad.write_text("id,kind,phone\nu1,gsm_unit,+447700900001\nu2,gsm_unit,07700900002\nu3,fridge,\n")
    code, _, err = await run(b, "import", str(bad), "--kind", "devices", "--dry-run")
    assert code == 1 and "nothing imported" in err
    assert f"{bad}:line 3 (devices): phone:" in err and f"{bad}:line 4 (devices): kind:" in err
    site = tmp_path / "site.yaml"
    site.write_text(
        "residents:\n  - {id: r1, name: Ada}\ndevices:\n  - {id: u1, kind: gsm_unit, resident_id: r1}\n"
    )
    code, out, _ = await run(b, "import", str(site), "--dry-run")
    assert code == 0 and "dry run" in out and "1 residents new" in out
    code, out, _ = await run(b, "devices", "list")
    assert "u1" not in out
    code, out, _ = await run(b, "import", str(site))
    assert code == 0 and "imported" in out
    code, out, _ = await run(b, "export", "--format", "csv", "--kind", "devices")
    assert code == 0 and out.splitlines()[1].startswith("u1,gsm_unit,r1")
    (tmp_path / "broken.yaml").write_text("residents: [\n")
    code, _, err = await run(b, "import", str(tmp_path / "broken.yaml"))
    assert code == 1 and "not YAML" in err


async def test_commission_checklist_confirms_presses_as_they_arrive(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    assert (
        await run(
            b,
            "devices",
            "add",
            "unit-c",
            "--kind",
            "gsm_unit",
            "--peripheral",
            "p1:pendant@neck",
            "--peripheral",
            "s1:smoke@hall",
        )
    )[0] == 0
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "commission",
        "start",
        "unit-c",
        "--minutes",
        "5",
        "--poll",
        "0.1",
        env=env_for(b),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def read_until(text: str) -> None:
        assert proc.stdout is not None
        while not any(text in line for line in lines):
            line = (await proc.stdout.readline()).decode()
            assert line, f"CLI ended before {text!r}: {lines}"
            lines.append(line)

    host, port = b.broker
    login = await b.unit_login("unit-c")
    try:
        async with asyncio.timeout(40):
            await read_until("press it: sends smoke")
            assert any("[ ] p1 (pendant, neck)" in line for line in lines)
            async with SimulatedUnit("unit-c", host=host, port=port, call_connects=False, **login) as unit:
                await unit.send("pendant", test=True, data={"peripheral": "p1"}, timeout=20)
                await read_until("confirmed [1/2] p1 (pendant)")
                await unit.send("smoke", test=True, timeout=20)
                await read_until("confirmed [2/2] s1 (smoke)")
            await read_until("PASSED")
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert any("visit 1 finished: 2/2 confirmed" in line for line in lines)
    code, out, _ = await run(b, "commission", "status", "unit-c")
    assert "[x] p1" in out and "[x] s1" in out and "PASSED" in out


def test_progress_bar_draws_on_a_terminal_only() -> None:
    import io

    from bridge.cli.registry import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar("importing", "rows", stream=screen)
    for done in range(1, 11):
        bar.update(done, 10)
    bar.close()
    assert screen.getvalue().endswith("\rimporting [" + "#" * 30 + "] 10/10 rows\n")
    assert "5/10 rows" in screen.getvalue()
    piped = io.StringIO()
    quiet = ProgressBar("importing", "rows", stream=piped)
    quiet.update(5, 10)
    quiet.close()
    assert piped.getvalue() == ""
