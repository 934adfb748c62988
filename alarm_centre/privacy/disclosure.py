"""Showing a resident's personal data: need to know, then the audit of reads, in one call.

A route (or CLI command) that is about to show residents' data hands it to one of these functions,
with the :class:`~alarm_centre.privacy.reads.Viewer` it is for (HTTP routes get theirs from
:func:`alarm_centre.http.api.viewer`). What comes back is what the viewer's role may see
(:mod:`alarm_centre.privacy.need_to_know`), and a :class:`~alarm_centre.privacy.reads.Read` has been
recorded for every resident whose data it still shows: who, when, from where, which fields, and why
(``purpose``: the route's name).

The reads are recorded before the answer leaves. If the store cannot record them, the answer is still
given -- an operator may be reading a key-safe code to an ambulance crew -- and the loss is logged as
an error saying how many reads went unrecorded (never what they were).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from alarm_centre.privacy.need_to_know import (
    ResidentField,
    alert_view,
    card_view,
    may_see,
    resident_view,
)
from alarm_centre.privacy.reads import Read, Viewer, record_reads
from alarm_centre.store.tx import Database

log = logging.getLogger(__name__)


def read_by(
    viewer: Viewer, resident_id: str, fields: set[ResidentField], purpose: str, alert_id: int | None = None
) -> Read:
    """The record of ``viewer`` seeing ``fields`` of one resident, now."""
    return Read(
        at=time.time(),
        actor=viewer.name,
        role=viewer.role.value,
        source=viewer.source,
        address=viewer.address,
        resident_id=resident_id,
        fields=frozenset(fields),
        purpose=purpose,
        alert_id=alert_id,
    )


async def record(store: Database, reads: list[Read]) -> None:
    """Write ``reads``; on failure log how many were lost (the answer still goes out)."""
    try:
        await record_reads(store, reads)
    except Exception as exc:
        log.error(
            "the audit of reads could not record %d read(s) (%s); the answer was given anyway",
            len(reads),
            type(exc).__name__,
        )


async def residents(
    store: Database, viewer: Viewer, records: Iterable[Mapping[str, Any]], *, purpose: str
) -> list[dict[str, Any]]:
    """Resident records (each with an ``id``) as the viewer's role may see them; the reads recorded."""
    out: list[dict[str, Any]] = []
    reads: list[Read] = []
    for item in records:
        view, shown = resident_view(viewer.role, item)
        out.append(view)
        if shown:
            reads.append(read_by(viewer, str(item["id"]), shown, purpose))
    await record(store, reads)
    return out


async def resident(
    store: Database, viewer: Viewer, item: Mapping[str, Any], *, purpose: str
) -> dict[str, Any]:
    """One resident record as the viewer's role may see it; the read recorded."""
    return (await residents(store, viewer, [item], purpose=purpose))[0]


async def card(
    store: Database,
    viewer: Viewer,
    resident_id: str,
    item: Mapping[str, Any],
    *,
    purpose: str,
    alert_id: int | None,
) -> dict[str, Any]:
    """The console's resident card as the viewer's role may see it; the read recorded."""
    view, shown = card_view(viewer.role, item)
    if shown:
        await record(store, [read_by(viewer, resident_id, shown, purpose, alert_id)])
    return view


async def names(store: Database, viewer: Viewer, found: Mapping[str, str], *, purpose: str) -> dict[str, str]:
    """Residents' names by id (the queue, the registry pages); each resident named is a read."""
    if not may_see(viewer.role, ResidentField.NAME):
        return {}
    await record(store, [read_by(viewer, rid, {ResidentField.NAME}, purpose) for rid in found])
    return dict(found)


async def alerts(
    store: Database, viewer: Viewer, items: Iterable[Mapping[str, Any]], *, purpose: str
) -> list[dict[str, Any]]:
    """Alerts (``Alert.to_json()``, optionally with ``timeline``) as the role may see them: notes and
    responders' details only where allowed; each alert of a resident that still shows them is a read."""
    out: list[dict[str, Any]] = []
    reads: list[Read] = []
    for item in items:
        view, shown = alert_view(viewer.role, item)
        out.append(view)
        resident_id = item.get("resident_id")
        if shown and resident_id:
            reads.append(read_by(viewer, str(resident_id), shown, purpose, int(item["id"])))
    await record(store, reads)
    return out
