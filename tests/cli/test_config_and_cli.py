"""Configuration errors name the key and its source; the CLI reads well and prints tokens last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alarm_centre.alerts.lifecycle import Action, AlertState, IllegalTransition, next_state
from bridge.config import ConfigError, load_config

CLI = [sys.executable, "-m", "bridge.cli"]


def test_defaults_match_the_design() -> None:
    config = load_config(None, environ={})
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.mqtt.url == "" and config.mqtt.embedded_port == 18830
    assert config.store.url.endswith(".db") and config.topic_root == "telecare"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("http:\n  port: 9000\nmqtt:\n  url: mqtt://broker:1883\n")
    config = load_config(path, environ={"TELECARE_HTTP__PORT": "8081", "TELECARE_STORE__URL": "/tmp/x.db"})
    assert config.http.port == 8081
    assert config.mqtt.url == "mqtt://broker:1883"
    assert config.store.url == "/tmp/x.db"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("http:\n  prot: 80\n", {}, "http.prot: unknown key (from {file})"),
        ("http:\n  port: eighty\n", {}, "http.port: Input should be a valid integer"),
        ("mqtt:\n  url: http://x\n", {}, "mqtt.url: Value error, must be empty"),
        ("", {"TELECARE_HTTP__PORT": "99999"}, "(from environment variable TELECARE_HTTP__PORT)"),
        ("", {"TELECARE_LOG__LEVEL": "LOUD"}, "log.level"),
        ("- a\n- b\n", {}, "must hold a mapping"),
        ("http: [\n", {}, "is not valid YAML"),
    ],
)
def test_bad_config_names_key_and_source(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=env)
    assert expected.format(file=path) in str(caught.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_shipped_config_is_valid_and_documents_every_key() -> None:
    shipped = Path(__file__).resolve().parents[2] / "config.yaml"
    config = load_config(shipped, environ={})
    text = shipped.read_text()
    for section, model in config.model_dump().items():
        keys = model.keys() if isinstance(model, dict) else [section]
        for key in keys:
            assert f"{key}:" in text, f"{section}.{key} is not in config.yaml"
    comment_lines = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comment_lines) > 20, "every key is documented in place"


def test_lifecycle_table() -> None:
    assert next_state(AlertState.RAISED, Action.ACKNOWLEDGE) is AlertState.ACKNOWLEDGED
    assert next_state(AlertState.ACKNOWLEDGED, Action.RESOLVE) is AlertState.RESOLVED
    assert next_state(AlertState.RAISED, Action.SYSTEM_RESOLVE) is AlertState.RESOLVED
    for state, action in [
        (AlertState.RAISED, Action.RESOLVE),
        (AlertState.RESOLVED, Action.ACKNOWLEDGE),
        (AlertState.RESOLVED, Action.RESOLVE),
        (AlertState.ACKNOWLEDGED, Action.ACKNOWLEDGE),
    ]:
        with pytest.raises(IllegalTransition):
            next_state(state, action)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


def test_help_reads_well(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "demo", "users", "simulate"):
        assert command in result.stdout
    result = run_cli("simulate", "unit", "--help", cwd=tmp_path)
    assert "--device-id" in result.stdout and "--event" in result.stdout


def test_users_add_prints_token_last(tmp_path: Path) -> None:
    env = {"TELECARE_STORE__URL": str(tmp_path / "cli.db")}
    result = run_cli("users", "add", "olive", "--role", "operator", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    bad = run_cli("users", "add", "olive", "--role", "pilot", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "--role must be one of" in bad.stderr


def test_cli_config_error_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("http:\n  port: 80800\n")
    result = run_cli("check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "http.port" in result.stderr and "config.yaml" in result.stderr
