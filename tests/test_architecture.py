"""The layout rules of docs (DESIGN, design-notes), checked on the source with ``ast``.

- No import cycle between modules, counting imports inside functions and under ``TYPE_CHECKING`` (a cycle
  hidden in a function still ties two modules into one). The implicit import of a module's own parent
  package is not counted: a package importing its submodules is not a cycle.
- Nothing imports back up the layers: ``devices`` imports nothing of ours, ``alarm_centre`` only
  ``devices``, ``skills`` ``devices`` and ``alarm_centre``, ``simulators`` only ``devices``; ``bridge``
  wires everything.
- ``devices`` (the codecs) imports only the standard library and pydantic (and PyYAML's pure parser for
  ``devices/csv_yaml.py``, ``cryptography``'s AES for ``devices/dc09.py``; see docs/design-notes.md).
- The CLI's commands share :mod:`bridge.cli.common`; none imports the main module back.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("devices", "alarm_centre", "skills", "simulators", "bridge")
MAY_IMPORT: dict[str, frozenset[str]] = {
    "devices": frozenset(),
    "alarm_centre": frozenset({"devices"}),
    "skills": frozenset({"devices", "alarm_centre"}),
    "simulators": frozenset({"devices"}),
    "bridge": frozenset(PACKAGES),
}
#: Third-party packages a codec may use, by module (everything else in ``devices`` is stdlib + pydantic).
DEVICES_THIRD_PARTY = {"pydantic", "pydantic_core", "typing_extensions"}
#: Exceptions, each with its reason in docs/design-notes.md ("Layout"): PyYAML's pure parser keeps the line
#: numbers bulk-import errors name; AES is part of the DC-09 frame format (an encrypted frame cannot be
#: checked or read without it).
DEVICES_EXTRA = {"devices.csv_yaml": {"yaml"}, "devices.dc09": {"cryptography"}}


def modules_of(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports, wherever the statement is (top level, function, branch);
    ``from a.b import c`` gives ``a.b.c`` (which is ``a.b`` itself when ``c`` is not a module)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = ".".join(part for part in (package, base) if part)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports. A name that is not a module counts as the module it
    comes from; importing ``a.b.c`` does not count ``a.b`` (the parent package is not a dependency)."""
    modules = modules_of(root, packages)

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {ours(name) for name in imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so deep graphs need no recursion limit
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert "bridge.cli.serial_demo" in graph["bridge.cli.main"]  # a function-local import is seen
    assert "bridge.host" in graph["bridge.feature_serial"]  # so is one under TYPE_CHECKING
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(group) for group in found)


def test_nothing_imports_back_up_the_layers() -> None:
    graph = import_graph(ROOT, PACKAGES)
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (top := module.partition(".")[0]) != (other := target.partition(".")[0])
        and other not in MAY_IMPORT[top]
    )
    assert not wrong, wrong


def test_codecs_import_only_the_standard_library_and_pydantic() -> None:
    wrong = []
    for module, path in modules_of(ROOT, ("devices",)).items():
        allowed = DEVICES_THIRD_PARTY | DEVICES_EXTRA.get(module, set())
        for name in imported_names(module, path):
            top = name.partition(".")[0]
            if top and top not in sys.stdlib_module_names and top != "devices" and top not in allowed:
                wrong.append(f"{module} imports {name}")
    assert not wrong, wrong


def test_cli_commands_do_not_import_the_main_module() -> None:
    graph = import_graph(ROOT, PACKAGES)
    importers = sorted(m for m, targets in graph.items() if "bridge.cli.main" in targets)
    assert importers == ["bridge.cli.__main__"], importers


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The detector itself: a cycle closed only by a function-local import, and one up a layer."""
    pkg = tmp_path / "devices"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "codec.py").write_text("from devices import rules\n")
    (pkg / "rules.py").write_text("def f() -> None:\n    from devices.codec import x\n")
    (pkg / "upward.py").write_text(
        "from . import codec\n\n\ndef g() -> None:\n    import alarm_centre.store\n"
    )
    other = tmp_path / "alarm_centre"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "store.py").write_text("")
    graph = import_graph(tmp_path, ("devices", "alarm_centre"))
    assert cycles(graph) == [["devices.codec", "devices.rules"]]
    assert graph["devices.upward"] == {"devices.codec", "alarm_centre.store"}
