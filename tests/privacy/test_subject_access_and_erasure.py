"""Subject access and erasure on both stores: the export holds everything about the resident (and no
unit secrets); erasure is refused while an alert is open, then leaves no personal value anywhere in the
store while the service-level statistics still count the resident's alerts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from privacy_support import (
    ADA,
    BILL,
    NOTE,
    SMS_TEXT,
    UNIT_SIM,
    personal_values,
    seed_resident,
    table_text,
)

from alarm_centre.escalation.store import raised_between
from alarm_centre.privacy.erasure import erase_resident, erasures
from alarm_centre.privacy.retention import RetentionPolicy
from alarm_centre.privacy.subject_access import subject_access, summary_markdown
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Conflict, NotFound, PostCommit, Tx
from bridge.retention_kinds import RETENTION_KINDS

DC09_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    async with open_store(store_url) as opened:
        yield opened


async def test_the_export_holds_everything_about_the_resident(store: AlertStore) -> None:
    seeded = await seed_resident(store)

    async def secret(tx: Tx, post: PostCommit) -> None:
        await tx.execute(
            "UPDATE devices SET dc09_account = 'C0FFEE', dc09_key = ? WHERE id = ?", DC09_KEY, seeded.unit_id
        )

    await store.transaction(secret)
    await seed_resident(
        store, "res-bill", with_open_alert=False, persona=BILL
    )  # someone else: not in Ada's export
    doc = await subject_access(
        store, "res-ada", requested_by="dpo", kinds=RETENTION_KINDS, policy=RetentionPolicy()
    )
    text = json.dumps(doc, allow_nan=False)  # strict JSON, machine-readable
    assert json.loads(text) == doc
    assert DC09_KEY not in text  # a unit's secret is not the resident's data
    assert "res-bill" not in text.replace('"res-ada"', "")
    r = doc["resident"]
    assert {k: r[k] for k in ("name", "address", "key_safe", "medical_notes")} == {
        k: ADA[k] for k in ("name", "address", "key_safe", "medical_notes")
    }
    assert [p["phone"] for p in r["responders"]] == ["+447700900101", "+447700900102"]
    assert [d["id"] for d in doc["devices"]] == [seeded.unit_id] and doc["devices"][0]["phone"] == UNIT_SIM
    assert [d["id"] for d in doc["echo_links"]] == [seeded.echo_id]
    assert doc["echo_links"][0]["alexa_user_id"].startswith("amzn1.ask.account.")
    alerts = {a["id"]: a for a in doc["alerts"]}
    assert set(alerts) == {seeded.resolved_alert, seeded.open_alert}
    resolved = alerts[seeded.resolved_alert]
    assert resolved["note"] == NOTE
    assert "resolved" in [t["action"] for t in resolved["timeline"]]
    assert any(t["actor"] == "responder:Byron King" for t in resolved["timeline"])
    assert resolved["notifications"][0]["to"] == "+447700900101"
    assert [s["data"]["text"] for s in doc["sms"]] == [SMS_TEXT, "FALL"]
    assert doc["heartbeats_counted"] == {seeded.unit_id: 3}
    assert len(doc["voice_check_ins"]) == 1
    assert [x["purpose"] for x in doc["reads_of_their_data"]] == ["console.alert_context"]
    assert doc["retention_days"]["resolved_alerts"] == 2190
    assert any(h["action"] for h in doc["registry_history"]) or doc["registry_history"] == []
    summary = summary_markdown(doc)
    for value in (ADA["name"], ADA["address"], ADA["key_safe"], SMS_TEXT, "console.alert_context"):
        assert str(value) in summary
    with pytest.raises(NotFound):
        await subject_access(store, "res-nobody", requested_by="dpo")


async def test_erasure_waits_for_open_alerts_then_leaves_no_trace(store: AlertStore) -> None:
    seeded = await seed_resident(store)
    await seed_resident(store, "res-bill", persona=BILL)  # another resident, left alone
    async with store.read() as tx:
        counted_before = len(await raised_between(tx, 0, time.time() + 1, [1, 2, 3]))
    assert seeded.open_alert is not None
    with pytest.raises(Conflict) as refused:
        await erase_resident(store, "res-ada", actor="dpo", source="cli", reference="SAR-17", now=time.time())
    assert f"open alert(s) {seeded.open_alert}" in str(refused.value) and "help may be needed" in str(
        refused.value
    )
    assert "Ada Lovelace" in await table_text(store)  # nothing was done
    assert await erasures(store) == []

    await store.acknowledge(seeded.open_alert, actor="olive", source="console")
    await store.resolve(seeded.open_alert, outcome="resident_ok", note=None, actor="olive", source="console")
    done = await erase_resident(
        store, "res-ada", actor="dpo", source="cli", reference="SAR-17", now=time.time()
    )
    assert done.counts["alerts_anonymised"] == 2 and done.counts["residents_deleted"] == 1
    assert done.counts["echo_links_deleted"] == 1 and done.counts["units_unlinked"] == 1
    assert done.counts["voice_check_ins_deleted"] == 1 and done.counts["reads_pseudonymised"] == 1
    everything = await table_text(store)
    leaks = [value for value in personal_values() if value in everything]
    assert leaks == [], leaks
    assert "res-ada" not in everything.replace("unit-res-ada", "")  # the unit stays, unlinked
    assert all(value in everything for value in BILL.values())  # Bill is left alone
    async with store.read() as tx:
        counted_after = len(await raised_between(tx, 0, time.time() + 1, [1, 2, 3]))
        bill = await tx.fetchone("SELECT name FROM residents WHERE id = 'res-bill'")
        reads = await tx.fetchall("SELECT resident_id FROM personal_data_reads ORDER BY id")
    assert counted_after == counted_before  # the statistics still count Ada's (anonymised) alerts
    assert bill is not None and bill["name"] == BILL.card["name"]
    assert [r["resident_id"] for r in reads] == [done.token, "res-bill"]
    [record] = await erasures(store)
    assert (
        record["reference"] == "SAR-17" and record["actor"] == "dpo" and "res-ada" not in json.dumps(record)
    )
    with pytest.raises(NotFound):
        await subject_access(store, "res-ada", requested_by="dpo")
    with pytest.raises(NotFound):
        await erase_resident(store, "res-ada", actor="dpo", source="cli", reference="again", now=time.time())
