"""Data the bridge wrote always reads back (issue item 2), on SQLite and PostgreSQL.

The demo seeded ``language: "English"`` and ``"Welsh"``, which the resident model refuses, so
``residents list``/``show``, ``export`` and ``/api/v1/residents...``/``/registry/export`` all failed
with a 500. Now every write path validates with the model the reads use, and a migration repairs
rows stored before.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

import pytest
import yaml
from harness import RunningBridge

from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import InvalidRequest, PostCommit, Tx
from devices.registry import Resident
from simulators.fleet import DEMO_DETAILS, DEMO_RESIDENTS, seed_demo


@pytest.fixture(autouse=True)
def cli_env(bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The in-process CLI works on the running bridge's store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELECARE_STORE__URL", bridge.bridge.config.store.url)
    monkeypatch.setenv("TELECARE_LOG__LEVEL", "WARNING")
    monkeypatch.delenv("TELECARE_CONFIG", raising=False)


def _main(argv: tuple[str, ...]) -> tuple[int, str, str]:
    from bridge.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


async def cli(*args: str) -> tuple[int, str, str]:
    """The real CLI entry point in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(_main, args)


async def installer(b: RunningBridge, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return await b.call(method, path, user="ivy", role="installer", json=body)


async def read_everything_back(b: RunningBridge, residents: dict[str, str]) -> None:
    """``residents``: id -> the language it must read back as, through every route and command."""
    status, body = await installer(b, "GET", "/api/v1/residents")
    assert status == 200, body
    listed = {r["id"]: r for r in body["residents"]}
    for resident_id, language in residents.items():
        assert listed[resident_id]["language"] == language
        status, one = await installer(b, "GET", f"/api/v1/residents/{resident_id}")
        assert status == 200 and one["language"] == language, one
    status, body = await installer(b, "GET", "/api/v1/devices")
    assert status == 200, body
    for device in body["devices"]:
        status, one = await installer(b, "GET", f"/api/v1/devices/{device['id']}")
        assert status == 200, one
    status, text = await installer(b, "GET", "/api/v1/registry/export?format=yaml")
    assert status == 200, text
    exported = {r["id"]: r for r in yaml.safe_load(text)["residents"]}
    assert {k: exported[k]["language"] for k in residents} == residents
    for kind in ("residents", "devices"):
        status, text = await installer(b, "GET", f"/api/v1/registry/export?format=csv&kind={kind}")
        assert status == 200 and text.startswith("id,"), text

    code, out, err = await cli("residents", "list")
    assert code == 0, err
    for resident_id in residents:
        assert resident_id in out
    for resident_id, language in residents.items():
        code, out, err = await cli("residents", "show", resident_id)
        assert code == 0 and f"language       {language}" in out, err
    code, out, err = await cli("devices", "list")
    assert code == 0, err
    code, out, err = await cli("export", "--format", "yaml")
    assert code == 0 and yaml.safe_load(out)["residents"], err
    for kind in ("residents", "devices"):
        code, out, err = await cli("export", "--format", "csv", "--kind", kind)
        assert code == 0 and out.startswith("id,"), err


async def test_the_demo_fleet_reads_back_through_every_route_and_command(bridge: RunningBridge) -> None:
    units = await seed_demo(bridge.store.devices)
    assert units == [u for _, _, u in DEMO_RESIDENTS]
    expected = {r: str(DEMO_DETAILS[r]["language"]) for r, _, _ in DEMO_RESIDENTS}
    await read_everything_back(bridge, expected)
    for resident_id, _, unit_id in DEMO_RESIDENTS:
        code, out, err = await cli("devices", "show", unit_id)
        assert code == 0 and resident_id in out, err


async def test_language_names_as_the_demo_wrote_them_are_stored_as_tags(bridge: RunningBridge) -> None:
    """The issue's own data: the store takes the names and keeps the tags the reads accept."""
    await bridge.store.devices.upsert_resident("res-eng", "Ada", {"language": "English"})
    await bridge.store.devices.upsert_resident("res-cym", "Karen", {"language": "Welsh"})
    await read_everything_back(bridge, {"res-eng": "en", "res-cym": "cy"})


async def test_every_write_path_refuses_a_language_it_could_not_read(
    bridge: RunningBridge, tmp_path: Any
) -> None:
    with pytest.raises(InvalidRequest, match="language"):
        await bridge.store.devices.upsert_resident("res-x", "Xena", {"language": "Klingon"})
    with pytest.raises(InvalidRequest, match="responders"):
        await bridge.store.devices.upsert_resident(
            "res-x", "Xena", {"responders": [{"name": "Bea", "phone": "07700 900002"}]}
        )
    with pytest.raises(InvalidRequest, match="kind"):
        await bridge.store.devices.upsert_device("unit-x", "toaster")

    status, body = await installer(
        bridge, "POST", "/api/v1/residents", {"id": "res-api", "name": "Api", "language": "Klingon"}
    )
    assert status == 422 and body["detail"][0]["field"] == "language", body
    status, body = await installer(
        bridge, "POST", "/api/v1/residents", {"id": "res-api", "name": "Api", "language": "Welsh"}
    )
    assert status == 201 and body["language"] == "cy", body
    status, body = await installer(bridge, "PATCH", "/api/v1/residents/res-api", {"language": "tlh-Latn-XX-"})
    assert status == 422 and body["detail"][0]["field"] == "language", body

    code, _, err = await cli("residents", "add", "res-cli", "--name", "Cli", "--language", "Klingon")
    assert code == 2 and "language" in err and "en-GB" in err
    code, out, err = await cli("residents", "add", "res-cli", "--name", "Cli", "--language", "english")
    assert code == 0, err
    code, out, err = await cli("residents", "show", "res-cli")
    assert code == 0 and "language       en\n" in out

    code, _, err = await cli(
        "alexa",
        "link",
        "--device-id",
        "echo-x",
        "--alexa-device-id",
        "amzn1.x",
        "--resident",
        "bad id",
        "--resident-name",
        "Ada",
    )
    assert code == 2 and "invalid: resident 'bad id'" in err, err

    bad = tmp_path / "residents.csv"
    bad.write_text("id,name,language\nres-csv,Csv,Klingon\n")
    code, out, err = await cli("import", str(bad), "--kind", "residents")
    assert code != 0 and "language" in out + err
    assert await store_languages(bridge.store) == {"res-api": "cy", "res-cli": "en"}


async def store_languages(store: AlertStore) -> dict[str, Any]:
    async with store.read() as tx:
        rows = await tx.fetchall("SELECT id, data FROM residents ORDER BY id")
    return {r["id"]: json.loads(r["data"]).get("language", "(none)") for r in rows}


#: What an old database may hold, and what the migration leaves (None: the key is removed).
STORED_BEFORE = {
    "r-english": ("English", "en"),
    "r-welsh": (" welsh ", "cy"),
    "r-gaelic": ("Scottish Gaelic", "gd"),
    "r-tag": ("en-GB", "en-GB"),
    "r-script": ("zh-Hant-TW", "zh-Hant-TW"),
    "r-klingon": ("Klingon", None),
    "r-number": (5, None),
    "r-null": (None, None),
    "r-dashes": ("en--GB", None),
    "r-short": ("e", None),
    "r-long-subtag": ("en-abcdefghi", None),
    "r-space": ("en GB", None),
}


async def test_the_migration_repairs_languages_stored_before(bridge: RunningBridge, store_url: str) -> None:
    async def old_rows(tx: Tx, post: PostCommit) -> None:
        for resident_id, (language, _) in STORED_BEFORE.items():
            data = {"address": "1 Mill Lane", "language": language}
            await tx.execute(
                "INSERT INTO residents (id, name, data, created_at) VALUES (?, ?, ?, 0)",
                resident_id,
                resident_id.upper(),
                json.dumps(data),
            )
        await tx.execute("INSERT INTO residents (id, name, data, created_at) VALUES ('r-none', 'N', '{}', 0)")
        await tx.execute(  # responders as the console test used to store them
            "INSERT INTO residents (id, name, data, created_at) VALUES ('r-shaped', 'S', ?, 0)",
            json.dumps(
                {
                    "language": "Welsh",
                    "responders": [
                        {"name": "Carl", "phone": "+447700900001", "relation": "neighbour", "order": 1}
                    ],
                }
            ),
        )
        await tx.execute("DELETE FROM schema_version WHERE version = 15")

    await bridge.store.transaction(old_rows)
    async with open_store(store_url) as reopened:  # a node starting on the old database migrates it
        languages = await store_languages(reopened)
    for resident_id, (_, repaired) in STORED_BEFORE.items():
        assert languages[resident_id] == (repaired or "(none)"), resident_id
    assert languages["r-none"] == "(none)"
    expected = {r: (after or "en-GB") for r, (_, after) in STORED_BEFORE.items()} | {"r-shaped": "cy"}
    await read_everything_back(bridge, expected)
    code, out, err = await cli("residents", "show", "r-klingon")
    assert code == 0 and "address        1 Mill Lane" in out, out + err
    assert Resident.model_fields["language"].default == "en-GB"
