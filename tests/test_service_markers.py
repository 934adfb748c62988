"""The declared markers select exactly the tests that need each outside service.

``-m "not postgres"`` on a machine without PostgreSQL must leave out every test that reaches it: the
``postgres`` runs of the tests parametrized over both stores and the tests that open a database of their
own, while keeping their SQLite runs. The markers are applied in ``conftest.py`` from what each test
uses, so a new test cannot forget its mark.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _root_conftest_set(name: str) -> set[str]:
    """A set literal of ``tests/conftest.py``, read from its source: ``import conftest`` may give the
    conftest of another folder (console, telephony, chaos have their own)."""
    tree = ast.parse((TESTS / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                value = ast.literal_eval(node.value)
                assert isinstance(value, set)
                return {str(v) for v in value}
    raise AssertionError(f"tests/conftest.py has no {name}")


def collected(*args: str) -> list[str]:
    """The test ids pytest collects with ``args`` (a separate run: markers are applied at collection)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: nothing collected
    return [line for line in done.stdout.splitlines() if "::" in line]


@pytest.mark.slow  # collects in a pytest of its own
def test_not_postgres_leaves_out_every_test_that_reaches_postgresql() -> None:
    files = [
        "tests/alerts/test_alarm_path.py",
        "tests/registry/test_registry_postgres.py",
        "tests/http/test_api_bad_input.py",
    ]
    kept = collected("-m", "not postgres", *files)
    assert kept and not [t for t in kept if "postgres" in t], kept
    assert any("[sqlite" in t for t in kept if "test_alarm_path" in t)  # the SQLite runs stay
    chosen = collected("-m", "postgres", *files)
    assert "tests/registry/test_registry_postgres.py::test_registry_on_postgres" in chosen
    assert chosen and all("[postgres" in t or "test_registry_postgres" in t for t in chosen), chosen


@pytest.mark.slow
def test_mosquitto_marks_the_tests_on_a_real_mosquitto_only() -> None:
    chosen = collected("-m", "mosquitto", "tests/registry/test_credentials.py", "tests/http/test_api.py")
    assert (
        "tests/registry/test_credentials.py::test_units_publish_only_as_themselves" in chosen
    )  # its own broker
    assert any(t.endswith("[mosquitto]") for t in chosen)
    assert not [t for t in chosen if "[embedded]" in t or "test_api.py" in t], chosen


def test_every_slow_entry_names_a_test_that_exists() -> None:
    """A renamed or deleted test must leave :data:`conftest.SLOW` too, or the mark silently stops."""
    for entry in _root_conftest_set("SLOW"):
        module, name = entry.split("::")
        (path,) = TESTS.rglob(f"{module}.py")
        assert f"def {name}(" in path.read_text(encoding="utf-8"), entry
