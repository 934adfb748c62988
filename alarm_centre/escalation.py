"""Escalation: per-priority policies, each alert's snapshotted due steps, responder call-outs, notifications.

Everything here is store logic (no aiohttp, no twilio): the bridge's escalation runner calls it.

- A **policy** is a list of steps per priority (``after_s``, ``action`` = highlight | sms | call, ``to``).
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from alarm_centre.ids import row_id
from alarm_centre.lifecycle import Source
from alarm_centre.model import iso
from alarm_centre.responders import (
    Responder,
    describe,
    read_responders,
    responder_call,
    responder_sms,
    supervisor_call,
    supervisor_sms,
)
from alarm_centre.store.base import AlertStore, InvalidRequest, PostCommit, Row, Tx
from devices.events import DeviceEvent
from devices.phone import E164_RE, is_e164
from devices.strict_json import column_text as _j
from devices.vocabulary import PRIORITIES

log = logging.getLogger(__name__)

StepAction = Literal["highlight", "sms", "call"]
STEP_ACTIONS: tuple[str, ...] = ("highlight", "sms", "call")
SUPERVISORS = "supervisors"
CALLOUT_LOOKBACK_S = 24 * 3600.0
MAX_STEPS = 20


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """One step of a policy: ``after_s`` seconds after the alert was raised, do ``action`` to ``to``."""

    after_s: float
    action: str
    to: tuple[str, ...] = (SUPERVISORS,)

    def to_json(self) -> dict[str, Any]:
        return {"after_s": self.after_s, "action": self.action, "to": list(self.to)}


#: The body of ``PUT /api/v1/escalation/policies/{priority}``, as :func:`parse_steps` checks it.
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {
        "steps": {
            "type": "array",
            "maxItems": MAX_STEPS,
            "items": {
                "type": "object",
                "required": ["after_s", "action"],
                "additionalProperties": False,
                "properties": {
                    "after_s": {"type": "number", "minimum": 0, "maximum": 86400,
                                "description": "seconds after the alert was raised"},
                    "action": {"type": "string", "enum": list(STEP_ACTIONS)},
                    "to": {
                        "description": f"{SUPERVISORS!r} (the default) or E.164 numbers",
                        "oneOf": [
                            {"type": "string", "const": SUPERVISORS},
                            {"type": "string", "pattern": f"^{E164_RE.pattern}$"},
                            {"type": "array", "minItems": 1, "items": {"type": "string", "anyOf": [
                                {"const": SUPERVISORS}, {"pattern": f"^{E164_RE.pattern}$"}]}},
                        ],
                    },
                },
            },
        }
    },
}


def parse_steps(raw: Any) -> list[PolicyStep]:
    """Validate a policy from JSON (``[{"after_s", "action", "to"?}, ...]``); InvalidRequest if bad."""
    if not isinstance(raw, list):
        raise InvalidRequest("steps must be a list")
    if len(raw) > MAX_STEPS:
        raise InvalidRequest(f"at most {MAX_STEPS} steps")
    steps = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"after_s", "action", "to"}:
            raise InvalidRequest(f"steps[{n}] must be an object with after_s, action and optional to")
        after = item.get("after_s")
        if isinstance(after, bool) or not isinstance(after, int | float) or not 0 <= after <= 86400:
            raise InvalidRequest(f"steps[{n}].after_s must be a number of seconds from 0 to 86400")
        action = item.get("action")
        if action not in STEP_ACTIONS:
            raise InvalidRequest(f"steps[{n}].action must be one of {', '.join(STEP_ACTIONS)}")
        to = item.get("to", [SUPERVISORS])
        if isinstance(to, str):
            to = [to]
        if (
            not isinstance(to, list)
            or not to
            or not all(isinstance(t, str) and (t == SUPERVISORS or is_e164(t)) for t in to)
        ):
            raise InvalidRequest(f"steps[{n}].to must be 'supervisors' or a list of E.164 numbers")
        steps.append(PolicyStep(float(after), str(action), tuple(to)))
    return sorted(steps, key=lambda s: s.after_s)


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
    purpose: str  # "supervisor" | "responder"
    channel: str  # "sms" | "call"
    to: str
    name: str
    body: str
    attempts: int


@dataclass(slots=True)
class ReplyOutcome:
    """What an inbound reply or key press did, for the webhook's answer."""

    alert_id: str | None = None
    recorded: str = "ignored"  # accepted | declined | unreadable | late | ignored
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Escalation:
    """Policies, due steps, call-outs and notifications on an :class:`AlertStore`."""

    def __init__(self, store: AlertStore, settings: EscalationSettings) -> None:
        self.store = store
        self.settings = settings
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
            now = time.time()
            rows = await tx.fetchall("SELECT priority, source FROM escalation_policies")
            edited = {int(r["priority"]) for r in rows if r["source"] != "config"}
            for r in rows:
                if r["source"] == "config" and int(r["priority"]) not in policies:
                    await tx.execute("DELETE FROM escalation_policies WHERE priority = ?", r["priority"])
            for priority, steps in policies.items():
                if priority in edited:
                    continue
                await tx.execute(
                    "INSERT INTO escalation_policies (priority, steps, source, updated_at, updated_by) "
                    "VALUES (?, ?, 'config', ?, 'config') ON CONFLICT (priority) DO UPDATE SET "
                    "steps = excluded.steps, source = excluded.source, updated_at = excluded.updated_at, "
                    "updated_by = excluded.updated_by",
                    int(priority),
                    _j([s.to_json() for s in steps]),
                    now,
                )

        await self.store.transaction(work)

    async def policies(self) -> dict[int, dict[str, Any]]:
        """The policies now in force, by priority."""
        async with self.store.read() as tx:
            rows = await tx.fetchall("SELECT * FROM escalation_policies ORDER BY priority")
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
            await tx.execute(
                "INSERT INTO escalation_policies (priority, steps, source, updated_at, updated_by) "
                "VALUES (?, ?, 'api', ?, ?) ON CONFLICT (priority) DO UPDATE SET "
                "steps = excluded.steps, source = excluded.source, updated_at = excluded.updated_at, "
                "updated_by = excluded.updated_by",
                priority,
                _j([s.to_json() for s in steps]),
                time.time(),
                actor,
            )

        await self.store.transaction(work)

    async def forget_policy(self, priority: int) -> None:
        """Drop an edited policy so the configured one applies again (after :meth:`sync_policies`)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute("DELETE FROM escalation_policies WHERE priority = ?", priority)

        await self.store.transaction(work)

    # -- snapshot at raise -----------------------------------------------------------------------
    async def _policy_in(self, tx: Tx, priority: int) -> list[dict[str, Any]]:
        """The policy steps for a priority, read once per transaction (a storm raises thousands in one)."""
        known = self._policies_seen.setdefault(tx, {})
        if priority not in known:
            row = await tx.fetchone("SELECT steps FROM escalation_policies WHERE priority = ?", priority)
            known[priority] = json.loads(row["steps"]) if row is not None else []
        return known[priority]

    async def on_raise(self, tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
        """A raise hook: copy the alert's policy into its due steps, in the raising transaction."""
        if alert["test"]:
            return
        steps = await self._policy_in(tx, int(alert["priority"]))
        if not steps:
            return
        now = time.time()
        raised_at = float(alert["raised_at"])
        for seq, step in enumerate(steps):
            await tx.execute(
                "INSERT INTO escalation_steps (alert_id, kind, seq, action, target, due_at, created_at) "
                "VALUES (?, 'policy', ?, ?, ?, ?, ?) ON CONFLICT (alert_id, kind, seq, action) DO NOTHING",
                alert["id"],
                seq,
                step["action"],
                _j(step),
                raised_at + float(step["after_s"]),
                now,
            )
        await self.store.log_action(
            tx, post, alert, "escalation_scheduled", "system", Source.SYSTEM, {"steps": steps}, now
        )

    # -- stopping --------------------------------------------------------------------------------
    async def stop_for(self, alert_ids: Iterable[str]) -> int:
        """Cancel pending policy steps of these alerts if no longer ``raised``; returns how many."""
        ids = sorted({k for k in map(row_id, alert_ids) if k is not None})
        if not ids:
            return 0

        async def work(tx: Tx, post: PostCommit) -> int:
            now = time.time()
            total = 0
            for alert_id in ids:
                alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", alert_id)
                if alert is None or alert["state"] == "raised":
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
        cancelled = await tx.execute(
            "UPDATE escalation_steps SET state = 'cancelled', done_at = ?, result = ? "
            "WHERE alert_id = ? AND kind = 'policy' AND state = 'pending'",
            now,
            reason,
            alert["id"],
        )
        cancelled += await tx.execute(
            "UPDATE notifications SET state = 'cancelled', updated_at = ?, last_error = ? "
            "WHERE alert_id = ? AND purpose = 'supervisor' AND state = 'pending' "
            "AND (lease_until IS NULL OR lease_until <= ?)",
            now,
            reason,
            alert["id"],
            now,
        )
        if cancelled:
            await self.store.log_action(
                tx,
                post,
                alert,
                "escalation_stopped",
                "system",
                Source.SYSTEM,
                {"cancelled": cancelled, "reason": reason},
                now,
            )
        return cancelled

    # -- due steps -------------------------------------------------------------------------------
    async def run_due_steps(self, *, now: float | None = None, limit: int = 100) -> int:
        """Perform every due step once, in one transaction; returns how many steps were taken."""

        async def work(tx: Tx, post: PostCommit) -> int:
            at = time.time() if now is None else now
            rows = await tx.fetchall(
                "SELECT * FROM escalation_steps WHERE state = 'pending' AND due_at <= ? "
                "ORDER BY due_at, id LIMIT ?" + self.store.skip_locked(),
                at,
                limit,
            )
            for step in rows:
                state, result = await self._perform_step(tx, post, step, at)
                await tx.execute(
                    "UPDATE escalation_steps SET state = ?, done_at = ?, result = ? WHERE id = ?",
                    state,
                    at,
                    result,
                    step["id"],
                )
            return len(rows)

        taken: int = await self.store.transaction(work)
        return taken

    async def _perform_step(self, tx: Tx, post: PostCommit, step: Row, now: float) -> tuple[str, str]:
        alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", step["alert_id"])
        if alert is None:
            return "cancelled", "alert is gone"
        if step["kind"] == "policy":
            if alert["state"] != "raised":
                await self._cancel_policy(tx, post, alert, now)
                return "cancelled", f"alert is {alert['state']}"
            return await self._policy_step(tx, post, alert, step, now)
        if step["kind"] == "responder":
            return await self._responder_step(tx, post, alert, step, now)
        return "failed", f"unknown step kind {step['kind']!r}"

    async def _policy_step(
        self, tx: Tx, post: PostCommit, alert: Row, step: Row, now: float
    ) -> tuple[str, str]:
        spec = json.loads(step["target"])
        waited = now - float(alert["raised_at"])
        detail: dict[str, Any] = {
            "step": int(step["seq"]) + 1,
            "step_action": step["action"],
            "after_s": spec.get("after_s"),
            "waited_s": round(waited, 1),
        }
        if step["action"] == "highlight":
            data = json.loads(alert["data"] or "{}")
            data["escalation"] = {"highlight": True, "level": int(step["seq"]) + 1, "since": iso(now)}
            await tx.execute(
                "UPDATE alerts SET data = ?, updated_at = ? WHERE id = ?", _j(data), now, alert["id"]
            )
            await self.store.log_action(
                tx, post, alert, "escalation_highlight", "system", Source.SYSTEM, detail, now
            )
            return "done", "highlighted"
        if not self.settings.twilio_enabled:
            await self.store.log_action(
                tx,
                post,
                alert,
                "escalation_skipped",
                "system",
                Source.SYSTEM,
                {**detail, "reason": "twilio is disabled"},
                now,
            )
            return "skipped", "twilio is disabled"
        numbers: list[str] = []
        for target in spec.get("to") or [SUPERVISORS]:
            for number in self.settings.supervisor_numbers if target == SUPERVISORS else (target,):
                if number not in numbers:
                    numbers.append(number)
        if not numbers:
            await self.store.log_action(
                tx,
                post,
                alert,
                "escalation_skipped",
                "system",
                Source.SYSTEM,
                {**detail, "reason": "no supervisor numbers configured"},
                now,
            )
            return "skipped", "no numbers"
        text = describe(alert["type"], *(await self._resident_bits(tx, alert)))
        channel = "sms" if step["action"] == "sms" else "call"
        body = (
            supervisor_sms(text, str(alert["id"]), waited)
            if channel == "sms"
            else supervisor_call(text, waited)
        )
        for number in numbers:
            await self._add_notification(
                tx, alert, step["id"], "supervisor", None, "", channel, number, body, now
            )
        await self.store.log_action(
            tx,
            post,
            alert,
            "escalation_notify",
            "system",
            Source.SYSTEM,
            {**detail, "channel": channel, "to": numbers},
            now,
        )
        return "done", f"{channel} to {len(numbers)}"

    async def _resident_bits(self, tx: Tx, alert: Row) -> tuple[str | None, str | None]:
        if not alert["resident_id"]:
            return None, None
        row = await tx.fetchone("SELECT name, data FROM residents WHERE id = ?", alert["resident_id"])
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
        purpose: str,
        index: int | None,
        name: str,
        channel: str,
        number: str,
        body: str,
        now: float,
    ) -> None:
        await tx.execute(
            "INSERT INTO notifications (alert_id, step_id, purpose, responder_index, name, channel, "
            "to_number, body, due_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            alert["id"],
            step_id,
            purpose,
            index,
            name,
            channel,
            number,
            body,
            now,
            now,
            now,
        )

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
            now = time.time()
            sql = (
                "SELECT * FROM alerts WHERE outcome = 'responder_sent' AND state = 'resolved' AND test = 0 "
                "AND resolved_at >= ? AND NOT EXISTS (SELECT 1 FROM escalation_callouts c "
                "WHERE c.alert_id = alerts.id)"
            )
            args: list[Any] = [now - CALLOUT_LOOKBACK_S]
            if ids is not None:
                sql += f" AND id IN ({', '.join('?' for _ in ids)})"
                args += ids
            started = []
            for alert in await tx.fetchall(sql + " ORDER BY id", *args):
                await self._start_callout(tx, post, alert, now)
                started.append(str(alert["id"]))
            return started

        result: list[str] = await self.store.transaction(work)
        return result

    async def _start_callout(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> None:
        responders: list[Responder] = []
        skipped = 0
        if alert["resident_id"]:
            row = await tx.fetchone("SELECT data FROM residents WHERE id = ?", alert["resident_id"])
            if row is not None:
                responders, skipped = read_responders(row["data"])
        if not self.settings.twilio_enabled:
            state, action, reason = "unavailable", "responder_callout_unavailable", "twilio is disabled"
        elif not responders:
            state, action, reason = (
                "exhausted",
                "no_responders",
                "the resident has no responder with a phone number",
            )
        else:
            state, action, reason = "active", "responder_callout_started", ""
        await tx.execute(
            "INSERT INTO escalation_callouts (alert_id, responders, position, state, started_at, updated_at) "
            "VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING",
            alert["id"],
            _j([r.to_json() for r in responders]),
            state,
            now,
            now,
        )
        detail: dict[str, Any] = {"responders": [r.name for r in responders], "skipped": skipped}
        if reason:
            detail["reason"] = reason
        await self.store.log_action(tx, post, alert, action, "system", Source.SYSTEM, detail, now)
        if state == "active":
            await self._add_responder_step(tx, alert["id"], 0, "contact", now)

    async def _add_responder_step(
        self, tx: Tx, alert_id: int, index: int, action: str, due_at: float
    ) -> None:
        await tx.execute(
            "INSERT INTO escalation_steps (alert_id, kind, seq, action, target, due_at, created_at) "
            "VALUES (?, 'responder', ?, ?, '{}', ?, ?) ON CONFLICT (alert_id, kind, seq, action) DO NOTHING",
            alert_id,
            index,
            action,
            due_at,
            time.time(),
        )

    async def _callout(self, tx: Tx, alert_id: int) -> tuple[Row | None, list[Responder]]:
        row = await tx.fetchone("SELECT * FROM escalation_callouts WHERE alert_id = ?", alert_id)
        if row is None:
            return None, []
        return row, [Responder(r["name"], r["phone"]) for r in json.loads(row["responders"])]

    async def _responder_step(
        self, tx: Tx, post: PostCommit, alert: Row, step: Row, now: float
    ) -> tuple[str, str]:
        callout, responders = await self._callout(tx, int(alert["id"]))
        index = int(step["seq"])
        if callout is None or callout["state"] != "active" or int(callout["position"]) != index:
            return "cancelled", "the call-out has moved on"
        if step["action"] == "advance":
            who = responders[index]
            await self.store.log_action(
                tx,
                post,
                alert,
                "responder_no_answer",
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
            return "done", "moved on"
        who = responders[index]
        text = describe(alert["type"], *(await self._resident_bits(tx, alert)))
        await self._add_notification(
            tx,
            alert,
            step["id"],
            "responder",
            index,
            who.name,
            "sms",
            who.phone,
            responder_sms(text, str(alert["id"])),
            now,
        )
        await self._add_notification(
            tx, alert, step["id"], "responder", index, who.name, "call", who.phone, responder_call(text), now
        )
        await self._add_responder_step(
            tx, int(alert["id"]), index, "advance", now + self.settings.responder_wait_s
        )
        await self.store.log_action(
            tx,
            post,
            alert,
            "responder_contacted",
            "system",
            Source.SYSTEM,
            {"index": index + 1, "of": len(responders), "name": who.name, "phone": who.phone},
            now,
        )
        return "done", f"contacting {who.name}"

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
            await tx.execute(
                "UPDATE escalation_callouts SET position = ?, updated_at = ? WHERE alert_id = ?",
                nxt,
                now,
                alert["id"],
            )
            await self._add_responder_step(tx, int(alert["id"]), nxt, "contact", now)
            return
        await tx.execute(
            "UPDATE escalation_callouts SET position = ?, state = 'exhausted', updated_at = ? "
            "WHERE alert_id = ?",
            nxt,
            now,
            alert["id"],
        )
        await self.store.log_action(
            tx,
            post,
            alert,
            "responders_exhausted",
            "system",
            Source.SYSTEM,
            {"contacted": len(responders), "reason": "no responder accepted; supervisors alerted"},
            now,
        )
        data = json.loads(alert["data"] or "{}")
        data["escalation"] = {"highlight": True, "level": "responders_exhausted", "since": iso(now)}
        await tx.execute(
            "UPDATE alerts SET data = ?, updated_at = ? WHERE id = ?", _j(data), now, alert["id"]
        )
        if self.settings.twilio_enabled:
            text = describe(alert["type"], *(await self._resident_bits(tx, alert)))
            for number in self.settings.supervisor_numbers:
                await self._add_notification(
                    tx,
                    alert,
                    None,
                    "supervisor",
                    None,
                    "",
                    "sms",
                    number,
                    f"Telecare: no responder accepted alert {alert['id']} ({text}). Please arrange help.",
                    now,
                )

    # -- replies ---------------------------------------------------------------------------------
    async def on_reply(self, *, from_number: str, reply: str, via: str, ref: str) -> ReplyOutcome:
        """A text (``via`` sms) from ``from_number``: the newest call-out that contacted that number."""

        async def work(tx: Tx, post: PostCommit) -> ReplyOutcome:
            row = await tx.fetchone(
                "SELECT * FROM notifications WHERE to_number = ? AND state <> 'pending' "
                "ORDER BY id DESC LIMIT 1",
                from_number,
            )
            if row is None:
                return ReplyOutcome()
            return await self._answer(tx, post, row, reply, via, ref)

        result: ReplyOutcome = await self.store.transaction(work)
        return result

    async def on_digits(self, *, call_sid: str, reply: str, digits: str) -> ReplyOutcome:
        """Keys pressed on a call we placed."""

        async def work(tx: Tx, post: PostCommit) -> ReplyOutcome:
            row = await tx.fetchone("SELECT * FROM notifications WHERE sid = ?", call_sid)
            if row is None:
                return ReplyOutcome()
            return await self._answer(tx, post, row, reply, "voice", call_sid, digits=digits)

        result: ReplyOutcome = await self.store.transaction(work)
        return result

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
        now = time.time()
        alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", note["alert_id"])
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
        if note["purpose"] != "responder":
            await self.store.log_action(
                tx, post, alert, "supervisor_replied", f"supervisor:{note['to_number']}", source, detail, now
            )
            out.recorded = "supervisor"
            return out
        actor = f"responder:{name}"
        callout, responders = await self._callout(tx, int(alert["id"]))
        index = note["responder_index"]
        if reply == "accept":
            if callout is None or callout["state"] not in ("active", "exhausted"):
                holder = callout["accepted_by"] if callout is not None else None
                await self.store.log_action(
                    tx,
                    post,
                    alert,
                    "responder_replied",
                    actor,
                    source,
                    {**detail, "note": f"already accepted by {holder}"},
                    now,
                )
                out.recorded = "late"
                return out
            await tx.execute(
                "UPDATE escalation_callouts SET state = 'accepted', accepted_by = ?, updated_at = ? "
                "WHERE alert_id = ?",
                name,
                now,
                alert["id"],
            )
            await tx.execute(
                "UPDATE escalation_steps SET state = 'cancelled', done_at = ?, result = ? "
                "WHERE alert_id = ? AND kind = 'responder' AND state = 'pending'",
                now,
                f"accepted by {name}",
                alert["id"],
            )
            await tx.execute(
                "UPDATE notifications SET state = 'cancelled', updated_at = ?, last_error = ? "
                "WHERE alert_id = ? AND purpose = 'responder' AND state = 'pending'",
                now,
                f"accepted by {name}",
                alert["id"],
            )
            await self.store.log_action(tx, post, alert, "responder_accepted", actor, source, detail, now)
            out.recorded = "accepted"
            return out
        if reply == "decline":
            await self.store.log_action(tx, post, alert, "responder_declined", actor, source, detail, now)
            out.recorded = "declined"
            if (
                callout is not None
                and callout["state"] == "active"
                and index is not None
                and int(callout["position"]) == int(index)
            ):
                await tx.execute(
                    "UPDATE escalation_steps SET state = 'cancelled', done_at = ?, result = 'declined' "
                    "WHERE alert_id = ? AND kind = 'responder' AND seq = ? AND state = 'pending'",
                    now,
                    alert["id"],
                    index,
                )
                await tx.execute(
                    "UPDATE notifications SET state = 'cancelled', updated_at = ?, last_error = 'declined' "
                    "WHERE alert_id = ? AND purpose = 'responder' AND responder_index = ? "
                    "AND state = 'pending'",
                    now,
                    alert["id"],
                    index,
                )
                await self._advance(tx, post, alert, callout, responders, int(index), now)
            return out
        await self.store.log_action(
            tx,
            post,
            alert,
            "responder_replied",
            actor,
            source,
            {**detail, "note": "reply not understood"},
            now,
        )
        out.recorded = "unreadable"
        return out

    # -- notifications ---------------------------------------------------------------------------
    async def claim_notifications(self, *, limit: int = 50) -> list[Notification]:
        """Take due notifications under a lease; ones that no longer matter are cancelled and recorded."""

        async def work(tx: Tx, post: PostCommit) -> list[Notification]:
            now = time.time()
            rows = await tx.fetchall(
                "SELECT * FROM notifications WHERE state = 'pending' AND due_at <= ? "
                "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at, id LIMIT ?"
                + self.store.skip_locked(),
                now,
                now,
                limit,
            )
            taken = []
            for r in rows:
                reason = await self._irrelevant(tx, r)
                if reason is not None:
                    await tx.execute(
                        "UPDATE notifications SET state = 'cancelled', last_error = ?, "
                        "updated_at = ? WHERE id = ?",
                        reason,
                        now,
                        r["id"],
                    )
                    continue
                changed = await tx.execute(
                    "UPDATE notifications SET attempts = attempts + 1, lease_until = ?, claimed_by = ?, "
                    "updated_at = ? WHERE id = ? AND state = 'pending' "
                    "AND (lease_until IS NULL OR lease_until <= ?)",
                    now + self.settings.lease_s,
                    self.settings.node,
                    now,
                    r["id"],
                    now,
                )
                if changed != 1:
                    continue
                taken.append(
                    Notification(
                        int(r["id"]),
                        str(r["alert_id"]),
                        r["purpose"],
                        r["channel"],
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
        if note["purpose"] == "supervisor" and note["step_id"] is not None:
            alert = await tx.fetchone(
                "SELECT state, acknowledged_by FROM alerts WHERE id = ?", note["alert_id"]
            )
            if alert is None:
                return "the alert is gone"
            if alert["state"] != "raised":
                return f"the alert was {alert['state']}"
        if note["purpose"] == "responder":
            callout = await tx.fetchone(
                "SELECT state, position FROM escalation_callouts WHERE alert_id = ?", note["alert_id"]
            )
            if callout is None or callout["state"] != "active":
                return "the call-out is over"
        return None

    async def void_reason(self, notification: Notification) -> str | None:
        """Why a claimed notification must not go out now (its alert was acknowledged or resolved,
        the call-out moved on), or None. Asked just before sending; a void one is closed as cancelled.
        """

        async def work(tx: Tx, post: PostCommit) -> str | None:
            row = await tx.fetchone("SELECT * FROM notifications WHERE id = ?", notification.id)
            if row is None:
                return "the notification is gone"
            if row["state"] != "pending":
                return f"the notification is {row['state']} ({row['last_error'] or 'no reason'})"
            reason = await self._irrelevant(tx, row)
            if reason is not None:
                await tx.execute(
                    "UPDATE notifications SET state = 'cancelled', last_error = ?, lease_until = NULL, "
                    "updated_at = ? WHERE id = ? AND state = 'pending'",
                    reason,
                    time.time(),
                    notification.id,
                )
            return reason

        result: str | None = await self.store.transaction(work)
        return result

    async def release(self, notification: Notification) -> None:
        """Give back a claim that was never tried (shutdown before sending)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "UPDATE notifications SET lease_until = NULL, attempts = attempts - 1 "
                "WHERE id = ? AND state = 'pending'",
                notification.id,
            )

        await self.store.transaction(work)

    async def notification_sent(self, notification: Notification, *, sid: str, status: str) -> None:
        async def work(tx: Tx, post: PostCommit) -> None:
            now = time.time()
            await tx.execute(
                "UPDATE notifications SET state = 'sent', sid = ?, status = ?, lease_until = NULL, "
                "last_error = NULL, updated_at = ? WHERE id = ?",
                sid,
                status,
                now,
                notification.id,
            )
            alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", int(notification.alert_id))
            if alert is not None:
                await self.store.log_action(
                    tx,
                    post,
                    alert,
                    "notification_sent",
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
            now = time.time()
            retry_at = None
            if retryable and notification.attempts < self.settings.max_attempts:
                retry_at = now + self._retry_delay(notification.attempts)
                await tx.execute(
                    "UPDATE notifications SET due_at = ?, lease_until = NULL, last_error = ?, "
                    "updated_at = ? WHERE id = ?",
                    retry_at,
                    error,
                    now,
                    notification.id,
                )
            else:
                await tx.execute(
                    "UPDATE notifications SET state = 'failed', lease_until = NULL, last_error = ?, "
                    "updated_at = ? WHERE id = ?",
                    error,
                    now,
                    notification.id,
                )
            alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", int(notification.alert_id))
            if alert is not None:
                detail = self._detail(
                    notification,
                    error=error,
                    retryable=retryable,
                    code=code,
                    retry_at=iso(retry_at),
                    gave_up=retry_at is None,
                )
                await self.store.log_action(
                    tx, post, alert, "notification_failed", "system", Source.SYSTEM, detail, now
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
            row = await tx.fetchone("SELECT * FROM notifications WHERE sid = ?", sid)
            if row is None:
                return None
            now = time.time()
            await tx.execute(
                "UPDATE notifications SET status = ?, updated_at = ? WHERE id = ?", status, now, row["id"]
            )
            alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", row["alert_id"])
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
            if failed:
                relevant = await self._irrelevant(tx, row) is None
                if relevant and int(row["attempts"]) < self.settings.max_attempts:
                    retry_at = now + self._retry_delay(int(row["attempts"]))
                    await tx.execute(
                        "UPDATE notifications SET state = 'pending', due_at = ?, lease_until = NULL, "
                        "last_error = ? WHERE id = ?",
                        retry_at,
                        f"status {status}",
                        row["id"],
                    )
                    detail["retry_at"] = iso(retry_at)
                else:
                    await tx.execute(
                        "UPDATE notifications SET state = 'failed', last_error = ? WHERE id = ?",
                        f"status {status}",
                        row["id"],
                    )
                    detail["gave_up"] = True
            else:
                await tx.execute(
                    "UPDATE notifications SET state = 'delivered' WHERE id = ? AND state = 'sent'", row["id"]
                )
            await self.store.log_action(
                tx,
                post,
                alert,
                "notification_failed" if failed else "notification_status",
                "twilio",
                Source.SMS if row["channel"] == "sms" else Source.VOICE,
                detail,
                now,
            )
            return str(alert["id"])

        result: str | None = await self.store.transaction(work)
        return result

    async def pending_counts(self) -> dict[str, int]:
        """Pending steps and notifications, for metrics."""
        async with self.store.read() as tx:
            steps = await tx.fetchone("SELECT COUNT(*) AS n FROM escalation_steps WHERE state = 'pending'")
            notes = await tx.fetchone("SELECT COUNT(*) AS n FROM notifications WHERE state = 'pending'")
        return {"steps": int(steps["n"]) if steps else 0, "notifications": int(notes["n"]) if notes else 0}

    async def next_due(self) -> float | None:
        """When the earliest pending step or notification falls due."""
        async with self.store.read() as tx:
            a = await tx.fetchone("SELECT MIN(due_at) AS t FROM escalation_steps WHERE state = 'pending'")
            b = await tx.fetchone("SELECT MIN(due_at) AS t FROM notifications WHERE state = 'pending'")
        times = [float(r["t"]) for r in (a, b) if r is not None and r["t"] is not None]
        return min(times) if times else None
