"""The data-protection officer's tools over HTTP and from the CLI: subject access export (JSON and a
readable summary), erasure (refused while an alert is open, confirmed by id), the retention policy and a
run now; who may do what; bad input answered without echo."""

from __future__ import annotations

import asyncio
import getpass
import json
import stat
import sys
import tempfile
from pathlib import Path

from harness import RunningBridge
from privacy_support import ADA, SMS_TEXT, seed_resident

from alarm_centre.store import open_store

CLI = [sys.executable, "-m", "bridge.cli"]
EMPTY = tempfile.mkdtemp(prefix="cli-no-config-")


async def test_subject_access_erasure_and_retention_over_http(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    seeded = await seed_resident(b.store)
    export = f"/api/v1/privacy/residents/{seeded.resident_id}/export"
    for role in ("operator", "supervisor", "installer"):
        status, body = await b.call("GET", export, user=f"{role}-1", role=role)
        assert status == 403, body
    status, doc = await b.call("GET", export, user="dpo", role="admin")
    assert status == 200 and doc["format"] == "telecare-bridge subject access export v1"
    assert doc["resident"]["medical_notes"] == ADA["medical_notes"] and doc["requested_by"] == "dpo"
    status, summary = await b.call("GET", export + "?format=markdown", user="dpo", role="admin")
    assert (
        status == 200 and summary.startswith("# Subject access export: Ada Lovelace") and SMS_TEXT in summary
    )
    status, body = await b.call("GET", export + "?format=pdf", user="dpo", role="admin")
    assert status == 422 and "format must be json or markdown" in body["detail"]
    status, body = await b.call(
        "GET", "/api/v1/privacy/residents/res-nobody/export", user="dpo", role="admin"
    )
    assert status == 404
    status, body = await b.call(
        "GET", "/api/v1/privacy/residents/..%2F..%2Fetc/export", user="dpo", role="admin"
    )
    assert status == 404
    status, reads = await b.call(
        "GET", f"/api/v1/privacy/reads?actor=dpo&resident_id={seeded.resident_id}", user="dpo", role="admin"
    )
    assert [r["purpose"] for r in reads["reads"]] == ["subject_access", "subject_access"]

    erase = f"/api/v1/privacy/residents/{seeded.resident_id}/erase"
    body = {"reference": "SAR-2026-17", "confirm": seeded.resident_id}
    status, answer = await b.call("POST", erase, user="sue", role="supervisor", json=body)
    assert status == 403
    status, answer = await b.call(
        "POST", erase, user="dpo", role="admin", json={**body, "confirm": "res-bill"}
    )
    assert status == 422 and answer["detail"][0]["field"] == "confirm"
    for bad in (
        {},
        {"reference": "", "confirm": seeded.resident_id},
        {**body, "extra": 1},
        {**body, "reference": "x" * 201},
    ):
        status, answer = await b.call("POST", erase, user="dpo", role="admin", json=bad)
        assert status == 422, (bad, answer)
    status, answer = await b.call("POST", erase, user="dpo", role="admin", json=body)
    assert status == 409 and f"open alert(s) {seeded.open_alert}" in answer["detail"]["message"]
    assert (await b.call("POST", f"/api/v1/alerts/{seeded.open_alert}/acknowledge", user="olive"))[0] == 200
    status, _ = await b.call(
        "POST", f"/api/v1/alerts/{seeded.open_alert}/resolve", user="olive", json={"outcome": "resident_ok"}
    )
    assert status == 200
    status, answer = await b.call("POST", erase, user="dpo", role="admin", json=body)
    assert (
        status == 200 and answer["reference"] == "SAR-2026-17" and answer["counts"]["residents_deleted"] == 1
    )
    status, listed = await b.call("GET", "/api/v1/privacy/erasures", user="dpo", role="admin")
    assert status == 200 and [e["reference"] for e in listed["erasures"]] == ["SAR-2026-17"]
    assert (await b.call("GET", export, user="dpo", role="admin"))[0] == 404
    status, alert = await b.call("GET", f"/api/v1/alerts/{seeded.open_alert}", user="dpo", role="admin")
    assert status == 200 and alert["resident_id"] is None and alert["device_id"] == "anonymised"

    status, policy = await b.call("GET", "/api/v1/privacy/retention", user="sue", role="supervisor")
    assert status == 200 and policy["enabled"] is True
    assert {p["kind"]: p["days"] for p in policy["policy"]}["resolved_alerts"] == 2190
    status, _ = await b.call("POST", "/api/v1/privacy/retention/run", user="sue", role="supervisor")
    assert status == 403
    status, report = await b.call("POST", "/api/v1/privacy/retention/run", user="dpo", role="admin")
    assert status == 200 and set(report["counts"]) == {p["kind"] for p in policy["policy"]}
    status, policy = await b.call("GET", "/api/v1/privacy/retention?limit=1", user="sue", role="supervisor")
    assert len(policy["runs"]) == 1 and policy["runs"][0]["counts"] == report["counts"]


async def cli(store_url: str, *args: str) -> tuple[int, str, str]:
    env = {"PATH": "/usr/bin:/bin", "TELECARE_STORE__URL": store_url}
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, cwd=EMPTY, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_exports_erases_and_lists_reads(tmp_path: Path) -> None:
    url = str(tmp_path / "bridge.db")
    async with open_store(url) as store:
        seeded = await seed_resident(store)
    me = f"{getpass.getuser()}@cli"
    code, out, err = await cli(url, "residents", "show", "res-ada")
    assert code == 0 and ADA["key_safe"] in out, err
    code, out, err = await cli(url, "privacy", "export", "res-ada", "--out", str(tmp_path / "sar"))
    assert code == 0, err
    json_path, md_path = (Path(line) for line in out.split())
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o600 and stat.S_IMODE(md_path.stat().st_mode) == 0o600
    doc = json.loads(json_path.read_text())
    assert doc["resident"]["name"] == ADA["name"] and doc["requested_by"] == me
    assert "## Who has read this data" in md_path.read_text()
    code, out, _ = await cli(url, "privacy", "reads", "--resident", "res-ada", "--format", "json")
    reads = json.loads(out)["reads"]
    assert code == 0 and [(r["actor"], r["source"], r["purpose"]) for r in reads][:2] == [
        (me, "cli", "cli.subject_access"),
        (me, "cli", "cli.residents_show"),
    ]
    code, out, _ = await cli(url, "privacy", "reads", "--since", "yesterday-ish")
    assert code == 2
    code, _, err = await cli(
        url, "privacy", "erase", "res-ada", "--reference", "SAR-9", "--confirm", "res-bill"
    )
    assert code == 2 and "repeat its id" in err
    code, _, err = await cli(
        url, "privacy", "erase", "res-ada", "--reference", "SAR-9", "--confirm", "res-ada"
    )
    assert code == 1 and f"open alert(s) {seeded.open_alert}" in err
    code, out, _ = await cli(url, "privacy", "retention")
    assert code == 0 and "resolved_alerts  2190 days" in out
    code, out, _ = await cli(url, "privacy", "retention", "--run")
    assert code == 0 and "run now: resolved_alerts 0" in out
    code, _, err = await cli(url, "privacy", "export", "res-nobody", "--out", str(tmp_path))
    assert code == 1 and "no resident 'res-nobody'" in err
