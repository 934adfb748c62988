"""Shared fixtures: real brokers, a real bridge on loopback. Helpers live in harness.py."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    IN_CI,
    MOSQUITTO_HOST,
    MOSQUITTO_PORT,
    RunningBridge,
    credentials_env,
    free_port,
    make_config,
    need_service,
    postgres_database,
    reachable,
    running_bridge,
)

#: Fixture modules every test may use.
pytest_plugins = ["alexa_ca"]

#: What gives away that a test needs an outside service, for the marker of that service: words in the
#: code of the test or of a fixture it uses, and the value of a parametrized fixture (``store_url``
#: ``postgres``, ``secured`` ``mosquitto``). ``-m "not postgres"`` then deselects every such test.
SERVICE_WORDS: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres_database(", "asyncpg.connect("),
    "mosquitto": ("MOSQUITTO_PORT", 'which("mosquitto'),
    "browser": ("chromium",),
}


#: Tests measured at 5 s or more on the 2-core CI-sized machine (``pytest --durations``), beyond the
#: ones marked where they are written; ``-m "not slow"`` is the quick run. Keyed by file basename and
#: test name, which stay the same when test files move between folders.
SLOW = {
    "test_codec_properties::test_yaml_rows",  # 17 s
    "test_multinode::test_two_node_processes_one_killed_mid_fleet",  # 8 s
    "test_console_browser::test_live_queue_keyboard_and_a_second_operator",  # 8 s
    "test_console_http::test_sessions_expire_and_end",  # 6 s
    "test_demo::test_demo_fleet_signs_in_and_strangers_are_refused",  # 5 s
    "test_escalation::test_restart_mid_escalation_neither_loses_nor_repeats",  # 5 s
    "test_cli_safety::test_users_add_refuses_an_existing_name_unless_replace",  # 5 s
    "test_supervision::test_supervised_unit_over_mosquitto",  # 5 s
    "test_calls_browser::test_the_incoming_call_banner_and_live_call_state",  # 8 s
    "test_calls_browser::test_an_operator_in_the_browser_answers_with_p",  # 7 s
    "test_recordings_and_audit::test_the_monthly_call_audit",  # 7 s
}


def _code(func: Any) -> str:
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return ""


def services_needed(item: pytest.Item) -> set[str]:
    """The markers of the outside services ``item`` needs (see :data:`SERVICE_WORDS`)."""
    params: dict[str, Any] = getattr(getattr(item, "callspec", None), "params", {})
    codes = [_code(getattr(item, "function", None))]
    fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for name in getattr(item, "fixturenames", ()):
        if name in params:  # a parametrized fixture needs the service its value names, if any
            codes.append(str(params[name]))
            continue
        codes.extend(_code(definition.func) for definition in fixtures.get(name, ()))
    return {
        marker
        for marker, words in SERVICE_WORDS.items()
        if any(word in code or code == marker for code in codes for word in words)
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs PostgreSQL, Mosquitto or Chromium, however it reaches it, so the
    declared markers select and deselect the right tests (a hand-written mark is easy to forget), and
    the tests in :data:`SLOW`."""
    for item in items:
        needed = services_needed(item)
        if f"{item.path.stem}::{getattr(item, 'originalname', item.name)}" in SLOW:
            needed.add("slow")
        for marker in sorted(needed - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    need_service("Mosquitto", MOSQUITTO_HOST, MOSQUITTO_PORT)
    return MOSQUITTO_HOST, MOSQUITTO_PORT


@pytest.fixture
def topic_root() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A Mosquitto of our own on a free port, which a test may stop and start again."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        if IN_CI:
            pytest.fail("mosquitto binary not found; CI must install it")
        pytest.skip("mosquitto binary not found")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
    )

    class Handle:
        proc: subprocess.Popen[bytes] | None = None

        def __init__(self) -> None:
            self.port = port

        def start(self) -> None:
            self.proc = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in range(100):
                if reachable("127.0.0.1", port):
                    return

                time.sleep(0.05)
            raise RuntimeError("private mosquitto did not start")

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(10)
                self.proc = None

    handle = Handle()
    handle.start()
    yield handle
    handle.stop()


#: Test modules whose ``bridge``/``store_url`` tests run on both stores; elsewhere SQLite only (cheap).
BOTH_STORES = {
    "test_alarm_path",
    "test_postgres_store",
    "test_floods",
    "test_resolve_side_effects",
    "test_registry_readback",
    "test_escalation_states",
    "test_escalation_runner",
    "test_dc09_signals",
    "test_restores",
    "test_dc09_forward",
    "test_dc09_forward_answers",
    "test_dc09_relay",
    "test_scaip_receiver",
    "test_priority_lane",
    "test_retention",
    "test_subject_access_and_erasure",
    "test_call_flow",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_url" in metafunc.fixturenames:
        both = metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_STORES
        metafunc.parametrize("store_url", ["sqlite", "postgres"] if both else ["sqlite"], indirect=True)


@pytest.fixture
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The store under test: a SQLite file of its own, or a fresh PostgreSQL database (dropped after)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield str(tmp_path / "bridge.db")
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def bridge(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str, store_url: str
) -> AsyncIterator[RunningBridge]:
    """A bridge on the real Mosquitto with a unique topic root, on each store (SQLite, PostgreSQL)."""
    host, port = mosquitto
    async with running_bridge(
        make_config(
            tmp_path, mqtt_url=f"mqtt://{host}:{port}", topic_root=topic_root, TELECARE_STORE__URL=store_url
        )
    ) as running:
        yield running


@pytest.fixture
async def embedded_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A bridge on its embedded broker (amqtt) on an ephemeral loopback port, which (like a shipped
    Mosquitto) lets units in only with their credentials: see ``harness.unit_login``."""
    async with running_bridge(make_config(tmp_path, **credentials_env(tmp_path))) as running:
        yield running
