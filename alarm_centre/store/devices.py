"""Devices and residents as the intake needs them: registering (validated by the registry's models, so
what is stored always reads back) and the units' online status from their MQTT will messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from alarm_centre.store.tx import Database, InvalidRequest, PostCommit, Tx
from alarm_centre.store.tx import dumps as _j
from alarm_centre.store.tx import now as _now
from devices.registry import Device, Resident, errors_of


class Devices:
    """The devices' and residents' store side (``store.devices``); the registry: ``alarm_centre.registry``."""

    def __init__(self, store: Database) -> None:
        self._store = store

    async def upsert_device(
        self,
        device_id: str,
        kind: str,
        *,
        resident_id: str | None = None,
        channel: str = "mqtt",
        phone: str | None = None,
        alexa_device_id: str | None = None,
    ) -> None:
        """Register (or re-register) a device, validated by the registry's :class:`Device` model:
        what the registry cannot read back is never stored (InvalidRequest naming the field)."""
        d = _valid(
            Device,
            {
                "id": device_id,
                "kind": kind,
                "resident_id": resident_id,
                "channel": channel,
                "phone": phone,
                "alexa_device_id": alexa_device_id,
            },
        )

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "INSERT INTO devices (id, kind, resident_id, channel, phone, alexa_device_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
                "resident_id = excluded.resident_id, channel = excluded.channel, phone = excluded.phone, "
                "alexa_device_id = excluded.alexa_device_id",
                d.id,
                d.kind.value,
                d.resident_id,
                d.channel,
                d.phone,
                d.alexa_device_id,
                _now(),
            )

        await self._store.transaction(work)

    async def upsert_resident(self, resident_id: str, name: str, data: dict[str, Any] | None = None) -> None:
        """Register (or replace) a resident, validated by the registry's :class:`Resident` model -- the
        same rules the registry reads with, so what is stored always reads back (a language name such
        as ``Welsh`` is stored as its tag ``cy``; a bad value is an InvalidRequest naming the field)."""
        r = _valid(Resident, {**(data or {}), "id": resident_id, "name": name})

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "INSERT INTO residents (id, name, data, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, data = excluded.data",
                r.id,
                r.name,
                _j(r.data()),
                _now(),
            )

        await self._store.transaction(work)

    async def set_online(self, device_id: str, online: bool) -> None:
        """The unit's will message (or its 'online' status) arrived."""
        await self.set_many_online([(device_id, online)])

    async def set_many_online(self, statuses: Sequence[tuple[str, bool]]) -> None:
        """Several units' statuses, read together, in one transaction (a power cut reconnects thousands)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            for device_id, online in statuses:
                await tx.execute("UPDATE devices SET online = ? WHERE id = ?", int(online), device_id)

        await self._store.transaction(work)


_Record = TypeVar("_Record", Device, Resident)


def _valid(model: type[_Record], fields: dict[str, Any]) -> _Record:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        what = f"{model.__name__.lower()} {str(fields.get('id'))[:64]!r}"
        raise InvalidRequest(
            f"{what}: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors_of(exc))
        ) from None
