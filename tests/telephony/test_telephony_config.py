"""The ``telephony:`` section: each wrong value stops the start with a message naming the key and where it
came from; numbers written without quotes get their + back."""

from __future__ import annotations

import json

import pytest

from bridge.config import ConfigError, load_config

TWILIO = {
    "TELECARE_TWILIO__ENABLED": "true",
    "TELECARE_TWILIO__ACCOUNT_SID": "AC" + "0" * 32,
    "TELECARE_TWILIO__AUTH_TOKEN": "token",
    "TELECARE_TWILIO__FROM_NUMBER": "+441632960000",
}
OPS = "TELECARE_TELEPHONY__OPERATORS"
ON = {**TWILIO, "TELECARE_TELEPHONY__ENABLED": "true", "TELECARE_TELEPHONY__NUMBERS": '["+441632960001"]'}


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({"TELECARE_TELEPHONY__ENABLED": "true"}, "", "needs twilio.enabled"),
        ({**TWILIO, "TELECARE_TELEPHONY__ENABLED": "true"}, "telephony", "at least one centre number"),
        ({**ON, "TELECARE_TELEPHONY__NUMBERS": '["01632 960001"]'}, "telephony.numbers", "E.164"),
        ({**ON, "TELECARE_TELEPHONY__OVERFLOW_NUMBER": "0800"}, "telephony.overflow_number", "E.164"),
        ({**ON, "TELECARE_TELEPHONY__EMERGENCY_NUMBER": "998"}, "telephony.emergency_number", "999"),
        ({**ON, "TELECARE_TELEPHONY__RING_S": "2"}, "telephony.ring_s", "greater than or equal to 5"),
        ({**ON, "TELECARE_TELEPHONY__RETENTION_DAYS": "0"}, "telephony.retention_days", "greater than"),
        ({**ON, "TELECARE_TELEPHONY__AUDIT_CALLS_PER_HANDLER": "1"}, "audit_calls_per_handler", "equal"),
        ({**ON, "TELECARE_TELEPHONY__HOLD_MUSIC_URL": "ftp://x"}, "telephony.hold_music_url", "http"),
        ({**ON, OPS: json.dumps({"alice": {}})}, "telephony.operators.alice", "either"),
        (
            {**ON, OPS: json.dumps({"alice": {"phone": "+447700900111", "browser": True}})},
            "telephony.operators.alice",
            "either",
        ),
        ({**ON, OPS: json.dumps({"alice": {"phone": "07700"}})}, "telephony.operators.alice", "E.164"),
        ({**ON, OPS: json.dumps({"alice": {"browser": True}})}, "telephony", "api_key_sid"),
        ({**ON, OPS: json.dumps({"a b": {"browser": False, "phone": "+447700900111"}})},
         "telephony.operators", "user names"),
        ({**ON, "TELECARE_TELEPHONY__RINGS": "3"}, "telephony.rings", "unknown key"),
    ],
)  # fmt: skip
def test_a_wrong_value_names_its_key_and_source(env: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, environ=env)
    problem = "\n".join(refused.value.problems)
    assert (
        f"{key}:" in problem and words in problem and "environment" in problem
    ) or "built-in" in problem, problem


def test_numbers_without_quotes_get_their_plus_back() -> None:
    env = {
        **ON,
        "TELECARE_TELEPHONY__NUMBERS": "[441632960001]",
        "TELECARE_TELEPHONY__OVERFLOW_NUMBER": "441632960999",
        OPS: json.dumps({"alice": {"phone": 447700900111}}),
        "TELECARE_TELEPHONY__VOICE_SDK__SDK_FILE": "vendor/twilio.min.js",
    }
    config = load_config(None, environ=env).telephony
    assert config.numbers == ["+441632960001"] and config.overflow_number == "+441632960999"
    assert config.operators["alice"].phone == "+447700900111"
    sdk = config.voice_sdk.sdk_file
    assert sdk.endswith("/vendor/twilio.min.js") and sdk.startswith("/"), "anchored like every path"
    hidden = load_config(
        None, environ={**env, "TELECARE_TELEPHONY__VOICE_SDK__API_KEY_SECRET": "sk-VALUE-9f3"}
    )
    assert "sk-VALUE-9f3" not in repr(hidden) and "sk-VALUE-9f3" not in str(hidden.model_dump())
