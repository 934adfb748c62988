"""``dc09.forward`` configuration: every bad value refused with its key named, the key never shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError, load_config
from bridge.dc09_forwarding import upstream_path
from bridge.redaction import redact

SECRET = "S3cretKeyS3cret!"  # 16 characters: an AES-128 key


def load(*paths: dict[str, Any]) -> Any:
    return load_config(None, environ={"TELECARE_DC09__FORWARD": json.dumps(list(paths))})


def good(**changes: Any) -> dict[str, Any]:
    return {"url": "tcp://127.0.0.1:9000", "account": "C0FFEE", **changes}


def test_a_good_list_reads_with_names_and_defaults() -> None:
    config = load(good(key=SECRET), good(url="udp://centre.example:12000", payload="SIA-DCS"), good())
    first, second, third = config.dc09.forward
    assert [p.name for p in (first, second, third)] == ["primary", "backup", "backup-2"]
    assert (first.payload, first.receiver, first.line, first.link_test_s, first.ack_timeout_s) == (
        "ADM-CID",
        "0",
        "0",
        60.0,
        5.0,
    )
    assert second.payload == "SIA-DCS"
    assert load_config(None, environ={}).dc09.forward == []


@pytest.mark.parametrize(
    ("entry", "key", "words"),
    [
        (good(url="http://127.0.0.1:9000"), "dc09.forward.0.url", "tcp://host:port"),
        (good(url="tcp://127.0.0.1"), "dc09.forward.0.url", "tcp://host:port"),
        (good(url="tcp://127.0.0.1:70000"), "dc09.forward.0.url", "port"),
        (good(account="C0"), "dc09.forward.0.account", "3-16 hex"),
        (good(account="NOTHEX"), "dc09.forward.0.account", "3-16 hex"),
        (good(account="1" * 17), "dc09.forward.0.account", "3-16 hex"),
        (good(key="tooshort"), "dc09.forward.0.key", "16, 24 or 32"),
        (good(key="Z" * 64), "dc09.forward.0.key", "16, 24 or 32"),
        (good(receiver="1234567"), "dc09.forward.0.receiver", "hex"),
        (good(line=""), "dc09.forward.0.line", "hex"),
        (good(line="G"), "dc09.forward.0.line", "hex"),
        (good(payload="CID"), "dc09.forward.0.payload", "ADM-CID"),
        (good(link_test_s=0), "dc09.forward.0.link_test_s", "greater"),
        (good(ack_timeout_s=-1), "dc09.forward.0.ack_timeout_s", "greater"),
        (good(name="Primary Path"), "dc09.forward.0.name", "pattern"),
        (good(colour="red"), "dc09.forward.0.colour", "unknown key"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(entry: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(entry)
    [problem] = caught.value.problems
    assert problem.startswith(key + ":"), problem
    assert words in problem, problem


def test_two_paths_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load(good(name="north"), good(name="north"))
    assert "dc09.forward" in str(caught.value) and "name" in str(caught.value)


def test_a_bad_key_is_not_echoed_and_a_good_one_never_shown() -> None:
    wrong = "W" * 20
    with pytest.raises(ConfigError) as caught:
        load(good(key=wrong))
    assert wrong not in str(caught.value)
    config = load(good(key=SECRET))
    assert SECRET not in repr(config) and SECRET not in str(config.dc09.forward[0])
    dump = json.dumps(redact(config.model_dump(mode="json")))
    assert SECRET not in dump and '"key": "***"' in dump
    path = upstream_path(config.dc09.forward[0], 0.0)
    assert path.settings.key == SECRET.encode() and SECRET not in repr(path)


def test_check_config_prints_the_key_masked(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        f"dc09:\n  forward:\n    - url: tcp://127.0.0.1:9000\n      account: C0FFEE\n      key: {SECRET}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "check-config",
            "--config",
            str(tmp_path / "config.yaml"),
            "--timeout",
            "0.5",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "C0FFEE" in result.stdout, result.stderr
    assert SECRET not in result.stdout + result.stderr
