"""Schema migrations, written once for SQLite and PostgreSQL.

Each feature keeps its migrations in its own module under ``alarm_centre/store/migrations/`` as
``MIGRATIONS = [(version, sql), ...]``, with versions from its own range (see that package's docstring).
``{pk}`` becomes an auto-increment integer key and ``{real}`` a double column in each dialect. Where
the dialects differ beyond that (a data repair that reads JSON, say), ``sql`` is a mapping from dialect
name to its own SQL. Add new migrations; never edit one that has shipped. A store applies every
migration whose version it has not recorded, so a new one in a lower range still runs on a database
that already has higher versions.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from alarm_centre.store import migrations as _package

#: The SQL of one migration: the same for every dialect, or one text per dialect.
MigrationSql = str | Mapping[str, str]


def all_migrations() -> list[tuple[int, MigrationSql]]:
    """Every migration of every feature, in version order; duplicate versions are a bug."""
    found: list[tuple[int, MigrationSql]] = []
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
    """Split one migration into statements rendered for a dialect."""
    rendered = sql if isinstance(sql, str) else sql[dialect]
    for name, value in DIALECTS[dialect].items():
        rendered = rendered.replace("{" + name + "}", value)
    return [s.strip() for s in rendered.split(";") if s.strip()]
