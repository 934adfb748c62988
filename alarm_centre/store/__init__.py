"""Alert stores: SQLite embedded by default, PostgreSQL to scale out."""

from __future__ import annotations

from alarm_centre.store.base import AlertStore, Conflict, InvalidRequest, NotFound

__all__ = ["AlertStore", "Conflict", "InvalidRequest", "NotFound", "open_store"]


def open_store(url: str) -> AlertStore:
    """The store for a ``store.url``: a SQLite path (or ``sqlite:///path``), or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from alarm_centre.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

        store: AlertStore = PostgresStore(url)
        return store
    from alarm_centre.store.sqlite import SqliteStore

    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SqliteStore(path)
