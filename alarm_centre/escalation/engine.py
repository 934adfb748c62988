"""Escalation: per-priority policies, each alert's snapshotted due steps, responder call-outs, notifications.

Everything here is store logic (no aiohttp, no twilio): the escalation runner calls it. Steps,
notifications and call-outs change state only as the tables in :mod:`alarm_centre.escalation.states` allow.

- A **policy** (:mod:`alarm_centre.escalation.policy`) is a list of steps per priority.
  Policies live in the store (``escalation_policies``); config provides them and an admin may edit them.
- When an alert is raised, :meth:`Escalation.on_raise` (a store raise hook, ``HookOrder.ESCALATION``)
  copies the policy of its priority into ``escalation_steps`` in the same transaction: a later policy
  edit does not change a running escalation, and the steps survive a restart.
- :meth:`Escalation.run_due_steps` takes due steps in one transaction and performs what they mean *in
  that transaction* (a timeline entry, a highlight, notification rows): each step happens exactly once.
  The select is portable; on PostgreSQL it gets ``FOR UPDATE SKIP LOCKED`` so nodes share the work.
- SMS and calls are **notifications**: rows claimed with a lease (:meth:`claim_notifications`), sent by
  the runner, then recorded (:meth:`notification_sent` / :meth:`notification_failed`). A crash between
  send and record means a retry after the lease: at least once, as for any alarm.
- Resolving with ``responder_sent`` starts a **call-out**: the resident's responders are contacted in
  order (SMS and a call) until one accepts (``YES`` or key 1).
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import AlertState, IllegalTransition, Source
from alarm_centre.alerts.model import iso
from alarm_centre.escalation import store as sql
from alarm_centre.escalation.policy import SUPERVISORS, PolicyStep
from alarm_centre.escalation.responders import (
    Responder,
    describe,
    read_responders,
    responder_call,
    responder_sms,
    supervisor_call,
    supervisor_description,
    supervisor_sms,
)
from alarm_centre.escalation.states import (
    CALLOUTS,
    CalloutState,
    Channel,
    NotificationState,
    PolicySource,
    Purpose,
    ReplyResult,
    ResponderAction,
    StepAction,
    StepKind,
    StepState,
)
from alarm_centre.ids import row_id
from alarm_centre.store.alerts import alert_row
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Conflict, InvalidRequest, LogEntry, NotFound, PostCommit, Raised, Row, Tx
from devices.events import DeviceEvent
from devices.strict_json import column_text as _j
from devices.vocabulary import PRIORITIES

log = logging.getLogger(__name__)

CALLOUT_LOOKBACK_S = 24 * 3600.0
STEPS_PER_PASS = 100


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    """What the store logic needs from config."""

    supervisor_numbers: tuple[str, ...] = ()
    twilio_enabled: bool = False
    responder_wait_s: float = 120.0
    retry_s: tuple[float, ...] = (30.0, 120.0, 300.0)
    max_attempts: int = 4
    lease_s: float = 60.0
    node: str = "node"


@dataclass(frozen=True, slots=True)
class Notification:
    """One SMS or call to send now (claimed with a lease)."""

    id: int
    alert_id: str
    purpose: Purpose
    channel: Channel
    to: str
    name: str
    body: str
    attempts: int


@dataclass(slots=True)
class ReplyOutcome:
    """What an inbound reply or key press did, for the webhook's answer."""

    alert_id: str | None = None
    recorded: ReplyResult = ReplyResult.IGNORED
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: A supervisor accepted a raised alert: acknowledge it (after the reply is recorded) as this actor.
    acknowledge_as: str | None = None


class Escalation:
    """Policies, due steps, call-outs and notifications on an :class:`AlertStore`."""

    def __init__(
        self, store: AlertStore, settings: EscalationSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock  # wall-clock seconds: due times, leases and retries; tests move their own
        #: Policies read by each open transaction (entries go when the transaction does).
        self._policies_seen: weakref.WeakKeyDictionary[Tx, dict[int, list[dict[str, Any]]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- SQL helpers -----------------------------------------------------------------------------
    def _retry_delay(self, attempts: int) -> float:
        delays = self.settings.retry_s or (60.0,)
        return delays[min(max(attempts, 1) - 1, len(delays) - 1)]

    # -- policies --------------------------------------------------------------------------------
    async def sync_policies(self, policies: Mapping[int, Sequence[PolicyStep]]) -> None:
        """Write the configured policies into the store, except where an admin edited one through the API."""

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            rows = await sql.policy_sources(tx)
            edited = {int(r["priority"]) for r in rows if r["source"] != PolicySource.CONFIG}
            for r in rows:
                if r["source"] == PolicySource.CONFIG and int(r["priority"]) not in policies:
                    await sql.delete_policy(tx, int(r["priority"]))
            for priority, steps in policies.items():
                if priority in edited:
                    continue
                await sql.put_policy(
                    tx,
                    int(priority),
                    _j([s.to_json() for s in steps]),
                    PolicySource.CONFIG,
                    now,
                    PolicySource.CONFIG.value,
                )

        await self.store.transaction(work)

    async def policies(self) -> dict[int, dict[str, Any]]:
        """The policies now in force, by priority."""
        async with self.store.read() as tx:
            rows = await sql.all_policies(tx)
        return {
            int(r["priority"]): {
                "priority": int(r["priority"]),
                "steps": json.loads(r["steps"]),
                "source": r["source"],
                "updated_at": iso(r["updated_at"]),
                "updated_by": r["updated_by"],
            }
            for r in rows
        }

    async def set_policy(self, priority: int, steps: Sequence[PolicyStep], *, actor: str) -> None:
        """Replace one priority's policy (alerts already raised keep their snapshot)."""
        if priority not in PRIORITIES:
            raise InvalidRequest(f"priority must be one of {', '.join(map(str, PRIORITIES))}")

        async def work(tx: Tx, post: PostCommit) -> None:
            await sql.put_policy(
                tx, priority, _j([s.to_json() for s in steps]), PolicySource.API, self.clock(), actor
            )

        await self.store.transaction(work)

    async def forget_policy(self, priority: int) -> None:
        """Drop an edited policy so the configured one applies again (after :meth:`sync_policies`)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await sql.delete_policy(tx, priority)

        await self.store.transaction(work)

    # -- snapshot at raise -----------------------------------------------------------------------
    async def _policy_in(self, tx: Tx, priority: int) -> list[dict[str, Any]]:
        """The policy steps for a priority, read once per transaction (a storm raises thousands in one)."""
        known = self._policies_seen.setdefault(tx, {})
        if priority not in known:
            text = await sql.policy_steps(tx, priority)
            known[priority] = json.loads(text) if text is not None else []
        return known[priority]

    async def on_raise(self, tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
        """A raise hook: copy the alert's policy into its due steps, in the raising transaction."""
        if alert["test"]:
            return
        steps = await self._policy_in(tx, int(alert["priority"]))
        if not steps:
            return
        now = self.clock()
        for step in _policy_steps(alert, steps):
            await sql.add_step(
                tx, step.alert_id, step.kind, step.seq, step.action, step.target, step.due_at, now
            )
        await self.store.alerts.log_action(
            tx, post, alert, AuditAction.ESCALATION_SCHEDULED, "system", Source.SYSTEM, {"steps": steps}, now
        )

    async def on_raises(self, tx: Tx, post: PostCommit, raised: Sequence[Raised]) -> None:
        """:meth:`on_raise`'s batch form (PostgreSQL's set-based ingest): every new alert's steps in one
        statement, their ``escalation_scheduled`` entries in another."""
        now = self.clock()
        steps: list[sql.NewStep] = []
        entries: list[LogEntry] = []
        for item in raised:
            alert = item.alert
            if alert["test"]:
                continue
            policy = await self._policy_in(tx, int(alert["priority"]))
            if not policy:
                continue
            steps.extend(_policy_steps(alert, policy))
            entries.append(
                LogEntry(
                    alert, AuditAction.ESCALATION_SCHEDULED, "system", Source.SYSTEM, {"steps": policy}, now
                )
            )
        await sql.add_steps(tx, steps, now)
        await self.store.log_actions(tx, post, entries)

    # -- stopping --------------------------------------------------------------------------------
    async def stop_for(self, alert_ids: Iterable[str]) -> int:
        """Cancel pending policy steps of these alerts if no longer ``raised``; returns how many."""
        ids = sorted({k for k in map(row_id, alert_ids) if k is not None})
        if not ids:
            return 0

        async def work(tx: Tx, post: PostCommit) -> int:
            now = self.clock()
            total = 0
            for alert_id in ids:
                alert = await alert_row(tx, alert_id)
                if alert is None or alert["state"] == AlertState.RAISED:
                    continue
                total += await self._cancel_policy(tx, post, alert, now)
            return total

        result: int = await self.store.transaction(work)
        return result

    async def _cancel_policy(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> int:
        reason = (
            f"acknowledged by {alert['acknowledged_by']}"
            if alert["acknowledged_by"]
            else f"{alert['state']} ({alert['outcome'] or 'no outcome'})"
        )
        cancelled = await sql.cancel_steps(tx, alert["id"], StepKind.POLICY, reason, now)
        cancelled += await sql.cancel_notifications(
            tx, alert["id"], Purpose.SUPERVISOR, reason, now, unclaimed_at=now
        )
        if cancelled:
            await self.store.alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.ESCALATION_STOPPED,
                "system",
                Source.SYSTEM,
                {"cancelled": cancelled, "reason": reason},
                now,
            )
        return cancelled

    # -- due steps -------------------------------------------------------------------------------
    async def on_resolve(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> None:
        """A resolve hook: a resolved alert escalates no further. Its pending policy steps and supervisor
        notifications are cancelled in the resolving transaction, and its timeline says so. Responder
        call-outs are not touched: they start *after* a ``responder_sent`` resolution."""
        reason = "alert resolved"
        steps = await sql.cancel_steps(tx, alert["id"], StepKind.POLICY, reason, now)
        notifications = await sql.cancel_notifications(tx, alert["id"], Purpose.SUPERVISOR, reason, now)
        if steps or notifications:
            await self.store.alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.ESCALATION_STOPPED,
                "system",
                Source.SYSTEM,
                {
                    "cancelled": steps + notifications,
                    "escalation_steps": steps,
                    "notifications": notifications,
                    "reason": "the alert was resolved",
                },
                now,
                state="resolved",
            )

    async def run_due_steps(self, *, now: float | None = None, limit: int = STEPS_PER_PASS) -> int:
        """Perform every due step once, in one transaction; returns how many steps were taken."""

        async def work(tx: Tx, post: PostCommit) -> int:
            at = self.clock() if now is None else now
            rows = await sql.due_steps(tx, at, limit, self.store.skip_locked())
            for step in rows:
                state, result = await self._perform_step(tx, post, step, at)
                await sql.finish_step(tx, step, state, at, result)
            return len(rows)

        taken: int = await self.store.transaction(work)
        return taken

    async def _perform_step(self, tx: Tx, post: PostCommit, step: Row, now: float) -> tuple[StepState, str]:
        alert = await alert_row(tx, int(step["alert_id"]))
        if alert is None:
            return StepState.CANCELLED, "alert is gone"
        if step["kind"] == StepKind.POLICY:
            if alert["state"] != AlertState.RAISED:
                await self._cancel_policy(tx, post, alert, now)
                return StepState.CANCELLED, f"alert is {alert['state']}"
            return await self._policy_step(tx, post, alert, step, now)
        if step["kind"] == StepKind.RESPONDER:
            return await self._responder_step(tx, post, alert, step, now)
        return StepState.FAILED, f"unknown step kind {step['kind']!r}"

    async def _skip(
        self, tx: Tx, post: PostCommit, alert: Row, detail: dict[str, Any], reason: str, now: float
    ) -> tuple[StepState, str]:
        """A policy step that cannot be performed: said on the timeline, and the step is skipped."""
        await self.store.alerts.log_action(
            tx,
            post,
            alert,
            AuditAction.ESCALATION_SKIPPED,
            "system",
            Source.SYSTEM,
            {**detail, "reason": reason},
            now,
        )
        return StepState.SKIPPED, reason

    async def _policy_step(
        self, tx: Tx, post: PostCommit, alert: Row, step: Row, now: float
    ) -> tuple[StepState, str]:
        spec = json.loads(step["target"])
        waited = now - float(alert["raised_at"])
        detail: dict[str, Any] = {
            "step": int(step["seq"]) + 1,
            "step_action": step["action"],
            "after_s": spec.get("after_s"),
            "waited_s": round(waited, 1),
        }
        if step["action"] == StepAction.HIGHLIGHT:
            data = json.loads(alert["data"] or "{}")
            data["escalation"] = {"highlight": True, "level": int(step["seq"]) + 1, "since": iso(now)}
            await sql.set_alert_data(tx, alert["id"], _j(data), now)
            await self.store.alerts.log_action(
                tx, post, alert, AuditAction.ESCALATION_HIGHLIGHT, "system", Source.SYSTEM, detail, now
            )
            return StepState.DONE, "highlighted"
        if not self.settings.twilio_enabled:
            return await self._skip(tx, post, alert, detail, "twilio is disabled", now)
        numbers: list[str] = []
        for target in spec.get("to") or [SUPERVISORS]:
            for number in self.settings.supervisor_numbers if target == SUPERVISORS else (target,):
                if number not in numbers:
                    numbers.append(number)
        if not numbers:
            return await self._skip(tx, post, alert, detail, "no supervisor numbers configured", now)
        name, _ = await self._resident_bits(tx, alert)
        text = supervisor_description(alert["type"], name)  # no address: supervisors act on the console
        channel = Channel.SMS if step["action"] == StepAction.SMS else Channel.CALL
        body = (
            supervisor_sms(text, str(alert["id"]), waited)
            if channel is Channel.SMS
            else supervisor_call(text, waited)
        )
        for number in numbers:
            await self._add_notification(
                tx, alert, step["id"], Purpose.SUPERVISOR, None, "", channel, number, body, now
            )
        await self.store.alerts.log_action(
            tx,
            post,
            alert,
            AuditAction.ESCALATION_NOTIFY,
            "system",
            Source.SYSTEM,
            {**detail, "channel": channel.value, "to": numbers},
            now,
        )
        return StepState.DONE, f"{channel.value} to {len(numbers)}"

    async def _resident_bits(self, tx: Tx, alert: Row) -> tuple[str | None, str | None]:
        if not alert["resident_id"]:
            return None, None
        row = await sql.resident(tx, alert["resident_id"])
        if row is None:
            return None, None
        try:
            data = json.loads(row["data"] or "{}")
        except ValueError:
            data = {}
        address = data.get("address") if isinstance(data, dict) else None
        return str(row["name"])[:80], address[:120] if isinstance(address, str) else None

    async def _add_notification(
        self,
        tx: Tx,
        alert: Row,
        step_id: int | None,
        purpose: Purpose,
        index: int | None,
        name: str,
        channel: Channel,
        number: str,
        body: str,
        now: float,
    ) -> None:
        await sql.add_notification(tx, alert["id"], step_id, purpose, index, name, channel, number, body, now)

    # -- responder call-outs ---------------------------------------------------------------------
    async def start_callouts(self, alert_ids: Iterable[str] | None = None) -> list[str]:
        """Start a call-out for alerts resolved with ``responder_sent`` that have none yet (idempotent).

        With ``alert_ids`` None, every such alert resolved in the last day is considered: the sweep that
        catches a resolution whose notice was lost to a restart.
        """
        ids = None if alert_ids is None else sorted({k for k in map(row_id, alert_ids) if k is not None})
        if ids is not None and not ids:
            return []

        async def work(tx: Tx, post: PostCommit) -> list[str]:
            now = self.clock()
            started = []
            for alert in await sql.sent_for_responders_without_callout(tx, now - CALLOUT_LOOKBACK_S, ids):
                await self._start_callout(tx, post, alert, now)
                started.append(str(alert["id"]))
            return started

        result: list[str] = await self.store.transaction(work)
        return result

    async def _start_callout(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> None:
        responders: list[Responder] = []
        skipped = 0
        if alert["resident_id"]:
            row = await sql.resident(tx, alert["resident_id"])
            if row is not None:
                responders, skipped = read_responders(row["data"])
        state: CalloutState
        if not self.settings.twilio_enabled:
            state, action, reason = (
                CalloutState.UNAVAILABLE,
                AuditAction.RESPONDER_CALLOUT_UNAVAILABLE,
                "twilio is disabled",
            )
        elif not responders:
            state, action, reason = (
                CalloutState.EXHAUSTED,
                AuditAction.NO_RESPONDERS,
                "the resident has no responder with a phone number",
            )
        else:
            state, action, reason = CalloutState.ACTIVE, AuditAction.RESPONDER_CALLOUT_STARTED, ""
        await sql.add_callout(tx, alert["id"], _j([r.to_json() for r in responders]), state, now)
        detail: dict[str, Any] = {"responders": [r.name for r in responders], "skipped": skipped}
        if reason:
            detail["reason"] = reason
        await self.store.alerts.log_action(tx, post, alert, action, "system", Source.SYSTEM, detail, now)
        if state is CalloutState.ACTIVE:
            await self._add_responder_step(tx, alert["id"], 0, ResponderAction.CONTACT, now)

    async def _add_responder_step(
        self, tx: Tx, alert_id: int, index: int, action: ResponderAction, due_at: float
    ) -> None:
        await sql.add_step(tx, alert_id, StepKind.RESPONDER, index, action, "{}", due_at, self.clock())

    async def _callout(self, tx: Tx, alert_id: int) -> tuple[Row | None, list[Responder]]:
        row = await sql.callout(tx, alert_id)
        if row is None:
            return None, []
        return row, [Responder(r["name"], r["phone"]) for r in json.loads(row["responders"])]

    async def _responder_step(
        self, tx: Tx, post: PostCommit, alert: Row, step: Row, now: float
    ) -> tuple[StepState, str]:
        callout, responders = await self._callout(tx, int(alert["id"]))
        index = int(step["seq"])
        if callout is None or callout["state"] != CalloutState.ACTIVE or int(callout["position"]) != index:
            return StepState.CANCELLED, "the call-out has moved on"
        if step["action"] == ResponderAction.ADVANCE:
            who = responders[index]
            await self.store.alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.RESPONDER_NO_ANSWER,
                "system",
                Source.SYSTEM,
                {
                    "index": index + 1,
                    "name": who.name,
                    "phone": who.phone,
                    "waited_s": self.settings.responder_wait_s,
                },
                now,
            )
            await self._advance(tx, post, alert, callout, responders, index, now)
            return StepState.DONE, "moved on"
        who = responders[index]
        text = describe(alert["type"], *(await self._resident_bits(tx, alert)))
        await self._add_notification(
            tx,
            alert,
            step["id"],
            Purpose.RESPONDER,
            index,
            who.name,
            Channel.SMS,
            who.phone,
            responder_sms(text, str(alert["id"])),
            now,
        )
        await self._add_notification(
            tx,
            alert,
            step["id"],
            Purpose.RESPONDER,
            index,
            who.name,
            Channel.CALL,
            who.phone,
            responder_call(text),
            now,
        )
        await self._add_responder_step(
            tx, int(alert["id"]), index, ResponderAction.ADVANCE, now + self.settings.responder_wait_s
        )
        await self.store.alerts.log_action(
            tx,
            post,
            alert,
            AuditAction.RESPONDER_CONTACTED,
            "system",
            Source.SYSTEM,
            {"index": index + 1, "of": len(responders), "name": who.name, "phone": who.phone},
            now,
        )
        return StepState.DONE, f"contacting {who.name}"

    async def _advance(
        self,
        tx: Tx,
        post: PostCommit,
        alert: Row,
        callout: Row,
        responders: list[Responder],
        index: int,
        now: float,
    ) -> None:
        nxt = index + 1
        if nxt < len(responders):
            await sql.set_callout_position(tx, alert["id"], nxt, now)
            await self._add_responder_step(tx, int(alert["id"]), nxt, ResponderAction.CONTACT, now)
            return
        await sql.move_callout(tx, alert["id"], CalloutState.EXHAUSTED, now, position=nxt)
        await self.store.alerts.log_action(
            tx,
            post,
            alert,
            AuditAction.RESPONDERS_EXHAUSTED,
            "system",
            Source.SYSTEM,
            {"contacted": len(responders), "reason": "no responder accepted; supervisors alerted"},
            now,
        )
        data = json.loads(alert["data"] or "{}")
        data["escalation"] = {"highlight": True, "level": "responders_exhausted", "since": iso(now)}
        await sql.set_alert_data(tx, alert["id"], _j(data), now)
        if self.settings.twilio_enabled:
            name, _ = await self._resident_bits(tx, alert)
            text = supervisor_description(alert["type"], name)
            for number in self.settings.supervisor_numbers:
                await self._add_notification(
                    tx,
                    alert,
                    None,
                    Purpose.SUPERVISOR,
                    None,
                    "",
                    Channel.SMS,
                    number,
                    f"Telecare: no responder accepted alert {alert['id']} ({text}). Please arrange help.",
                    now,
                )

    # -- replies ---------------------------------------------------------------------------------
    async def on_reply(self, *, from_number: str, reply: str, via: str, ref: str) -> ReplyOutcome:
        """A text (``via`` sms) from ``from_number``: the newest call-out that contacted that number."""

        async def work(tx: Tx, post: PostCommit) -> ReplyOutcome:
            row = await sql.last_contact_of(tx, from_number)
            if row is None:
                return ReplyOutcome()
            return await self._answer(tx, post, row, reply, via, ref)

        result: ReplyOutcome = await self.store.transaction(work)
        return await self._acknowledge(result, Source.SMS)

    async def _acknowledge(self, outcome: ReplyOutcome, source: Source) -> ReplyOutcome:
        """One acknowledgement on any channel: a supervisor's YES (or key 1) claims the raised alert, which
        stops every pending notification for it (the runner hears the acknowledgement, cancels what is
        queued and stops the calls still ringing at Twilio)."""
        if outcome.acknowledge_as is None or outcome.alert_id is None:
            return outcome
        try:
            await self.store.acknowledge(outcome.alert_id, actor=outcome.acknowledge_as, source=source)
        except (Conflict, IllegalTransition, NotFound):
            return outcome  # someone else claimed it first, or it was resolved: the reply stays noted
        outcome.recorded = ReplyResult.ACKNOWLEDGED
        return outcome

    async def on_digits(self, *, call_sid: str, reply: str, digits: str) -> ReplyOutcome:
        """Keys pressed on a call we placed."""

        async def work(tx: Tx, post: PostCommit) -> ReplyOutcome:
            row = await sql.notification_by_sid(tx, call_sid)
            if row is None:
                return ReplyOutcome()
            return await self._answer(tx, post, row, reply, "voice", call_sid, digits=digits)

        result: ReplyOutcome = await self.store.transaction(work)
        return await self._acknowledge(result, Source.VOICE)

    async def _answer(
        self,
        tx: Tx,
        post: PostCommit,
        note: Row,
        reply: str,
        via: str,
        ref: str,
        *,
        digits: str | None = None,
    ) -> ReplyOutcome:
        now = self.clock()
        alert = await alert_row(tx, int(note["alert_id"]))
        if alert is None:
            return ReplyOutcome()
        source = Source.SMS if via == "sms" else Source.VOICE
        name = note["name"] or note["to_number"]
        detail: dict[str, Any] = {
            "name": name,
            "phone": note["to_number"],
            "via": via,
            "ref": ref,
            "reply": reply,
        }
        if digits is not None:
            detail["digits"] = digits
        out = ReplyOutcome(alert_id=str(alert["id"]), name=name)
        if note["purpose"] != Purpose.RESPONDER:
            await self.store.alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.SUPERVISOR_REPLIED,
                f"supervisor:{note['to_number']}",
                source,
                detail,
                now,
            )
            out.recorded = ReplyResult.SUPERVISOR
            if reply == "accept" and alert["state"] == AlertState.RAISED:
                out.acknowledge_as = f"supervisor:{note['to_number']}"
            return out
        actor = f"responder:{name}"
        callout, responders = await self._callout(tx, int(alert["id"]))
        index = note["responder_index"]
        if reply == "accept":
            if callout is None or not CALLOUTS.allows(CalloutState(callout["state"]), CalloutState.ACCEPTED):
                holder = callout["accepted_by"] if callout is not None else None
                await self.store.alerts.log_action(
                    tx,
                    post,
                    alert,
                    AuditAction.RESPONDER_REPLIED,
                    actor,
                    source,
                    {**detail, "note": f"already accepted by {holder}"},
                    now,
                )
                out.recorded = ReplyResult.LATE
                return out
            await sql.move_callout(tx, alert["id"], CalloutState.ACCEPTED, now, accepted_by=name)
            await sql.cancel_steps(tx, alert["id"], StepKind.RESPONDER, f"accepted by {name}", now)
            await sql.cancel_notifications(tx, alert["id"], Purpose.RESPONDER, f"accepted by {name}", now)
            await self.store.alerts.log_action(
                tx, post, alert, AuditAction.RESPONDER_ACCEPTED, actor, source, detail, now
            )
            out.recorded = ReplyResult.ACCEPTED
            return out
        if reply == "decline":
            await self.store.alerts.log_action(
                tx, post, alert, AuditAction.RESPONDER_DECLINED, actor, source, detail, now
            )
            out.recorded = ReplyResult.DECLINED
            if (
                callout is not None
                and callout["state"] == CalloutState.ACTIVE
                and index is not None
                and int(callout["position"]) == int(index)
            ):
                await sql.cancel_steps(tx, alert["id"], StepKind.RESPONDER, "declined", now, seq=int(index))
                await sql.cancel_notifications(
                    tx, alert["id"], Purpose.RESPONDER, "declined", now, responder_index=int(index)
                )
                await self._advance(tx, post, alert, callout, responders, int(index), now)
            return out
        await self.store.alerts.log_action(
            tx,
            post,
            alert,
            AuditAction.RESPONDER_REPLIED,
            actor,
            source,
            {**detail, "note": "reply not understood"},
            now,
        )
        out.recorded = ReplyResult.UNREADABLE
        return out

    # -- notifications ---------------------------------------------------------------------------
    async def claim_notifications(self, *, limit: int = 50) -> list[Notification]:
        """Take due notifications under a lease; ones that no longer matter are cancelled and recorded."""

        async def work(tx: Tx, post: PostCommit) -> list[Notification]:
            now = self.clock()
            rows = await sql.due_notifications(tx, now, limit, self.store.skip_locked())
            taken = []
            for r in rows:
                reason = await self._irrelevant(tx, r)
                if reason is not None:
                    await sql.move_notification(
                        tx, r["id"], NotificationState.CANCELLED, now, last_error=reason
                    )
                    continue
                changed = await sql.lease_notification(
                    tx, r["id"], now + self.settings.lease_s, self.settings.node, now
                )
                if changed != 1:
                    continue
                taken.append(
                    Notification(
                        int(r["id"]),
                        str(r["alert_id"]),
                        Purpose(r["purpose"]),
                        Channel(r["channel"]),
                        r["to_number"],
                        r["name"],
                        r["body"],
                        int(r["attempts"]) + 1,
                    )
                )
            return taken

        result: list[Notification] = await self.store.transaction(work)
        return result

    async def _irrelevant(self, tx: Tx, note: Row) -> str | None:
        if note["purpose"] == Purpose.SUPERVISOR and note["step_id"] is not None:
            alert = await sql.alert_state(tx, int(note["alert_id"]))
            if alert is None:
                return "the alert is gone"
            if alert["state"] != AlertState.RAISED:
                return f"the alert was {alert['state']}"
        if note["purpose"] == Purpose.RESPONDER:
            callout = await sql.callout(tx, int(note["alert_id"]))
            if callout is None or callout["state"] != CalloutState.ACTIVE:
                return "the call-out is over"
        return None

    async def void_reason(self, notification: Notification) -> str | None:
        """Why a claimed notification must not go out now (its alert was acknowledged or resolved,
        the call-out moved on), or None. Asked just before sending; a void one is closed as cancelled.
        """

        async def work(tx: Tx, post: PostCommit) -> str | None:
            row = await sql.notification(tx, notification.id)
            if row is None:
                return "the notification is gone"
            if row["state"] != NotificationState.PENDING:
                return f"the notification is {row['state']} ({row['last_error'] or 'no reason'})"
            reason = await self._irrelevant(tx, row)
            if reason is not None:
                await sql.move_notification(
                    tx,
                    notification.id,
                    NotificationState.CANCELLED,
                    self.clock(),
                    last_error=reason,
                    release=True,
                )
            return reason

        result: str | None = await self.store.transaction(work)
        return result

    async def release(self, notification: Notification) -> None:
        """Give back a claim that was never tried (shutdown before sending)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await sql.give_back(tx, notification.id)

        await self.store.transaction(work)

    async def notification_sent(self, notification: Notification, *, sid: str, status: str) -> None:
        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            await sql.record_sent(tx, notification.id, sid, status, now)
            alert = await alert_row(tx, int(notification.alert_id))
            if alert is not None:
                await self.store.alerts.log_action(
                    tx,
                    post,
                    alert,
                    AuditAction.NOTIFICATION_SENT,
                    "system",
                    Source.SYSTEM,
                    self._detail(notification, sid=sid, status=status),
                    now,
                )

        await self.store.transaction(work)

    async def notification_failed(
        self, notification: Notification, *, error: str, retryable: bool, code: int | None = None
    ) -> None:
        """Record a failed attempt; retry later while attempts remain and retrying can help."""

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            retry_at = None
            if retryable and notification.attempts < self.settings.max_attempts:
                retry_at = now + self._retry_delay(notification.attempts)
                await sql.retry_later(tx, notification.id, retry_at, error, now)
            else:
                await sql.move_notification(
                    tx, notification.id, NotificationState.FAILED, now, last_error=error, release=True
                )
            alert = await alert_row(tx, int(notification.alert_id))
            if alert is not None:
                detail = self._detail(
                    notification,
                    error=error,
                    retryable=retryable,
                    code=code,
                    retry_at=iso(retry_at),
                    gave_up=retry_at is None,
                )
                await self.store.alerts.log_action(
                    tx, post, alert, AuditAction.NOTIFICATION_FAILED, "system", Source.SYSTEM, detail, now
                )

        await self.store.transaction(work)

    @staticmethod
    def _detail(n: Notification, **extra: Any) -> dict[str, Any]:
        return {
            "channel": n.channel,
            "to": n.to,
            "name": n.name,
            "purpose": n.purpose,
            "attempt": n.attempts,
            **extra,
        }

    async def on_status(
        self, *, sid: str, status: str, failed: bool, final: bool, error_code: int | None
    ) -> str | None:
        """A status callback; a failed delivery is retried while attempts remain. Returns the alert id."""

        async def work(tx: Tx, post: PostCommit) -> str | None:
            row = await sql.notification_by_sid(tx, sid)
            if row is None:
                return None
            now = self.clock()
            await sql.set_status(tx, row["id"], status, now)
            alert = await alert_row(tx, int(row["alert_id"]))
            if alert is None or not final:
                return None if alert is None else str(alert["id"])
            detail: dict[str, Any] = {
                "channel": row["channel"],
                "to": row["to_number"],
                "name": row["name"],
                "purpose": row["purpose"],
                "status": status,
                "sid": sid,
                "attempt": int(row["attempts"]),
            }
            if error_code is not None:
                detail["error_code"] = error_code
            stopped = await self._irrelevant(tx, row) if failed and status == "canceled" else None
            if stopped is not None:  # we stopped it ringing: the alert no longer needs it
                await sql.move_notification(tx, row["id"], NotificationState.FAILED, None, last_error=stopped)
                detail["stopped"] = stopped
                await self.store.alerts.log_action(
                    tx, post, alert, AuditAction.NOTIFICATION_STATUS, "twilio", Source.VOICE, detail, now
                )
                return str(alert["id"])
            if failed:
                relevant = await self._irrelevant(tx, row) is None
                if relevant and int(row["attempts"]) < self.settings.max_attempts:
                    retry_at = now + self._retry_delay(int(row["attempts"]))
                    await sql.move_notification(
                        tx,
                        row["id"],
                        NotificationState.PENDING,
                        None,
                        last_error=f"status {status}",
                        release=True,
                        due_at=retry_at,
                    )
                    detail["retry_at"] = iso(retry_at)
                else:
                    await sql.move_notification(
                        tx, row["id"], NotificationState.FAILED, None, last_error=f"status {status}"
                    )
                    detail["gave_up"] = True
            else:
                await sql.move_notification(tx, row["id"], NotificationState.DELIVERED, None)
            await self.store.alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.NOTIFICATION_FAILED if failed else AuditAction.NOTIFICATION_STATUS,
                "twilio",
                Source.SMS if row["channel"] == Channel.SMS else Source.VOICE,
                detail,
                now,
            )
            return str(alert["id"])

        result: str | None = await self.store.transaction(work)
        return result

    async def ringing_calls(self, alert_ids: Iterable[str]) -> list[str]:
        """Sids of calls we placed for these alerts that may still be ringing (not answered, not over):
        an acknowledgement stops them at Twilio too."""
        ids = sorted({k for k in map(row_id, alert_ids) if k is not None})
        if not ids:
            return []
        async with self.store.read() as tx:
            return await sql.calls_maybe_ringing(tx, ids)

    async def pending_counts(self) -> dict[str, int]:
        """Pending steps and notifications, for metrics."""
        async with self.store.read() as tx:
            return await sql.pending_counts(tx)

    async def next_due(self) -> float | None:
        """When the earliest pending step or notification falls due."""
        async with self.store.read() as tx:
            return await sql.next_due(tx)


def _policy_steps(alert: Row, policy: list[dict[str, Any]]) -> list[sql.NewStep]:
    """The due steps a policy gives a new alert: each ``after_s`` after its raise."""
    raised_at = float(alert["raised_at"])
    return [
        sql.NewStep(
            int(alert["id"]),
            StepKind.POLICY,
            seq,
            StepAction(step["action"]),
            _j(step),
            raised_at + float(step["after_s"]),
        )
        for seq, step in enumerate(policy)
    ]
