"""What is forwarded to the upstream centre: the raise and resolve hooks (in the store's transactions).

- Every alert raised is queued (:data:`ForwardKind.ALARM`), except test alerts (a unit in test mode, a
  test press: the centre would treat them as real) and the forwarder's own path-down alerts (the centre
  supervises its paths itself), and types with no DC-09 code (none raise alerts today).
- A unit's restore is queued (:data:`ForwardKind.RESTORE`): an alert resolved by its unit
  (``cleared_by_device``: ``mains_restored``, a Contact ID restore, heartbeats resuming) whose raise was
  forwarded, and a restore the unit reports for a help or urgent alert that stays open for our operator
  (the centre hears the restore as the panel sent it). An operator closing an alert is not a restore of
  the condition, and is not forwarded. At most one restore per alert.
- The account is the resident's ``dc09_account`` when set (None: each path's own account).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from alarm_centre.alerts.lifecycle import Outcome
from alarm_centre.forwarding import queue
from alarm_centre.forwarding.queue import ForwardKind
from alarm_centre.store.tx import PostCommit, Raised, Row, Tx
from devices.dc09_forward import forwardable
from devices.events import DeviceEvent
from devices.vocabulary import EventType, Priority, parse_event_type, priority_of, restore_target

#: The device id prefix of the forwarder's own path-down alerts (``dc09-forward-<path>``).
PATH_DEVICE_PREFIX = "dc09-forward-"


def path_device_id(path_name: str) -> str:
    """The synthetic device a path's down alert is raised from."""
    return PATH_DEVICE_PREFIX + path_name


class ForwardHooks:
    """The raise and resolve hooks; ``clock`` is the bridge's (the queue's due times)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    async def on_raise(self, tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
        """Queue a newly raised alert."""
        event_type = _forwarded(alert)
        if event_type is None:
            return
        await queue.add(
            tx,
            post,
            alert_id=int(alert["id"]),
            kind=ForwardKind.ALARM,
            event_type=event_type.value,
            device_id=str(alert["device_id"]),
            account=await queue.resident_account(tx, alert["resident_id"]),
            now=self._clock(),
        )

    async def on_raises(self, tx: Tx, post: PostCommit, raised: Sequence[Raised]) -> None:
        """:meth:`on_raise`'s batch form (PostgreSQL's set-based ingest): the same rows queued, with
        their sequences, in three statements whatever the batch's size."""
        wanted = [(item.alert, kind) for item in raised if (kind := _forwarded(item.alert)) is not None]
        if not wanted:
            return
        residents = sorted(
            {str(alert["resident_id"]) for alert, _ in wanted if alert["resident_id"] is not None}
        )
        accounts = await queue.resident_accounts(tx, residents)
        await queue.add_many(
            tx,
            post,
            [
                queue.Forward(
                    alert_id=int(alert["id"]),
                    kind=ForwardKind.ALARM,
                    event_type=kind.value,
                    device_id=str(alert["device_id"]),
                    account=accounts.get(str(alert["resident_id"])),
                )
                for alert, kind in wanted
            ],
            now=self._clock(),
        )

    async def on_resolve(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> None:
        """Queue the restore of an alert its unit cleared, when its raise was forwarded."""
        event_type = _type_of(alert)
        if event_type is None or not forwardable(event_type, restore=True):
            return
        alert_id = int(alert["id"])
        if await queue.alert_outcome(tx, alert_id) != Outcome.CLEARED_BY_DEVICE.value:
            return
        if not await queue.has_alarm(tx, alert_id):
            return
        await queue.add(
            tx,
            post,
            alert_id=alert_id,
            kind=ForwardKind.RESTORE,
            event_type=event_type.value,
            device_id=str(alert["device_id"]),
            account=await queue.resident_account(tx, alert["resident_id"]),
            now=self._clock(),
        )

    async def on_event(
        self, tx: Tx, post: PostCommit, event: DeviceEvent, device: Row | None, alert_id: int | None
    ) -> None:
        """Queue the restore of a help or urgent alert the unit reports restored (the alert stays open
        for our operator; a technical one is resolved, and :meth:`on_resolve` queues it)."""
        restores = restore_target(event.type, event.data)
        if alert_id is None or restores is None or priority_of(restores) in (None, Priority.TECHNICAL):
            return
        if not forwardable(restores, restore=True) or not await queue.has_alarm(tx, alert_id):
            return
        row = await tx.fetchone("SELECT device_id, resident_id FROM alerts WHERE id = ?", alert_id)
        if row is None:
            return
        await queue.add(
            tx,
            post,
            alert_id=alert_id,
            kind=ForwardKind.RESTORE,
            event_type=restores.value,
            device_id=str(row["device_id"]),
            account=await queue.resident_account(tx, row["resident_id"]),
            now=self._clock(),
        )


def _type_of(alert: Row) -> EventType | None:
    return parse_event_type(str(alert["type"]))


def _forwarded(alert: Row) -> EventType | None:
    """The type a new alert is forwarded as, or None: a test, a path's own down alert, or a type with
    no DC-09 code is not forwarded."""
    event_type = _type_of(alert)
    if event_type is None or alert["test"] or str(alert["device_id"]).startswith(PATH_DEVICE_PREFIX):
        return None
    return event_type if forwardable(event_type) else None
