"""The voice service: Echo links, help by voice, status, cancel, and daily check-ins.

Everything here is async and runs *before* the (synchronous) ask-sdk-core handlers: the endpoint picks
the work from the request type and intent, awaits it, and hands the :class:`VoiceResult` to the skill as
``handler_input.context``; handlers only turn that result into speech.

Help and cancel go through the intake like any device event (``source="voice"``), so the store's rules
apply unchanged: priority 1, joining the resident's open help alert, ``call_centre`` to the resident's
unit, and ``(device_id, event_id)`` idempotency, with the event id derived from Alexa's ``requestId``.

Alexa device ids are longer than the 64-character device-id rule, so an Echo is a device of kind
``alexa`` with our own id, carrying the Alexa id in ``devices.alexa_device_id`` (unique). An unlinked
Echo speaks as ``alexa-<sha256(deviceId)[:16]>`` and its alerts carry the Alexa ids as an
``unregistered_hint``.

The SQL is in :mod:`skills.voice_store`; this module decides, that one stores.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import CollectorRegistry, Counter

from alarm_centre.alerts.intake import Intake, StoreUnavailable
from alarm_centre.faults import Retry
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Conflict, InvalidRequest, PostCommit, Tx
from devices import strict_json
from devices.events import DEVICE_ID_RE, MAX_EVENT_ID, DeviceEvent
from devices.registry import UNIT_KINDS
from devices.strict_json import dig
from devices.vocabulary import EventType, help_key
from skills import voice_store

log = logging.getLogger(__name__)

ALEXA_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
DEADLINE_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
DUE_BATCH = 500

Action = Literal["trigger", "status", "cancel", "check_in", "none"]


class LinkError(InvalidRequest):
    """Bad input to a link or schedule request; ``field`` names the offending field (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is speaking: the Alexa ids and request id of one verified request."""

    alexa_device_id: str
    alexa_user_id: str
    request_id: str

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> Caller:
        system = dig(envelope, "context", "System") or {}
        device = dig(system, "device", "deviceId")
        user = dig(system, "user", "userId") or dig(envelope, "session", "user", "userId")
        request_id = dig(envelope, "request", "requestId")
        return cls(
            alexa_device_id=device if isinstance(device, str) else "",
            alexa_user_id=user if isinstance(user, str) else "",
            request_id=request_id if isinstance(request_id, str) else "",
        )

    @property
    def event_id(self) -> str:
        """Alexa's requestId when it fits the event-id rule, else its SHA-256 (so replays collide)."""
        rid = self.request_id
        if rid and len(rid) <= MAX_EVENT_ID and rid.isprintable():
            return rid
        return hashlib.sha256(rid.encode()).hexdigest()

    @property
    def unlinked_device_id(self) -> str:
        """Our device id for an Echo nobody has linked: ``alexa-`` + 16 hex of SHA-256(deviceId)."""
        seed = self.alexa_device_id or f"user:{self.alexa_user_id}"
        return "alexa-" + hashlib.sha256(seed.encode()).hexdigest()[:16]

    @property
    def hint(self) -> dict[str, Any]:
        return {"alexa_device_id": self.alexa_device_id, "alexa_user_id": self.alexa_user_id}


@dataclass(frozen=True, slots=True)
class EchoLink:
    """A linked Echo: our device id, the resident, and whether that resident has a unit to call."""

    device_id: str
    alexa_device_id: str
    resident_id: str | None
    has_unit: bool


@dataclass(frozen=True, slots=True)
class VoiceResult:
    """What the store work found or did; the skill handlers build speech from this alone.

    ``status`` per action: trigger ``raised``/``joined``/``duplicate``/``unavailable``; status
    ``acknowledged``/``raised``/``none``/``unavailable``; cancel ``recorded``/``none``/``unavailable``;
    check_in ``recorded``/``unlinked``/``unavailable``.
    """

    action: Action
    status: str
    linked: bool = False
    has_unit: bool = False
    alert_id: str | None = None


NO_WORK = VoiceResult("none", "none")


# -- check-in schedule arithmetic (pure) -----------------------------------------------------------
def parse_deadline(value: str) -> dtime:
    match = DEADLINE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise LinkError("deadline", "must be HH:MM in 24-hour time, for example 10:00")
    return dtime(int(match.group(1)), int(match.group(2)))


def parse_timezone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise LinkError(
            "timezone", f"unknown time zone {str(value)[:60]!r}; use an IANA name like Europe/London"
        ) from None


def deadline_on(day: date, deadline: dtime, tz: ZoneInfo) -> float:
    """The deadline on one local day, as epoch seconds."""
    return datetime.combine(day, deadline, tzinfo=tz).timestamp()


def local_day(at: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(at, tz).date()


def next_deadline_after(at: float, deadline: dtime, tz: ZoneInfo) -> float:
    """The first deadline strictly after ``at``."""
    day = local_day(at, tz)
    due = deadline_on(day, deadline, tz)
    return due if due > at else deadline_on(day + timedelta(days=1), deadline, tz)


def day_start(day: date, tz: ZoneInfo) -> float:
    return datetime.combine(day, dtime(0, 0), tzinfo=tz).timestamp()


# -- the service -----------------------------------------------------------------------------------
class VoiceService:
    """Voice work against the store and the intake; one per bridge."""

    def __init__(
        self,
        store: AlertStore,
        intake: Intake | None = None,
        *,
        clock: Callable[[], float] = time.time,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.intake = intake
        self._clock = clock
        #: Failed missed-check-in sweeps (exported on ``/metrics`` when ``metrics_registry`` is given).
        self.check_in_sweep_failures = Counter(
            "telecare_voice_check_in_sweep_failures_total",
            "Missed check-in sweeps that failed (logged with the traceback; tried again on the next pass)",
            registry=metrics_registry,
        )

    def _received_at(self) -> datetime:
        """Now on the service's clock (the bridge's, injected in tests), as an event's received time."""
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- lookups --
    async def find_echo(self, alexa_device_id: str) -> EchoLink | None:
        """The active Echo with this Alexa device id, or None."""
        if not alexa_device_id:
            return None
        async with self.store.read() as tx:
            row = await voice_store.echo_by_alexa_id(tx, alexa_device_id)
            if row is None:
                return None
            has_unit = row["resident_id"] is not None and await voice_store.resident_has_unit(
                tx, row["resident_id"], UNIT_KINDS
            )
        return EchoLink(row["id"], row["alexa_device_id"], row["resident_id"], has_unit)

    async def _echo_or_log(self, caller: Caller) -> EchoLink | None:
        echo = await self.find_echo(caller.alexa_device_id)
        if echo is None:
            log.warning(
                "request from an unlinked Echo: alexa_device_id=%s alexa_user_id=%s (link it with "
                "'telecare-bridge alexa link')",
                caller.alexa_device_id,
                caller.alexa_user_id,
            )
        return echo

    def _need_intake(self) -> Intake:
        if self.intake is None:
            raise StoreUnavailable("voice service has no intake")
        return self.intake

    # -- intents --
    async def trigger_help(self, caller: Caller) -> VoiceResult:
        """Raise (or join) a voice_help alert; ``unavailable`` when the store cannot commit."""
        try:
            echo = await self._echo_or_log(caller)
            device_id = echo.device_id if echo else caller.unlinked_device_id
            resident_id = echo.resident_id if echo else None
            async with self.store.read() as tx:
                already_open = await self.store.alerts.open_alert(tx, help_key(device_id, resident_id))
            event = DeviceEvent(
                device_id=device_id,
                event_id=caller.event_id,
                type=EventType.VOICE_HELP,
                received_at=self._received_at(),
                source="voice",
                data={"alexa_request_id": caller.request_id[:200]},
                unregistered_hint=None if echo else caller.hint,
            )
            result = await self._need_intake().submit(event)
        except Exception as exc:  # StoreUnavailable, or a read that failed: never pretend
            log.error("voice help could not be stored for %s: %s", caller.alexa_device_id, exc)
            return VoiceResult("trigger", "unavailable")
        linked = echo is not None and echo.resident_id is not None
        has_unit = bool(echo and echo.has_unit)
        if result.result == "rejected":
            log.error("voice help rejected by the store: %s", result.error)
            return VoiceResult("trigger", "unavailable", linked, has_unit)
        if result.result == "duplicate":
            status = "duplicate"
        else:
            status = "joined" if already_open is not None else "raised"
        return VoiceResult("trigger", status, linked, has_unit, result.alert_id)

    async def help_status(self, caller: Caller) -> VoiceResult:
        """The state of the caller's open help alert."""
        try:
            echo = await self._echo_or_log(caller)
            device_id = echo.device_id if echo else caller.unlinked_device_id
            async with self.store.read() as tx:
                key = help_key(device_id, echo.resident_id if echo else None)
                row = await self.store.alerts.open_alert(tx, key)
        except Exception as exc:
            log.error("help status could not be read: %s", exc)
            return VoiceResult("status", "unavailable")
        linked = echo is not None and echo.resident_id is not None
        if row is None:
            return VoiceResult("status", "none", linked)
        return VoiceResult("status", str(row["state"]), linked, alert_id=str(row["id"]))

    async def cancel_help(self, caller: Caller) -> VoiceResult:
        """Record the resident's cancel on their open help alert (it stays open for an operator)."""
        try:
            echo = await self._echo_or_log(caller)
            device_id = echo.device_id if echo else caller.unlinked_device_id
            event = DeviceEvent(
                device_id=device_id,
                event_id=caller.event_id,
                type=EventType.CANCEL,
                received_at=self._received_at(),
                source="voice",
                data={"said": "cancel help", "alexa_request_id": caller.request_id[:200]},
                unregistered_hint=None if echo else caller.hint,
            )
            result = await self._need_intake().submit(event)
        except Exception as exc:
            log.error("voice cancel could not be stored: %s", exc)
            return VoiceResult("cancel", "unavailable")
        linked = echo is not None and echo.resident_id is not None
        if result.result == "rejected":
            return VoiceResult("cancel", "unavailable", linked)
        if result.alert_id is None:
            return VoiceResult("cancel", "none", linked)
        return VoiceResult("cancel", "recorded", linked, alert_id=result.alert_id)

    async def check_in(self, caller: Caller) -> VoiceResult:
        """Record a wellbeing check-in; it satisfies today's deadline if said before it."""
        try:
            echo = await self._echo_or_log(caller)
            resident_id = echo.resident_id if echo else None
            now = self._clock()

            async def work(tx: Tx, post: PostCommit) -> None:
                await voice_store.record_check_in(
                    tx,
                    resident_id,
                    echo.device_id if echo else None,
                    caller.alexa_device_id[:255],
                    caller.event_id,
                    now,
                )
                if resident_id is not None:
                    await self._satisfy_deadline(tx, resident_id, now)

            await self.store.transaction(work)
        except Exception as exc:
            log.error("check-in could not be stored: %s", exc)
            return VoiceResult("check_in", "unavailable")
        if resident_id is None:
            return VoiceResult("check_in", "unlinked")
        return VoiceResult("check_in", "recorded", True)

    @staticmethod
    async def _satisfy_deadline(tx: Tx, resident_id: str, now: float) -> None:
        row = await voice_store.schedule(tx, resident_id)
        if row is None:
            return
        tz, deadline = ZoneInfo(row["timezone"]), parse_deadline(row["deadline"])
        today = local_day(now, tz)
        if now <= deadline_on(today, deadline, tz):
            tomorrow = deadline_on(today + timedelta(days=1), deadline, tz)
            if float(row["next_due_at"]) < tomorrow:
                await voice_store.set_next_due(tx, resident_id, tomorrow)

    # -- installers: links --
    async def link_echo(
        self, device_id: str, alexa_device_id: str, resident_id: str, alexa_user_id: str | None = None
    ) -> dict[str, Any]:
        """Create or update an Echo (device of kind alexa) linked to a resident.

        Raises :class:`LinkError` (bad field, 422) or ``Conflict`` (the id belongs to something else, 409).
        """
        if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
            raise LinkError("device_id", "must be 1-64 characters of A-Za-z0-9._-")
        if not isinstance(alexa_device_id, str) or not ALEXA_ID_RE.fullmatch(alexa_device_id):
            raise LinkError("alexa_device_id", "must be 1-255 printable characters without spaces")
        if alexa_user_id is not None and not ALEXA_ID_RE.fullmatch(alexa_user_id):
            raise LinkError("alexa_user_id", "must be 1-255 printable characters without spaces")
        now = self._clock()

        async def work(tx: Tx, post: PostCommit) -> dict[str, Any]:
            if not await voice_store.resident_exists(tx, resident_id):
                raise LinkError("resident_id", f"no resident {resident_id[:64]!r}; create the resident first")
            existing = await voice_store.device(tx, device_id)
            if existing is not None and existing["kind"] != voice_store.ALEXA_KIND:
                raise Conflict(f"device {device_id} is a {existing['kind']}, not an Echo")
            other = await voice_store.device_with_alexa_id(tx, alexa_device_id, device_id)
            if other is not None:
                raise Conflict(f"that Alexa device is already linked as device {other['id']}")
            data = json.loads(existing["data"] or "{}") if existing is not None else {}
            if alexa_user_id is not None:
                data["alexa_user_id"] = alexa_user_id
            await voice_store.save_echo(
                tx, device_id, resident_id, alexa_device_id, strict_json.safe_dumps(data), now
            )
            return {
                "device_id": device_id,
                "alexa_device_id": alexa_device_id,
                "resident_id": resident_id,
                "alexa_user_id": data.get("alexa_user_id"),
            }

        result: dict[str, Any] = await self.store.transaction(work)
        return result

    async def unlink_echo(self, device_id: str) -> bool:
        """Unlink an Echo: clear its Alexa id and resident (the device row stays, for the history).

        False if there was no such link. Its requests are then those of an unlinked Echo.
        """

        async def work(tx: Tx, post: PostCommit) -> int:
            return await voice_store.clear_echo(tx, device_id)

        return bool(await self.store.transaction(work))

    async def list_links(self) -> list[dict[str, Any]]:
        async with self.store.read() as tx:
            rows = await voice_store.echo_links(tx)
        return [
            {
                "device_id": r["id"],
                "alexa_device_id": r["alexa_device_id"],
                "resident_id": r["resident_id"],
                "alexa_user_id": json.loads(r["data"] or "{}").get("alexa_user_id"),
                "last_seen_at": r["last_seen_at"],
            }
            for r in rows
        ]

    # -- installers: check-in schedules --
    async def set_check_in_schedule(self, resident_id: str, deadline: str, timezone: str) -> dict[str, Any]:
        """Give a resident a daily check-in deadline (local time in ``timezone``)."""
        at = parse_deadline(deadline)
        tz = parse_timezone(timezone)
        now = self._clock()
        next_due = next_deadline_after(now, at, tz)

        async def work(tx: Tx, post: PostCommit) -> dict[str, Any]:
            nonlocal next_due
            if not await voice_store.resident_exists(tx, resident_id):
                raise LinkError("resident_id", f"no resident {resident_id[:64]!r}")
            day = local_day(next_due, tz)
            if await voice_store.checked_in_between(tx, resident_id, day_start(day, tz), next_due):
                next_due = deadline_on(day + timedelta(days=1), at, tz)  # already checked in for that day
            await voice_store.save_schedule(tx, resident_id, at.strftime("%H:%M"), timezone, next_due, now)
            return {
                "resident_id": resident_id,
                "deadline": at.strftime("%H:%M"),
                "timezone": timezone,
                "next_due_at": next_due,
            }

        result: dict[str, Any] = await self.store.transaction(work)
        return result

    async def clear_check_in_schedule(self, resident_id: str) -> bool:
        async def work(tx: Tx, post: PostCommit) -> int:
            return await voice_store.delete_schedule(tx, resident_id)

        return bool(await self.store.transaction(work))

    async def list_check_in_schedules(self) -> list[dict[str, Any]]:
        async with self.store.read() as tx:
            return await voice_store.schedules(tx)

    async def raise_missed_check_ins(self, now: float | None = None) -> list[str]:
        """Raise one ``inactivity`` alert per resident whose deadline passed without a check-in.

        Due schedules are found with the ``checkin_schedules_due`` index. The event id names the local
        day, so a retry after a crash is a duplicate, never a second alert; the schedule then moves on
        to the next deadline. Returns the residents alerted.
        """
        at = self._clock() if now is None else now
        async with self.store.read() as tx:
            due = await voice_store.due_schedules(tx, at, DUE_BATCH)
        alerted: list[str] = []
        for row in due:
            resident_id = row["resident_id"]
            tz, deadline = ZoneInfo(row["timezone"]), parse_deadline(row["deadline"])
            missed_at = float(row["next_due_at"])
            day = local_day(missed_at, tz)
            async with self.store.read() as tx:
                done = await voice_store.checked_in_between(tx, resident_id, day_start(day, tz), missed_at)
                device = await voice_store.resident_first_device(tx, resident_id)
            if not done:
                device_id = device["id"] if device is not None else f"checkin.{resident_id}"[:64]
                event = DeviceEvent(
                    device_id=device_id,
                    event_id=f"checkin-missed-{day.isoformat()}",
                    type=EventType.INACTIVITY,
                    received_at=datetime.fromtimestamp(at, UTC),
                    source="system",
                    data={
                        "reason": "missed daily check-in",
                        "resident_id": resident_id,
                        "deadline": row["deadline"],
                        "timezone": row["timezone"],
                        "day": day.isoformat(),
                    },
                    unregistered_hint=None if device is not None else {"resident_id": resident_id},
                )
                result = await self._need_intake().submit(event)  # StoreUnavailable: try again next pass
                if result.result == "accepted":
                    alerted.append(resident_id)
            following = next_deadline_after(max(at, missed_at), deadline, tz)

            async def advance(
                tx: Tx,
                post: PostCommit,
                rid: str = resident_id,
                old: float = missed_at,
                new: float = following,
                missed: bool = not done,
            ) -> None:
                await voice_store.advance_schedule(tx, rid, old, new, missed=missed)

            await self.store.transaction(advance)
        return alerted

    async def run_check_in_loop(self, poll_s: float) -> None:
        """Check for missed check-ins every ``poll_s`` seconds, forever; a failing sweep is counted,
        logged as a fault (the traceback when it starts), and tried again after ``poll_s`` or the
        retry's backoff, whichever is longer."""
        retry = Retry(log, "missed check-in sweep failed")
        while True:
            try:
                missed = await self.raise_missed_check_ins()
                if missed:
                    log.warning("missed daily check-in: inactivity alert for %s", ", ".join(missed))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.check_in_sweep_failures.inc()
                await asyncio.sleep(max(poll_s, retry.failed(exc)))
                continue
            retry.succeeded()
            await asyncio.sleep(poll_s)
