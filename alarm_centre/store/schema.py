"""Schema migrations, written once for SQLite and PostgreSQL.

Each feature keeps its migrations in its own module under ``alarm_centre/store/migrations/`` as
``MIGRATIONS = [(version, sql), ...]``, with versions from its own range (see that package's docstring).
``{pk}`` becomes an auto-increment integer key and ``{real}`` a double column in each dialect. Where
the dialects differ beyond that, ``sql`` is a mapping from dialect name to its own SQL. A migration may
instead be a :class:`JsonRepair`, a data migration both stores run the same way. Add new migrations;
never edit one that has shipped. A store applies every migration whose version it has not recorded, so
a new one in a lower range still runs on a database that already has higher versions.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from alarm_centre.store import migrations as _package
from devices import strict_json

#: The SQL of one migration: the same for every dialect, or one text per dialect.
MigrationSql = str | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class JsonRepair:
    """A data migration: rewrite the stored JSON text in ``columns`` (``(table, column)`` pairs) that is
    not strict JSON -- ``NaN``, ``Infinity``, ``-Infinity`` written before the strict rules -- with
    ``null`` in their place (:func:`devices.strict_json.repair`), so no reader ever gets it."""

    columns: tuple[tuple[str, str], ...]

    #: Only text holding one of these can need repair; a store selects just those rows.
    MARKERS = ("NaN", "Infinity")

    def where(self, column: str) -> str:
        """The SQL condition that picks the rows of ``column`` that may need repair."""
        return " OR ".join(f"{column} LIKE '%{marker}%'" for marker in self.MARKERS)

    @staticmethod
    def repaired(rows: Iterable[tuple[object, str | None]]) -> list[tuple[str, object]]:
        """``(new_text, key)`` for each ``(key, text)`` whose text needs repair."""
        out: list[tuple[str, object]] = []
        for key, text in rows:
            fixed = strict_json.repair(text) if text is not None else None
            if fixed is not None:
                out.append((fixed, key))
        return out


Migration = tuple[int, MigrationSql | JsonRepair]


def all_migrations() -> list[Migration]:
    """Every migration of every feature, in version order; duplicate versions are a bug."""
    found: list[Migration] = []
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        found.extend(getattr(module, "MIGRATIONS", []))
    versions = [v for v, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two migrations share a version: {sorted(versions)}")
    return sorted(found, key=lambda m: m[0])


DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"},
    "postgresql": {"pk": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"},
}


def statements(sql: MigrationSql, dialect: str) -> list[str]:
    """Split one migration into statements rendered for a dialect. A ``$$``-quoted body (a PostgreSQL
    function's) is one piece, its semicolons included; a dialect a migration gives no text for has none."""
    rendered = sql if isinstance(sql, str) else sql.get(dialect, "")
    for name, value in DIALECTS[dialect].items():
        rendered = rendered.replace("{" + name + "}", value)
    pieces = rendered.split("$$")
    if len(pieces) % 2 == 0:
        raise ValueError("a migration's $$ quotes are not paired")
    out: list[str] = []
    current = ""
    for n, piece in enumerate(pieces):
        if n % 2:  # inside $$ ... $$: kept whole
            current += f"$${piece}$$"
            continue
        first, *rest = piece.split(";")
        current += first
        if rest:
            out.append(current)
            *done, current = rest
            out.extend(done)
    out.append(current)
    return [s.strip() for s in out if s.strip()]
