"""The audit of reads: who saw which of a resident's personal data, when, from where, and why.

Every route that shows personal data records one :class:`Read` per resident it showed
(:mod:`alarm_centre.privacy.disclosure` does it for HTTP, the CLI for its commands). The rows are
queried and exported by supervisors and admins (``GET /api/v1/privacy/reads``, ``telecare-bridge
privacy reads``), kept for ``retention.days.read_audit`` days, and included in a resident's subject
access export. They hold field *names*, never values.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alarm_centre.alerts.model import Role, iso
from alarm_centre.privacy.need_to_know import ResidentField
from alarm_centre.store.tx import Database, PostCommit, Row, Tx
from devices.csv_yaml import safe_cell

#: Rows written per INSERT statement (one round trip on PostgreSQL).
CHUNK = 100
MAX_PAGE = 5000
COLUMNS = ("id", "at", "actor", "role", "source", "address", "resident_id", "fields", "purpose", "alert_id")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is about to see personal data, and from where: the "who" and "from where" of a read."""

    name: str
    role: Role
    #: ``console``, ``api`` or ``cli``.
    source: str
    #: The client's address (HTTP), or the machine's user for the CLI.
    address: str


@dataclass(frozen=True, slots=True)
class Read:
    """One resident's personal data shown to one person."""

    at: float
    actor: str
    role: str
    source: str
    address: str
    resident_id: str
    fields: frozenset[ResidentField]
    purpose: str
    alert_id: int | None = None


async def write_reads(tx: Tx, reads: Sequence[Read]) -> None:
    """Insert ``reads`` in the open transaction, :data:`CHUNK` rows per statement."""
    for start in range(0, len(reads), CHUNK):
        chunk = reads[start : start + CHUNK]
        marks = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
        args: list[Any] = []
        for r in chunk:
            args += [
                r.at,
                r.actor[:64],
                r.role,
                r.source,
                r.address[:64],
                r.resident_id,
                json.dumps(sorted(f.value for f in r.fields)),
                r.purpose[:64],
                r.alert_id,
            ]
        await tx.execute(
            "INSERT INTO personal_data_reads (at, actor, role, source, address, resident_id, fields, "
            f"purpose, alert_id) VALUES {marks}",
            *args,
        )


async def record_reads(store: Database, reads: Sequence[Read]) -> None:
    """Record ``reads`` in a transaction of their own (nothing when there are none)."""
    if not reads:
        return

    async def work(tx: Tx, post: PostCommit) -> None:
        await write_reads(tx, reads)

    await store.transaction(work)


@dataclass(frozen=True, slots=True)
class ReadQuery:
    """Which reads to list: any mix of one resident, one staff member, a time span; newest first."""

    resident_id: str | None = None
    actor: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 500
    #: Only rows older than this id (``next_cursor`` of the previous page).
    before_id: int | None = None


def read_json(row: Row) -> dict[str, Any]:
    """A stored read as the API and exports show it."""
    return {
        "id": int(row["id"]),
        "at": iso(float(row["at"])),
        "actor": row["actor"],
        "role": row["role"],
        "source": row["source"],
        "address": row["address"],
        "resident_id": row["resident_id"],
        "fields": json.loads(row["fields"]),
        "purpose": row["purpose"],
        "alert_id": None if row["alert_id"] is None else str(row["alert_id"]),
    }


async def query_reads(store: Database, query: ReadQuery) -> tuple[list[dict[str, Any]], str | None]:
    """A page of reads matching ``query`` (newest first) and the cursor of the next page, if any."""
    where: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("resident_id = ?", query.resident_id),
        ("actor = ?", query.actor),
        ("at >= ?", query.since),
        ("at < ?", query.until),
        ("id < ?", query.before_id),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    limit = max(1, min(query.limit, MAX_PAGE))
    sql = "SELECT * FROM personal_data_reads"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    async with store.read() as tx:
        rows = await tx.fetchall(sql, *args, limit + 1)
    page = [read_json(r) for r in rows[:limit]]
    cursor = str(page[-1]["id"]) if len(rows) > limit else None
    return page, cursor


def reads_csv(reads: Iterable[dict[str, Any]]) -> str:
    """Reads as CSV (fields joined with ``;``; no cell a spreadsheet would run as a formula)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in reads:
        writer.writerow([safe_cell(";".join(r["fields"]) if c == "fields" else r[c]) for c in COLUMNS])
    return out.getvalue()
