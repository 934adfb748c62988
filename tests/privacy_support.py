"""Helpers for the data-protection tests: a resident with every kind of personal data the centre holds,
stored through the same paths the bridge uses where one exists."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alarm_centre.alerts.lifecycle import Source
from alarm_centre.alerts.model import Role
from alarm_centre.privacy.need_to_know import ResidentField
from alarm_centre.privacy.reads import Read, record_reads
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import PostCommit, Tx
from devices.events import DeviceEvent
from devices.vocabulary import EventType

#: The personal values of the test resident: none may leak where it does not belong.
ADA = {
    "name": "Ada Lovelace",
    "address": "12 St James's Square, London SW1Y 4JH",
    "key_safe": "left of the door, code 1815",
    "medical_notes": "Multiple sclerosis; cannot press a pendant reliably",
    "language": "en-GB",
    "responders": [
        {"name": "Byron King", "phone": "+447700900101"},
        {"name": "Mary Somerville", "phone": "+447700900102"},
    ],
}
SMS_SENDER = "+447700900555"
SMS_TEXT = "HELP I have fallen in the kitchen"
NOTE = "Ada says her MS is worse this week"
ECHO_ID = "amzn1.ask.device.AHQTESTECHOID0001"
ECHO_USER = "amzn1.ask.account.AHQTESTUSER0001"
UNIT_SIM = "+447700900999"


@dataclass(frozen=True)
class Persona:
    """A resident's personal values, everywhere the centre may hold them."""

    card: dict[str, Any]
    sms_sender: str
    sms_text: str
    note: str
    echo_id: str
    echo_user: str
    sim: str

    def values(self) -> list[str]:
        """Every value that is personal data, for scans of logs and tables."""
        card = self.card
        return [
            card["name"],
            card["address"],
            card["key_safe"],
            card["medical_notes"],
            *(r["phone"] for r in card["responders"]),
            *(r["name"] for r in card["responders"]),
            self.sms_sender,
            self.sms_text,
            self.note,
            self.echo_id,
            self.echo_user,
        ]


ADA_PERSONA = Persona(ADA, SMS_SENDER, SMS_TEXT, NOTE, ECHO_ID, ECHO_USER, UNIT_SIM)
BILL = Persona(
    {
        "name": "Bill Tutte",
        "address": "3 Bletchley Road, Milton Keynes MK3 6EB",
        "key_safe": "none: neighbour holds a key",
        "medical_notes": "Type 2 diabetes",
        "language": "en-GB",
        "responders": [{"name": "Dorothy Tutte", "phone": "+447700900201"}],
    },
    "+447700900655",
    "help me please Bill here",
    "Bill was confused about the time",
    "amzn1.ask.device.AHQTESTBILLECHO",
    "amzn1.ask.account.AHQTESTBILLUSER",
    "+447700900998",
)


def personal_values() -> list[str]:
    """Every personal value of the test resident Ada."""
    return ADA_PERSONA.values()


@dataclass
class Seeded:
    resident_id: str
    unit_id: str
    echo_id: str
    resolved_alert: str
    open_alert: str | None
    other_alerts: list[str] = field(default_factory=list)


async def _sql(store: AlertStore, sql: str, *args: Any) -> None:
    async def work(tx: Tx, post: PostCommit) -> None:
        await tx.execute(sql, *args)

    await store.transaction(work)


def event(
    device_id: str, kind: str, *, source: str = "mqtt", data: dict[str, Any] | None = None
) -> DeviceEvent:
    return DeviceEvent(
        device_id,
        f"{device_id}-{uuid.uuid4().hex[:10]}",
        EventType(kind),
        datetime.now(UTC),
        source=source,
        data=data or {},
    )


async def seed_resident(
    store: AlertStore,
    resident_id: str = "res-ada",
    *,
    with_open_alert: bool = True,
    heartbeats: int = 3,
    persona: Persona = ADA_PERSONA,
) -> Seeded:
    """Ada, her unit (with a SIM) and her Echo; a resolved help alert raised by SMS with a note, a
    responder's reply on its timeline and a notification that names her address; heartbeats; a voice
    check-in; a read of her data; and (``with_open_alert``) a fall still open."""
    unit, echo = f"unit-{resident_id}", f"echo-{resident_id}"
    first = persona.card["responders"][0]
    await store.devices.upsert_resident(
        resident_id, persona.card["name"], {k: v for k, v in persona.card.items() if k != "name"}
    )
    await store.devices.upsert_device(
        unit, "gsm_unit", resident_id=resident_id, channel="sms", phone=persona.sim
    )
    await store.devices.upsert_device(echo, "alexa", resident_id=resident_id, alexa_device_id=persona.echo_id)
    await _sql(
        store,
        "UPDATE devices SET data = ? WHERE id = ?",
        json.dumps({"alexa_user_id": persona.echo_user}),
        echo,
    )
    [sms] = await store.ingest(
        [event(unit, "pendant", source="sms", data={"sender": persona.sms_sender, "text": persona.sms_text})]
    )
    assert sms.alert_id is not None
    await store.ingest([event(unit, "heartbeat") for _ in range(heartbeats)])
    await store.acknowledge(sms.alert_id, actor="olive", source=Source.CONSOLE)
    await store.alerts.add_note(sms.alert_id, note=persona.note, actor="olive", source=Source.CONSOLE)
    now = time.time()
    await _sql(
        store,
        "INSERT INTO alert_log (alert_id, at, action, actor, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
        int(sms.alert_id),
        now,
        "responder_accepted",
        f"responder:{first['name']}",
        "sms",
        json.dumps({"name": first["name"], "phone": first["phone"], "reply": "accept"}),
    )
    await _sql(
        store,
        "INSERT INTO notifications (alert_id, purpose, name, channel, to_number, body, due_at, created_at, "
        "updated_at) VALUES (?, 'responder', ?, 'sms', ?, ?, ?, ?, ?)",
        int(sms.alert_id),
        first["name"],
        first["phone"],
        f"Pendant alarm for {persona.card['name']}, {persona.card['address']}. Can you attend?",
        now,
        now,
        now,
    )
    await store.resolve(
        sms.alert_id, outcome="responder_sent", note=persona.note, actor="olive", source=Source.CONSOLE
    )
    await _sql(
        store,
        "INSERT INTO voice_checkins (resident_id, device_id, alexa_device_id, request_id, at) "
        "VALUES (?, ?, ?, ?, ?)",
        resident_id,
        echo,
        persona.echo_id,
        f"req-{uuid.uuid4().hex}",
        now,
    )
    await record_reads(
        store,
        [
            Read(
                now,
                "olive",
                Role.OPERATOR.value,
                "console",
                "127.0.0.1",
                resident_id,
                frozenset({ResidentField.KEY_SAFE}),
                "console.alert_context",
                int(sms.alert_id),
            )
        ],
    )
    open_alert = None
    if with_open_alert:
        [fall] = await store.ingest(
            [event(unit, "fall", source="sms", data={"sender": persona.sim, "text": "FALL"})]
        )
        open_alert = fall.alert_id
        await _sql(
            store,
            "INSERT INTO notifications (alert_id, purpose, name, channel, to_number, body, due_at, "
            "created_at, updated_at) VALUES (?, 'supervisor', '', 'sms', ?, ?, ?, ?, ?)",
            int(str(open_alert)),
            "+447700900777",
            "Telecare: alert not acknowledged",
            now,
            now,
            now,
        )
    return Seeded(resident_id, unit, echo, sms.alert_id, open_alert)


async def table_text(store: AlertStore) -> str:
    """Every row of every table of the store, as one text (for scans for personal values)."""
    async with store.read() as tx:
        if store.dialect == "sqlite":
            tables = [
                r["name"] for r in await tx.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
        else:
            tables = [
                r["tablename"]
                for r in await tx.fetchall("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ]
        parts = []
        for table in sorted(tables):
            for row in await tx.fetchall(f"SELECT * FROM {table}"):
                parts.append(f"{table}: " + json.dumps({k: str(v) for k, v in dict(row).items()}))
    return "\n".join(parts)
