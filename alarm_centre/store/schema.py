"""Schema migrations, written once for SQLite and PostgreSQL.

Each feature keeps its migrations in its own module under ``alarm_centre/store/migrations/`` as
``MIGRATIONS = [(version, sql), ...]``, with versions from its own range (see that package's docstring).
``{pk}`` becomes an auto-increment integer key and ``{real}`` a double column in each dialect.
Add new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import importlib
import pkgutil

from alarm_centre.store import migrations as _package


def all_migrations() -> list[tuple[int, str]]:
    """Every migration of every feature, in version order; duplicate versions are a bug."""
    found: list[tuple[int, str]] = []
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        found.extend(getattr(module, "MIGRATIONS", []))
    versions = [v for v, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two migrations share a version: {sorted(versions)}")
    return sorted(found)


DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"},
    "postgresql": {"pk": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"},
}


def statements(sql: str, dialect: str) -> list[str]:
    """Split one migration into statements rendered for a dialect."""
    rendered = sql
    for name, value in DIALECTS[dialect].items():
        rendered = rendered.replace("{" + name + "}", value)
    return [s.strip() for s in rendered.split(";") if s.strip()]
