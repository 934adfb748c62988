"""The cancellation rule, checked over the whole source tree: nothing may swallow a cancellation.

A static walk (``ast``) refuses, in project code, tests and benches:

- ``suppress(...)`` naming ``CancelledError`` or ``BaseException`` (to stop a task you own, use
  ``devices.cancellation.stop`` / ``devices.cancellation.stop``, which catch nothing);
- ``except CancelledError`` / ``except BaseException`` / bare ``except:`` whose body never raises;
- ``asyncio.wait_for``, which on Python 3.11 returns the result and loses a cancellation that lands
  with it (CPython gh-86296); use ``async with asyncio.timeout(...)``.

A justified exception goes in ALLOWED with the reason; the test also fails on an entry nothing uses, so
the list cannot rot. docs/design-notes.md states the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("alarm_centre", "bridge", "devices", "skills", "simulators", "bench", "tests", "scripts")
SWALLOWERS = {"CancelledError", "BaseException"}

#: (file, enclosing function, rule) -> why this place may do it.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("tests/test_cancellation.py", "publish", "asyncio-wait_for"): (
        "the injected fault: stands in for aiomqtt's publish, which awaits asyncio.wait_for"
    ),
    ("tests/test_cancellation.py", "subscribe", "asyncio-wait_for"): (
        "the injected fault: stands in for aiomqtt's subscribe, which awaits asyncio.wait_for for the SUBACK"
    ),
    ("alarm_centre/store/sqlite.py", "_finish", "except-without-raise"): (
        "waits out a COMMIT running in its thread through further cancellations, then re-raises "
        "CancelledError after the loop"
    ),
}


def python_files() -> Iterator[Path]:
    for tree in TREES:
        base = ROOT / tree
        if base.is_dir():
            yield from sorted(base.rglob("*.py"))


def _names(node: ast.expr | None) -> set[str]:
    """The bare names an exception spec mentions (``asyncio.CancelledError`` -> ``CancelledError``)."""
    if node is None:
        return set()
    if isinstance(node, ast.Tuple):
        return set().union(*(_names(e) for e in node.elts))
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Name):
        return {node.id}
    return set()


def _is_call_to(node: ast.Call, name: str) -> bool:
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == name) or (
        isinstance(func, ast.Name) and func.id == name
    )


class Breaches(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scope: list[str] = ["<module>"]
        self.found: list[tuple[str, int, str]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        if _is_call_to(node, "suppress") and any(_names(arg) & SWALLOWERS for arg in node.args):
            self.found.append((self.scope[-1], node.lineno, "suppress-cancel"))
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "wait_for"
            and isinstance(func.value, ast.Name)
            and func.value.id == "asyncio"
        ):
            self.found.append((self.scope[-1], node.lineno, "asyncio-wait_for"))
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        catches_cancel = node.type is None or bool(_names(node.type) & SWALLOWERS)
        raises = any(isinstance(n, ast.Raise) for stmt in node.body for n in ast.walk(stmt))
        if catches_cancel and not raises:
            self.found.append((self.scope[-1], node.lineno, "except-without-raise"))
        self.generic_visit(node)


def breaches() -> list[tuple[str, str, int, str]]:
    out = []
    for path in python_files():
        visitor = Breaches()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        rel = path.relative_to(ROOT).as_posix()
        out += [(rel, scope, line, rule) for scope, line, rule in visitor.found]
    return out


def test_nothing_swallows_a_cancellation() -> None:
    found = breaches()
    unexplained = [
        f"{path}:{line} in {scope}(): {rule}"
        for path, scope, line, rule in found
        if (path, scope, rule) not in ALLOWED
    ]
    assert not unexplained, (
        "these places can swallow asyncio.CancelledError (see docs/design-notes.md, 'Cancellation'):\n"
        + "\n".join(unexplained)
    )
    used = {(path, scope, rule) for path, scope, _, rule in found}
    assert not set(ALLOWED) - used, f"allow-list entries nothing needs any more: {set(ALLOWED) - used}"


def test_the_check_sees_each_kind_of_breach() -> None:
    """The walk itself: each refused form is found, and the forms that propagate are not."""
    source = """
async def swallowing(task):
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        await task
    except BaseException:
        pass
    try:
        await task
    except:
        log()
    try:
        await task
    except (ValueError, asyncio.CancelledError):
        return None
    await asyncio.wait_for(task, 1)

async def propagating(task):
    with contextlib.suppress(ValueError):
        await task
    try:
        await task
    except asyncio.CancelledError:
        cleanup()
        raise
    except Exception:
        pass
"""
    visitor = Breaches()
    visitor.visit(ast.parse(source))
    assert [(scope, rule) for scope, _, rule in visitor.found] == [
        ("swallowing", "suppress-cancel"),
        ("swallowing", "except-without-raise"),
        ("swallowing", "except-without-raise"),
        ("swallowing", "except-without-raise"),
        ("swallowing", "asyncio-wait_for"),
    ]
