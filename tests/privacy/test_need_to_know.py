"""Need to know, role by role, on every route and page that shows a resident's data, and the audit of
reads each of them leaves: who, when, from where, which resident, which fields, why. Then the audit
itself, queried and exported by a supervisor and refused to everyone else."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from console_support import console_client
from harness import RunningBridge, make_config, running_bridge
from privacy_support import ADA, NOTE, Seeded, seed_resident

from alarm_centre.alerts.model import Role
from alarm_centre.privacy.need_to_know import NEED_TO_KNOW, ResidentField, field_of

F = ResidentField
#: What the test resident holds (her card has no phone of her own and no other details).
HELD = {F.NAME, F.ADDRESS, F.LANGUAGE, F.KEY_SAFE, F.MEDICAL_NOTES, F.RESPONDERS}
SECRET_TO_INSTALLERS = [str(ADA["key_safe"]), str(ADA["medical_notes"]), "+447700900101", "Byron King", NOTE]


@pytest.fixture
async def seeded_bridge(tmp_path: Path) -> AsyncIterator[tuple[RunningBridge, Seeded]]:
    async with running_bridge(make_config(tmp_path)) as running:
        seeded = await seed_resident(running.store)
        await running.store.devices.upsert_device("unit-nobody", "gsm_unit")
        yield running, seeded


def shown(record: dict[str, Any]) -> set[ResidentField]:
    """The resident fields a record shows with a value."""
    out = set()
    for key, value in record.items():
        field = field_of(key)
        if field is not None and value not in (None, "", [], {}):
            out.add(field)
    return out


async def reads_of(b: RunningBridge, actor: str) -> list[dict[str, Any]]:
    status, body = await b.call("GET", f"/api/v1/privacy/reads?actor={actor}", user="sue", role="supervisor")
    assert status == 200, body
    return list(reversed(body["reads"]))


@pytest.mark.parametrize("role", list(Role))
async def test_every_route_shows_a_role_only_its_fields_and_records_the_read(
    seeded_bridge: tuple[RunningBridge, Seeded], role: Role
) -> None:
    b, seeded = seeded_bridge
    allowed = NEED_TO_KNOW[role] & HELD
    actor = f"{role.value}-1"
    texts: list[str] = []

    # The console, signed in with a session cookie: the resident card beside an alert, the queue's names.
    async with console_client(b, f"{actor}-console", role.value) as console:
        status, context = await console.call("GET", f"/console/api/alerts/{seeded.resolved_alert}/context")
        assert status == 200, context
        card = context["resident"]
        assert shown(card) == allowed, card
        assert set(card["hidden"]) == {k for k in card["hidden"]} and all(
            field_of(k) not in NEED_TO_KNOW[role] for k in card["hidden"]
        )
        texts.append(json.dumps(context))
        status, names = await console.call("GET", f"/console/api/residents?ids={seeded.resident_id},res-none")
        assert status == 200 and names == {seeded.resident_id: ADA["name"]}
    console_reads = await reads_of(b, f"{actor}-console")
    assert [(r["purpose"], set(r["fields"]), r["source"], r["resident_id"]) for r in console_reads] == [
        ("console.alert_context", {f.value for f in allowed}, "console", seeded.resident_id),
        ("console.queue_names", {"name"}, "console", seeded.resident_id),
    ]
    assert console_reads[0]["alert_id"] == seeded.resolved_alert
    assert all(r["address"] == "127.0.0.1" and r["role"] == role.value for r in console_reads)

    # The API with a bearer token.
    status, one = await b.call("GET", f"/api/v1/residents/{seeded.resident_id}", user=actor, role=role.value)
    assert status == 200 and shown(one) == allowed, one
    status, many = await b.call("GET", "/api/v1/residents", user=actor, role=role.value)
    assert status == 200 and [shown(r) for r in many["residents"]] == [allowed]
    status, yaml_text = await b.call(
        "GET", "/api/v1/registry/export?format=yaml", user=actor, role=role.value
    )
    assert status == 200
    status, csv_text = await b.call(
        "GET", "/api/v1/registry/export?format=csv&kind=residents", user=actor, role=role.value
    )
    assert status == 200
    [row] = list(csv.DictReader(io.StringIO(csv_text)))
    assert shown(row) == allowed, row
    status, alert = await b.call(
        "GET", f"/api/v1/alerts/{seeded.resolved_alert}", user=actor, role=role.value
    )
    assert status == 200
    timeline_people = [t for t in alert["timeline"] if t["actor"].startswith("responder")]
    assert timeline_people, alert["timeline"]
    if F.RESPONDERS in allowed:
        assert timeline_people[0]["actor"] == "responder:Byron King"
        assert timeline_people[0]["detail"]["phone"] == "+447700900101"
    else:
        assert timeline_people[0]["actor"] == "responder" and "phone" not in timeline_people[0]["detail"]
    assert (alert["note"] == NOTE) is (F.ALERT_NOTES in NEED_TO_KNOW[role])
    texts += [json.dumps(one), json.dumps(many), yaml_text, csv_text, json.dumps(alert)]
    if role is Role.INSTALLER:
        leaked = [v for v in SECRET_TO_INSTALLERS for text in texts if v in text]
        assert leaked == [], leaked
    else:
        assert all(v in "".join(texts) for v in SECRET_TO_INSTALLERS)
    api_reads = await reads_of(b, actor)
    purposes = [r["purpose"] for r in api_reads]
    alert_fields = {f.value for f in {F.RESPONDERS, F.ALERT_NOTES} & NEED_TO_KNOW[role]}
    # An alert that shows a role nothing of the resident's (an installer's) is not a read of her data.
    expected = ["api.resident", "api.residents", "api.registry_export.yaml", "api.registry_export.csv"]
    assert purposes == expected + (["api.alert"] if alert_fields else []), purposes
    assert all(r["source"] == "api" and r["resident_id"] == seeded.resident_id for r in api_reads)
    assert {f for r in api_reads[:4] for f in r["fields"]} == {f.value for f in allowed}
    if alert_fields:
        assert set(api_reads[4]["fields"]) == alert_fields


async def test_the_registry_pages_record_the_names_they_show(
    seeded_bridge: tuple[RunningBridge, Seeded],
) -> None:
    b, seeded = seeded_bridge
    async with console_client(b, "ian", "installer") as console:
        status, page = await console.call("GET", "/console/installations")
        assert status == 200 and str(ADA["name"]) in page
        status, page = await console.call("GET", f"/console/installations/{seeded.unit_id}")
        assert status == 200 and str(ADA["name"]) in page
        assert str(ADA["key_safe"]) not in page
    purposes = [(r["purpose"], r["fields"]) for r in await reads_of(b, "ian")]
    assert purposes == [
        ("registry.installations_page", ["name"]),
        ("registry.installation_page", ["name"]),
    ]


async def test_an_installer_edits_what_it_cannot_read_and_its_export_round_trip_keeps_it(
    seeded_bridge: tuple[RunningBridge, Seeded],
) -> None:
    """Fields a role may not see are write-only for it: a PATCH may set the key safe (the answer does not
    show it), and re-importing its own export (which left the column out) keeps what is stored."""
    b, seeded = seeded_bridge
    path = f"/api/v1/residents/{seeded.resident_id}"
    status, body = await b.call("PATCH", path, user="ian", role="installer", json={"key_safe": "code 2024"})
    assert status == 200 and "key_safe" not in body and "key_safe" in body["hidden"]
    status, export = await b.call(
        "GET", "/api/v1/registry/export?format=csv&kind=residents", user="ian", role="installer"
    )
    assert status == 200 and "key_safe" not in export.splitlines()[0]
    token = await b.token("ian", "installer")
    async with b.session.post(
        b.url + "/api/v1/registry/import?format=csv&kind=residents&update=1",
        data=export.replace("12 St James", "14 St James"),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    status, body = await b.call("GET", path, user="root", role="admin")
    assert body["key_safe"] == "code 2024" and body["address"].startswith("14 St James")
    assert body["medical_notes"] == ADA["medical_notes"] and len(body["responders"]) == 2


async def test_the_audit_of_reads_is_for_supervisors_and_admins(
    seeded_bridge: tuple[RunningBridge, Seeded],
) -> None:
    b, seeded = seeded_bridge
    await b.call("GET", f"/api/v1/residents/{seeded.resident_id}", user="olive", role="operator")
    for role in ("operator", "installer"):
        status, body = await b.call("GET", "/api/v1/privacy/reads", user=f"{role}-x", role=role)
        assert status == 403 and body["detail"] == f"role {role} may not privacy:audit"
    status, body = await b.call(
        "GET", f"/api/v1/privacy/reads?resident_id={seeded.resident_id}&limit=1", user="root", role="admin"
    )
    assert status == 200 and len(body["reads"]) == 1 and body["next_cursor"] is not None
    assert body["reads"][0]["actor"] == "olive" and body["reads"][0]["purpose"] == "api.resident"
    status, older = await b.call(
        "GET",
        f"/api/v1/privacy/reads?resident_id={seeded.resident_id}&cursor={body['next_cursor']}",
        user="root",
        role="admin",
    )
    assert status == 200 and [r["actor"] for r in older["reads"]] == ["olive"]  # the seeded console read
    status, text = await b.call(
        "GET", "/api/v1/privacy/reads?format=csv&since=2000-01-01T00:00:00Z", user="sue", role="supervisor"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 200 and {r["purpose"] for r in rows} >= {"api.resident", "console.alert_context"}
    status, body = await b.call(
        "GET", "/api/v1/privacy/reads?until=2000-01-01T00:00:00Z", user="sue", role="supervisor"
    )
    assert status == 200 and body["reads"] == []
    for query, says in [
        ("since=last+tuesday", "since must be an RFC 3339 time"),
        ("limit=0", "limit must be a whole number"),
        ("limit=99999999999999999999", "limit must be a whole number"),
        ("cursor=%F0%9F%98%80", "cursor is not one we gave"),
        ("format=xml", "format must be json or csv"),
    ]:
        status, body = await b.call("GET", f"/api/v1/privacy/reads?{query}", user="sue", role="supervisor")
        assert status == 422 and says in json.dumps(body), (query, body)
        assert "tuesday" not in json.dumps(body)  # an error never echoes what was sent
    status, body = await b.call(
        "GET", "/api/v1/privacy/reads?resident_id=res-nobody", user="sue", role="supervisor"
    )
    assert status == 200 and body == {"reads": [], "next_cursor": None}


def _guide_table(heading: str) -> list[list[str]]:
    """The first Markdown table after ``heading`` in docs/data-protection.md, as rows of cells."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "data-protection.md").read_text()
    table: list[str] = []
    for line in text.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in table]
    return [row for row in cells[2:] if row and row[0]]


def test_the_guide_prints_the_table_the_code_enforces() -> None:
    """docs/data-protection.md's role-by-field matrix is NEED_TO_KNOW, and its reasons are PURPOSES."""
    from alarm_centre.privacy.need_to_know import PURPOSES

    rows = _guide_table("## Need to know: who sees which field")
    roles = [Role.OPERATOR, Role.SUPERVISOR, Role.INSTALLER, Role.ADMIN]
    printed = {row[0]: {role: row[1 + n] == "yes" for n, role in enumerate(roles)} for row in rows}
    assert list(printed) == [f.value for f in ResidentField]
    for field in ResidentField:
        assert printed[field.value] == {role: field in NEED_TO_KNOW[role] for role in roles}, field
    assert {row[0]: row[5] for row in rows} == {f.value: PURPOSES[f] for f in ResidentField}


def test_the_guide_prints_the_retention_defaults() -> None:
    from alarm_centre.privacy.kinds import BUILT_IN_KINDS

    rows = _guide_table("## Retention")
    printed = {row[0].strip("`"): int(row[1].split()[0]) for row in rows if row[0].startswith("`")}
    assert printed == {k.name: k.default_days for k in BUILT_IN_KINDS}
