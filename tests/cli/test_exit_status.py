"""One exit-status convention for every command (bridge/cli/common.py): 1 did not succeed (not found,
conflict), 2 cannot run as given (configuration, a rule of form), 3 rejected by the bridge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli.common import EXIT_FAILED, EXIT_REJECTED, EXIT_USAGE, fail

CLI = [sys.executable, "-m", "bridge.cli"]


def run_cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "TELECARE_STORE__URL": str(tmp_path / "cli.db"),
        "TELECARE_CONFIG": str(tmp_path / "none.yaml"),
    }
    return subprocess.run(
        [*CLI, *args], env=env, cwd=tmp_path, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_the_codes() -> None:
    assert (EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED) == (1, 2, 3)
    with pytest.raises(SystemExit) as caught:
        fail("no such thing", EXIT_FAILED)
    assert caught.value.code == 1


def test_not_found_and_conflict_are_failures_a_broken_rule_is_usage(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("")
    # a record that is not there: 1, as for users and the registry (was 2 for Echo links)
    result = run_cli(tmp_path, "alexa", "unlink", "--device-id", "echo-nobody")
    assert result.returncode == 1 and "no Echo link with --device-id echo-nobody" in result.stderr
    result = run_cli(tmp_path, "users", "passwd", "nobody", "--password-stdin", stdin="a long password\n")
    assert result.returncode == 1 and "no user 'nobody'" in result.stderr
    # a rule of form: 2, whichever command group says it
    result = run_cli(tmp_path, "users", "add", "olive", "--role", "emperor")
    assert result.returncode == 2 and "--role must be one of" in result.stderr
    result = run_cli(tmp_path, "alexa", "check-in", "--resident", "res-1", "--deadline", "9am")
    assert result.returncode == 2 and "--deadline" in result.stderr
    # the configuration: 2
    (tmp_path / "bad.yaml").write_text("http:\n  prot: 1\n")
    result = run_cli(tmp_path, "users", "list", "--config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2 and "configuration error" in result.stderr
