"""Alert stores: SQLite embedded by default, PostgreSQL to scale out."""

from __future__ import annotations

from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Conflict, InvalidRequest, NotFound

__all__ = ["AlertStore", "Conflict", "InvalidRequest", "NotFound", "open_store", "sqlite_path"]


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite ``store.url`` (a path, or ``sqlite:///path``); None for PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    return url.removeprefix("sqlite:///").removeprefix("sqlite://")


def open_store(url: str) -> AlertStore:
    """The store for a ``store.url``: a SQLite path (or ``sqlite:///path``), or ``postgresql://...``."""
    path = sqlite_path(url)
    if path is None:
        from alarm_centre.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

        store: AlertStore = PostgresStore(url)
        return store
    from alarm_centre.store.sqlite import SqliteStore

    return SqliteStore(path)
