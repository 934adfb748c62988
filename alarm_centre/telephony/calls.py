"""The centre's calls: calls in matched to their alert and offered to operators, calls out from the alert
card, transfers, third parties, hang-ups. Store logic only (no aiohttp, no twilio): the webhooks and the
routes call it, and the runner performs at Twilio what it decides, after commit.

- An **inbound** call is answered at once with TwiML that puts the caller in the call's conference (hold
  music). It is offered to one operator at a time: the operator who holds the alert, else the available
  operators longest idle first (:meth:`Telephony._next_operator`); each offer rings for ``ring_s``. After
  ``overflow_after_s`` with nobody answering, the overflow centre is rung as well; whoever answers first
  takes the call and the other phones stop.
- An **outbound** call (click to dial) rings the operator first; when they answer, the party is dialled
  into the conference. Anyone on the call may add a third party or transfer it to another operator.
- A leg to place, stop or hang up is a row in a state the runner acts on (:mod:`.runner`): side effects
  only after commit, retried under a lease.
- Every offer, answer, transfer and hang-up is written on the alert's timeline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.intake import Intake
from alarm_centre.alerts.lifecycle import AlertState, Source
from alarm_centre.store.alerts import alert_row
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Conflict, InvalidRequest, NotFound, PostCommit, Row, Tx
from alarm_centre.telephony import store as sql
from alarm_centre.telephony import views
from alarm_centre.telephony.batch import TransactionBatcher
from alarm_centre.telephony.matching import alert_for_call, match_caller
from alarm_centre.telephony.parties import Party, Target, party_for
from alarm_centre.telephony.settings import OperatorLine, TelephonySettings
from alarm_centre.telephony.states import (
    LIVE_LEGS,
    RINGING_LEGS,
    STAFF_ROLES,
    STAFF_STAYING,
    CallResult,
    CallState,
    Direction,
    LegRole,
    LegState,
)
from alarm_centre.telephony.twiml import conference_name
from devices.strict_json import column_text

log = logging.getLogger(__name__)

LEG_WORK_BATCH = 50
#: Seconds a party's phone rings before Twilio gives up (operators ring ``ring_s``).
PARTY_RING_S = 45
#: Twilio call statuses: answered, over after an answer, or over without one.
ANSWERED_STATUSES = frozenset({"in-progress", "answered"})
UNANSWERED_STATUSES = frozenset({"busy", "no-answer", "failed", "canceled"})
DECLINED = "declined"


#: Runs first in the transaction of a webhook's work (its claim against replays).
Before = Callable[[Tx], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LegWork:
    """A leg the runner must act on at Twilio now."""

    leg_id: int
    call_id: int
    role: LegRole
    state: LegState
    address: str
    sid: str | None
    attempts: int


class Telephony:
    """Calls on an :class:`AlertStore`; ``clock`` is wall-clock seconds (tests move their own)."""

    def __init__(
        self,
        store: AlertStore,
        intake: Intake,
        settings: TelephonySettings,
        *,
        clock: Callable[[], float] = time.time,
        batcher: TransactionBatcher | None = None,
    ) -> None:
        self.store = store
        self.intake = intake
        self.settings = settings
        self.clock = clock
        #: Write transactions go through the batcher when there is one (group commit: see batch.py).
        self.transaction = batcher.run if batcher is not None else store.transaction

    # -- the timeline --------------------------------------------------------------------------------
    async def _log(
        self,
        tx: Tx,
        post: PostCommit,
        call: Row,
        action: AuditAction,
        actor: str,
        source: str,
        detail: dict[str, Any],
        now: float,
    ) -> None:
        alert = await alert_row(tx, int(call["alert_id"]))
        if alert is not None:
            detail = {"call_id": str(call["id"]), "direction": call["direction"], **detail}
            await self.store.alerts.log_action(tx, post, alert, action, actor, source, detail, now)

    # -- calls in ------------------------------------------------------------------------------------
    async def take_inbound(
        self, *, call_sid: str, caller: str, called: str, before: Before | None = None
    ) -> Row:
        """A call to one of the centre's numbers: matched to its alert (raising one if need be), queued,
        and offered to the first operator. ``before`` runs first in the same transaction (the webhook's
        claim against replays). Returns the call."""
        now = self.clock()
        match = await match_caller(self.store, caller)
        owner = await alert_for_call(
            self.store, self.intake, match, call_sid=call_sid, caller=caller, called=called, received_at=now
        )

        async def work(tx: Tx, post: PostCommit) -> Row:
            if before is not None:
                await before(tx)
            again = await sql.call_by_sid(tx, call_sid)
            if again is not None:
                return again
            call = await sql.insert_call(
                tx,
                alert_id=owner.alert_id,
                direction=Direction.INBOUND,
                state=CallState.WAITING,
                conference=f"pending-{call_sid}",
                now=now,
                caller=caller,
                called=called,
                call_sid=call_sid,
                matched=match.how.value,
                signal_at=owner.signal_at,
                overflow_at=now + self.settings.overflow_after_s,
            )
            name = conference_name(int(call["id"]))
            await sql.set_call(tx, int(call["id"]), now, conference=name)
            await sql.add_leg(
                tx,
                call_id=int(call["id"]),
                role=LegRole.CALLER,
                party=caller or "withheld",
                address=caller,
                state=LegState.ANSWERED,
                now=now,
                sid=call_sid,
            )
            detail: dict[str, Any] = {
                "caller": caller or "withheld",
                "to": called,
                "matched": match.how.value,
            }
            if match.device_id:
                detail["device_id"] = match.device_id
            if match.resident_id:
                detail["resident_id"] = match.resident_id
            await self._log(
                tx,
                post,
                call,
                AuditAction.CALL_IN,
                f"caller:{caller or 'withheld'}",
                Source.VOICE,
                detail,
                now,
            )
            call = await self._call(tx, int(call["id"]))
            await self._route(tx, post, call, now, reason="the call came in")
            return call

        result: Row = await self.transaction(work)
        return result

    async def _call(self, tx: Tx, call_id: int) -> Row:
        call = await sql.call(tx, call_id)
        if call is None:
            raise NotFound(f"no call {call_id}")
        return call

    # -- routing -------------------------------------------------------------------------------------
    async def _route(self, tx: Tx, post: PostCommit, call: Row, now: float, *, reason: str) -> bool:
        """Offer a waiting call to the next operator unless an offer is already out; True if offered."""
        if call["state"] not in (CallState.WAITING, CallState.OVERFLOW):
            return False
        legs = await sql.legs_of(tx, int(call["id"]))
        if any(
            leg["role"] == LegRole.OPERATOR and leg["state"] in RINGING_LEGS and not leg["transfer_from"]
            for leg in legs
        ):
            return False
        line = await self._next_operator(tx, call, legs)
        if line is None:
            await self._log(
                tx,
                post,
                call,
                AuditAction.CALL_QUEUED,
                "system",
                Source.SYSTEM,
                {
                    "reason": f"{reason}; no operator is free to take it",
                    "waiting_s": round(now - call["started_at"], 1),
                },
                now,
            )
            return False
        await self._offer(tx, post, call, line, now)
        return True

    async def _offer(
        self,
        tx: Tx,
        post: PostCommit,
        call: Row,
        line: OperatorLine,
        now: float,
        *,
        transfer_from: str | None = None,
    ) -> int:
        leg_id = await sql.add_leg(
            tx,
            call_id=int(call["id"]),
            role=LegRole.OPERATOR,
            party=line.name,
            address=line.address,
            state=LegState.QUEUED,
            now=now,
            due_at=now + self.settings.ring_s,
            transfer_from=transfer_from,
        )
        detail: dict[str, Any] = {"operator": line.name, "via": line.via, "ring_s": self.settings.ring_s}
        if transfer_from:
            detail["transfer_from"] = transfer_from
        await self._log(tx, post, call, AuditAction.CALL_OFFERED, "system", Source.SYSTEM, detail, now)
        return leg_id

    async def _next_operator(self, tx: Tx, call: Row, legs: Sequence[Row]) -> OperatorLine | None:
        """The operator holding the alert, if free; else the available operators, longest idle first,
        those not yet offered this call before those who were (never one who declined it, nor for
        ``ring_s`` one whose phone was busy or failed)."""
        engaged = await sql.engaged_operators(tx)
        now = self.clock()
        offered = [str(leg["party"]) for leg in legs if leg["role"] == LegRole.OPERATOR]
        declined = {
            str(leg["party"]) for leg in legs if leg["role"] == LegRole.OPERATOR and leg["result"] == DECLINED
        }
        # A phone that was busy or failed at once rings again only after ring_s: no tight loop at Twilio.
        resting = {
            str(leg["party"])
            for leg in legs
            if leg["role"] == LegRole.OPERATOR
            and leg["ended_at"] is not None
            and now - float(leg["ended_at"]) < self.settings.ring_s
            and float(leg["ended_at"]) - float(leg["offered_at"]) < self.settings.ring_s
        }
        declined |= resting
        alert = await alert_row(tx, int(call["alert_id"]))
        holder = (
            alert["acknowledged_by"]
            if alert is not None and alert["state"] == AlertState.ACKNOWLEDGED
            else None
        )
        if holder and holder not in engaged and holder not in declined and holder not in offered:
            line = self.settings.line(str(holder))
            if line is not None:
                return line
        free = [
            str(p["name"])
            for p in await sql.presence(tx)  # ordered by idle_since: longest idle first
            if p["available"] and str(p["name"]) not in engaged and str(p["name"]) not in declined
        ]
        free = [name for name in free if self.settings.line(name) is not None]
        if not free:
            return None
        fresh = [name for name in free if name not in offered]
        if fresh:
            return self.settings.line(fresh[0])
        # Everyone free has had it: the one whose last offer ended longest ago.
        last_offer = {name: index for index, name in enumerate(offered)}
        return self.settings.line(min(free, key=lambda name: last_offer.get(name, -1)))

    async def route_waiting(self) -> int:
        """Offer every waiting call that has no offer out (an operator came free); returns how many.

        A read first: the loop asks on every pass, and a write transaction that finds nothing to do
        would still queue behind the call webhooks for the store's one writer."""
        async with self.store.read() as tx:
            if not await sql.waiting_calls(tx):
                return 0
            engaged = await sql.engaged_operators(tx)
            available = {str(p["name"]) for p in await sql.presence(tx) if p["available"]}
        if not available - engaged:
            return 0

        async def work(tx: Tx, post: PostCommit) -> int:
            now = self.clock()
            offered = 0
            for call in await sql.waiting_calls(tx):
                legs = await sql.legs_of(tx, int(call["id"]))
                if any(leg["role"] == LegRole.OPERATOR and leg["state"] in RINGING_LEGS for leg in legs):
                    continue
                line = await self._next_operator(tx, call, legs)
                if line is not None:
                    await self._offer(tx, post, call, line, now)
                    offered += 1
            return offered

        result: int = await self.transaction(work)
        return result

    # -- Twilio's reports ----------------------------------------------------------------------------
    async def on_leg_status(
        self,
        *,
        leg_id: int | None,
        sid: str,
        status: str,
        error_code: int | None,
        before: Before | None = None,
    ) -> None:
        """A call-status callback of a leg we placed (``leg`` in the URL names it before its sid is known)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            if before is not None:
                await before(tx)
            now = self.clock()
            leg = await sql.leg(tx, leg_id) if leg_id is not None else None
            if leg is None or (leg["sid"] and leg["sid"] != sid):
                leg = await sql.leg_by_sid(tx, sid)
            if leg is None:
                return
            if not leg["sid"]:
                await sql.set_leg(tx, int(leg["id"]), now, sid=sid)
            if status in ANSWERED_STATUSES:
                await self._answered(tx, post, leg, now)
            elif status == "completed":
                if leg["state"] in LIVE_LEGS:
                    await self._left(tx, post, leg, now)
                else:
                    await self._unanswered(tx, post, leg, "no answer", now)
            elif status in UNANSWERED_STATUSES:
                why = status if error_code is None else f"{status} (Twilio error {error_code})"
                await self._unanswered(tx, post, leg, why, now)
            elif status in ("ringing", "initiated", "queued"):
                await sql.move_leg(tx, int(leg["id"]), LegState.RINGING, now, sid=sid)

        await self.transaction(work)

    async def on_conference(
        self,
        *,
        call_id: int,
        event: str,
        conference_sid: str,
        call_sid: str,
        label: str,
        before: Before | None = None,
    ) -> None:
        """A conference event: the conference started or ended, a participant joined or left."""

        async def work(tx: Tx, post: PostCommit) -> None:
            if before is not None:
                await before(tx)
            now = self.clock()
            call = await sql.call(tx, call_id)
            if call is None:
                return
            if conference_sid and not call["conference_sid"]:
                await sql.set_call(tx, call_id, now, conference_sid=conference_sid)
            if event == "conference-end":
                await self._end(tx, post, call, now, why="the conference ended")
                return
            if event not in ("participant-join", "participant-leave"):
                return
            leg = await self._leg_of_event(tx, call_id, call_sid, label)
            if leg is None:
                return
            if event == "participant-join" and leg["role"] != LegRole.CALLER:
                await self._answered(tx, post, leg, now)
            elif event == "participant-leave" and leg["state"] in LIVE_LEGS:
                await self._left(tx, post, leg, now)

        await self.transaction(work)

    async def _leg_of_event(self, tx: Tx, call_id: int, call_sid: str, label: str) -> Row | None:
        leg = await sql.leg_by_sid(tx, call_sid) if call_sid else None
        if leg is None and label.startswith("leg-") and label[4:].isdigit():
            leg = await sql.leg(tx, int(label[4:]))
            if leg is not None and call_sid and not leg["sid"]:
                await sql.set_leg(tx, int(leg["id"]), self.clock(), sid=call_sid)
        if leg is None or int(leg["call_id"]) != call_id:
            return None
        return leg

    async def _answered(self, tx: Tx, post: PostCommit, leg: Row, now: float) -> None:
        if not await sql.move_leg(tx, int(leg["id"]), LegState.ANSWERED, now, answered_at=now, due_at=None):
            return  # already answered (the status callback and the conference both say so)
        call = await self._call(tx, int(leg["call_id"]))
        role = LegRole(leg["role"])
        party = str(leg["party"])
        if role is LegRole.PARTY:
            if call["speech_at"] is None:
                await sql.set_call(tx, int(call["id"]), now, speech_at=now)
            await self._log(
                tx,
                post,
                call,
                AuditAction.CALL_PARTY_ANSWERED,
                f"party:{party}",
                Source.VOICE,
                {"party": party, "emergency": bool(leg["emergency"])},
                now,
            )
            return
        taker = party if role is LegRole.OPERATOR else f"overflow:{leg['address']}"
        if call["state"] in (CallState.WAITING, CallState.OVERFLOW):
            await sql.move_call(
                tx, int(call["id"]), CallState.CONNECTED, now, answered_at=now, speech_at=now, operator=taker
            )
            await self._stop_ringing(tx, call, now, reason=f"answered by {taker}", but=int(leg["id"]))
            detail: dict[str, Any] = {
                "operator": taker,
                "offered_to_answered_s": round(now - float(call["started_at"]), 1),
            }
            if call["signal_at"] is not None:
                detail["signal_to_speech_s"] = round(now - float(call["signal_at"]), 1)
            if role is LegRole.OVERFLOW:
                detail["overflow"] = True
            await self._log(tx, post, call, AuditAction.CALL_ANSWERED, taker, Source.VOICE, detail, now)
            return
        if call["state"] == CallState.DIALING:
            await sql.move_call(
                tx, int(call["id"]), CallState.CONNECTED, now, answered_at=now, operator=taker
            )
            await self._log(
                tx, post, call, AuditAction.CALL_ANSWERED, taker, Source.VOICE, {"operator": taker}, now
            )
            pending = json.loads(call["pending"] or "null")
            if isinstance(pending, dict):
                await sql.set_call(tx, int(call["id"]), now, pending=None)
                dialled = Party(str(pending["label"]), str(pending["address"]), bool(pending["emergency"]))
                await self._add_party_leg(tx, post, call, dialled, taker, now)
            return
        if call["state"] == CallState.CONNECTED and (
            leg["transfer_from"] or not await self._staff_on(tx, int(call["id"]), but=int(leg["id"]))
        ):
            old = str(leg["transfer_from"] or call["operator"] or "")
            await sql.set_call(tx, int(call["id"]), now, operator=taker)
            for other in await sql.legs_of(tx, int(call["id"])):
                if (
                    other["role"] == LegRole.OPERATOR
                    and other["party"] == old
                    and other["state"] == LegState.ANSWERED
                ):
                    await sql.move_leg(
                        tx, int(other["id"]), LegState.HANGING_UP, now, result=f"transferred to {taker}"
                    )
            await self._log(
                tx,
                post,
                call,
                AuditAction.CALL_TRANSFERRED,
                taker,
                Source.VOICE,
                {"from": old, "to": taker},
                now,
            )
            return
        if call["state"] == CallState.ENDED:  # answered after the caller left: nobody is there
            await sql.move_leg(tx, int(leg["id"]), LegState.HANGING_UP, now, result="the call had ended")
            return
        # A second operator picked up an offer that lost the race to another: hang it up.
        await sql.move_leg(tx, int(leg["id"]), LegState.HANGING_UP, now, result="answered elsewhere")

    async def _unanswered(self, tx: Tx, post: PostCommit, leg: Row, why: str, now: float) -> None:
        reason = str(leg["result"] or why)
        if not await sql.move_leg(
            tx, int(leg["id"]), LegState.UNANSWERED, now, ended_at=now, result=reason, due_at=None
        ):
            return
        call = await self._call(tx, int(leg["call_id"]))
        role = LegRole(leg["role"])
        party = str(leg["party"])
        if role is LegRole.PARTY:
            await self._log(
                tx,
                post,
                call,
                AuditAction.CALL_PARTY_UNANSWERED,
                "system",
                Source.SYSTEM,
                {"party": party, "result": reason},
                now,
            )
            return
        if reason.startswith("answered by") or call["state"] == CallState.ENDED:
            return  # stopped because someone else took it, or the caller went: nothing to say or do
        detail: dict[str, Any] = {
            "operator": party if role is LegRole.OPERATOR else "overflow",
            "result": reason,
        }
        if leg["transfer_from"]:
            detail["transfer_from"] = leg["transfer_from"]
        await self._log(
            tx, post, call, AuditAction.CALL_OFFER_UNANSWERED, "system", Source.SYSTEM, detail, now
        )
        if call["state"] == CallState.DIALING:
            await self._finish(
                tx, post, call, now, CallResult.FAILED if "failed" in reason else CallResult.CANCELLED
            )
            return
        if role is LegRole.OVERFLOW and call["state"] == CallState.OVERFLOW:
            await self._ring_overflow(tx, post, call, now, again=True)
            return
        if not leg["transfer_from"]:
            await self._route(tx, post, call, now, reason=f"{party} did not answer")
        elif call["state"] == CallState.CONNECTED and not await self._staff_on(tx, int(call["id"])):
            # The transfer went unanswered and the operator who made it has left: find someone else.
            line = await self._next_operator(tx, call, await sql.legs_of(tx, int(call["id"])))
            if line is not None:
                await self._offer(tx, post, call, line, now, transfer_from=str(leg["transfer_from"]))
            else:
                await self._end(
                    tx, post, call, now, why="the transfer was not answered and nobody else is free"
                )

    async def _left(self, tx: Tx, post: PostCommit, leg: Row, now: float) -> None:
        """A connected party hung up (or we hung them up). The call ends with its caller, or with the last
        of the centre's people on it."""
        if not await sql.move_leg(tx, int(leg["id"]), LegState.ENDED, now, ended_at=now):
            return
        call = await self._call(tx, int(leg["call_id"]))
        role = LegRole(leg["role"])
        await self._log(
            tx,
            post,
            call,
            AuditAction.CALL_LEFT,
            f"{role.value}:{leg['party']}",
            Source.VOICE,
            {
                "party": str(leg["party"]),
                "role": role.value,
                **({"note": leg["result"]} if leg["result"] else {}),
            },
            now,
        )
        if call["state"] == CallState.ENDED:
            return
        if role is LegRole.CALLER:
            await self._end(tx, post, call, now, why="the caller hung up")
        elif call["state"] == CallState.CONNECTED and not await self._staff_on(tx, int(call["id"])):
            await self._end(tx, post, call, now, why=f"{leg['party']} hung up")

    @staticmethod
    async def _staff_on(tx: Tx, call_id: int, *, but: int | None = None) -> bool:
        """Whether one of the centre's people is on the call, or still ringing for it."""
        return any(
            leg["role"] in STAFF_ROLES and leg["state"] in STAFF_STAYING and int(leg["id"]) != but
            for leg in await sql.legs_of(tx, call_id)
        )

    async def _end(self, tx: Tx, post: PostCommit, call: Row, now: float, *, why: str) -> None:
        """End the call: stop every phone still ringing, hang up everyone still on it."""
        if call["state"] == CallState.ENDED:
            return
        await self._stop_ringing(tx, call, now, reason="the call ended")
        for leg in await sql.legs_of(tx, int(call["id"])):
            if leg["state"] == LegState.ANSWERED:
                await sql.move_leg(tx, int(leg["id"]), LegState.HANGING_UP, now, result=why)
        if call["answered_at"] is not None:
            result = CallResult.ANSWERED
        elif call["direction"] == Direction.INBOUND:
            result = CallResult.ABANDONED
        else:
            result = CallResult.CANCELLED
        await self._finish(tx, post, call, now, result, why=why)

    async def _finish(
        self, tx: Tx, post: PostCommit, call: Row, now: float, result: CallResult, *, why: str = ""
    ) -> None:
        if not await sql.move_call(tx, int(call["id"]), CallState.ENDED, now, ended_at=now, result=result):
            return
        legs = await sql.legs_of(tx, int(call["id"]))
        staff = {
            str(leg["party"])
            for leg in legs
            if leg["role"] == LegRole.OPERATOR and leg["answered_at"] is not None
        }
        await sql.idle_from(tx, staff, now)
        detail: dict[str, Any] = {"result": result.value, "operator": call["operator"]}
        if why:
            detail["reason"] = why
        if call["answered_at"] is not None:
            detail["talk_s"] = round(now - float(call["answered_at"]), 1)
        else:
            detail["waited_s"] = round(now - float(call["started_at"]), 1)
        await self._log(tx, post, call, AuditAction.CALL_ENDED, "system", Source.SYSTEM, detail, now)

    async def _stop_ringing(
        self, tx: Tx, call: Row, now: float, *, reason: str, but: int | None = None
    ) -> None:
        for leg in await sql.legs_of(tx, int(call["id"])):
            if int(leg["id"]) == but or leg["state"] not in (LegState.QUEUED, LegState.RINGING):
                continue
            if (
                leg["state"] == LegState.QUEUED
                and not leg["sid"]
                and (leg["lease_until"] is None or leg["lease_until"] <= now)
            ):
                await sql.move_leg(tx, int(leg["id"]), LegState.UNANSWERED, now, ended_at=now, result=reason)
            else:
                await sql.move_leg(tx, int(leg["id"]), LegState.CANCELLING, now, result=reason)

    # -- deadlines -----------------------------------------------------------------------------------
    async def time_out_offers(self, *, limit: int = LEG_WORK_BATCH) -> int:
        """Offers that rang for ``ring_s`` unanswered are stopped (and the call offered on)."""
        async with self.store.read() as tx:
            if not await sql.rung_out(tx, self.clock(), 1, ""):
                return 0

        async def work(tx: Tx, post: PostCommit) -> int:
            now = self.clock()
            rows = await sql.rung_out(tx, now, limit, self.store.skip_locked())
            for leg in rows:
                await sql.move_leg(
                    tx,
                    int(leg["id"]),
                    LegState.CANCELLING,
                    now,
                    result=f"no answer in {self.settings.ring_s:g} s",
                )
            return len(rows)

        result: int = await self.transaction(work)
        return result

    async def overflow_due(self, *, limit: int = LEG_WORK_BATCH) -> int:
        """Calls nobody answered within ``overflow_after_s`` ring the overflow centre too."""
        async with self.store.read() as tx:
            if not await sql.due_overflows(tx, self.clock(), 1, ""):
                return 0

        async def work(tx: Tx, post: PostCommit) -> int:
            now = self.clock()
            rows = await sql.due_overflows(tx, now, limit, self.store.skip_locked())
            for call in rows:
                if not self.settings.overflow_number:
                    await sql.set_call(tx, int(call["id"]), now, overflow_at=None)
                    await self._log(
                        tx,
                        post,
                        call,
                        AuditAction.CALL_QUEUED,
                        "system",
                        Source.SYSTEM,
                        {
                            "reason": f"nobody answered in {self.settings.overflow_after_s:g} s and no "
                            "overflow number is configured; still ringing here",
                        },
                        now,
                    )
                    continue
                await sql.move_call(tx, int(call["id"]), CallState.OVERFLOW, now, overflow_at=None)
                await self._ring_overflow(tx, post, call, now, again=False)
            return len(rows)

        result: int = await self.transaction(work)
        return result

    async def _ring_overflow(self, tx: Tx, post: PostCommit, call: Row, now: float, *, again: bool) -> None:
        number = self.settings.overflow_number
        await sql.add_leg(
            tx,
            call_id=int(call["id"]),
            role=LegRole.OVERFLOW,
            party="overflow",
            address=number,
            state=LegState.QUEUED,
            now=now,
        )
        await self._log(
            tx,
            post,
            call,
            AuditAction.CALL_OVERFLOWED,
            "system",
            Source.SYSTEM,
            {"to": number, "waited_s": round(now - float(call["started_at"]), 1), "again": again},
            now,
        )

    # -- the runner's side of legs -------------------------------------------------------------------
    async def claim_leg_work(self, *, limit: int = LEG_WORK_BATCH) -> list[LegWork]:
        """Legs to place, stop or hang up at Twilio, each leased to this node for ``lease_s``."""
        async with self.store.read() as tx:
            if not await sql.legs_to_work(tx, self.clock(), 1, ""):
                return []

        async def work(tx: Tx, post: PostCommit) -> list[LegWork]:
            now = self.clock()
            taken: list[LegWork] = []
            for leg in await sql.legs_to_work(tx, now, limit, self.store.skip_locked()):
                if leg["state"] == LegState.CANCELLING and not leg["sid"]:
                    await self._unanswered(tx, post, leg, str(leg["result"] or "stopped"), now)
                    continue
                if leg["state"] == LegState.HANGING_UP and not leg["sid"]:
                    await self._left(tx, post, leg, now)
                    continue
                if await sql.lease_leg(tx, int(leg["id"]), now + self.settings.lease_s, now) != 1:
                    continue
                taken.append(
                    LegWork(
                        int(leg["id"]),
                        int(leg["call_id"]),
                        LegRole(leg["role"]),
                        LegState(leg["state"]),
                        str(leg["address"]),
                        leg["sid"],
                        int(leg["attempts"]) + 1,
                    )
                )
            return taken

        result: list[LegWork] = await self.transaction(work)
        return result

    async def leg_placed(self, leg_id: int, sid: str) -> LegState:
        """Twilio took the leg: it rings. Returns where the leg is now (``cancelling`` if it was stopped
        while being placed: the runner then stops it at once)."""

        async def work(tx: Tx, post: PostCommit) -> LegState:
            now = self.clock()
            await sql.set_leg(tx, leg_id, now, sid=sid, lease_until=None)
            await sql.move_leg(tx, leg_id, LegState.RINGING, now)
            leg = await sql.leg(tx, leg_id)
            return LegState(leg["state"]) if leg is not None else LegState.UNANSWERED

        result: LegState = await self.transaction(work)
        return result

    async def leg_failed(self, leg_id: int, *, error: str, retry_in: float | None) -> None:
        """Twilio would not take a REST call about the leg: try again later, or give the leg up."""

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            leg = await sql.leg(tx, leg_id)
            if leg is None:
                return
            if retry_in is not None:
                await sql.release_leg(tx, leg_id, now + retry_in)
                return
            await sql.release_leg(tx, leg_id, None)
            call = await self._call(tx, int(leg["call_id"]))
            if leg["state"] == LegState.QUEUED:
                await self._log(
                    tx,
                    post,
                    call,
                    AuditAction.CALL_FAILED,
                    "twilio",
                    Source.SYSTEM,
                    {"party": str(leg["party"]), "role": leg["role"], "error": error},
                    now,
                )
                await self._unanswered(tx, post, leg, f"failed: {error}", now)
            elif leg["state"] == LegState.CANCELLING:
                await self._unanswered(tx, post, leg, str(leg["result"] or "stopped"), now)
            elif leg["state"] == LegState.HANGING_UP:
                await self._left(tx, post, leg, now)

        await self.transaction(work)

    async def leg_stopped(self, leg_id: int) -> None:
        """Twilio stopped the leg's phone ringing, or hung it up, as asked."""

        async def work(tx: Tx, post: PostCommit) -> None:
            now = self.clock()
            leg = await sql.leg(tx, leg_id)
            if leg is None:
                return
            await sql.release_leg(tx, leg_id, None)
            if leg["state"] == LegState.CANCELLING:
                await self._unanswered(tx, post, leg, str(leg["result"] or "stopped"), now)
            elif leg["state"] == LegState.HANGING_UP:
                await self._left(tx, post, leg, now)

        await self.transaction(work)

    # -- operators' actions --------------------------------------------------------------------------
    def _line_of(self, user: str) -> OperatorLine:
        line = self.settings.line(user)
        if line is None:
            raise InvalidRequest(
                f"{user} takes no calls: an admin adds them to telephony.operators (a phone or the browser)"
            )
        return line

    async def dial(self, alert_id: int, *, user: str, target: Target, source: str) -> Row:
        """Click to dial: ring the operator, then (when they answer) the party, in one conference."""
        line = self._line_of(user)

        async def work(tx: Tx, post: PostCommit) -> Row:
            now = self.clock()
            alert = await alert_row(tx, alert_id)
            if alert is None:
                raise NotFound(f"no alert {alert_id}")
            party = await party_for(tx, alert, target, self.settings)
            if user in await sql.engaged_operators(tx):
                raise Conflict(f"{user} is already on a call (or being offered one)")
            call = await sql.insert_call(
                tx,
                alert_id=alert_id,
                direction=Direction.OUTBOUND,
                state=CallState.DIALING,
                conference=f"pending-{user}-{now}",
                now=now,
                called=party.address,
                started_by=user,
                signal_at=float(alert["raised_at"]),
            )
            call_id = int(call["id"])
            pending = {"label": party.label, "address": party.address, "emergency": party.emergency}
            await sql.set_call(
                tx,
                call_id,
                now,
                conference=conference_name(call_id),
                pending=column_text(pending),
                emergency=int(party.emergency),
            )
            await sql.add_leg(
                tx,
                call_id=call_id,
                role=LegRole.OPERATOR,
                party=user,
                address=line.address,
                state=LegState.QUEUED,
                now=now,
                due_at=now + self.settings.ring_s,
            )
            call = await self._call(tx, call_id)
            await self._log(
                tx,
                post,
                call,
                AuditAction.CALL_DIALLED,
                user,
                source,
                {"to": party.label, "number": party.address, "emergency": party.emergency, "via": line.via},
                now,
            )
            return call

        result: Row = await self.transaction(work)
        return result

    async def _add_party_leg(
        self, tx: Tx, post: PostCommit, call: Row, party: Party, by: str, now: float
    ) -> None:
        await sql.add_leg(
            tx,
            call_id=int(call["id"]),
            role=LegRole.PARTY,
            party=party.label,
            address=party.address,
            state=LegState.QUEUED,
            now=now,
            emergency=party.emergency,
        )
        if party.emergency and not call["emergency"]:
            await sql.set_call(tx, int(call["id"]), now, emergency=1)
        await self._log(
            tx,
            post,
            call,
            AuditAction.CALL_PARTY_ADDED,
            by,
            Source.VOICE,
            {"party": party.label, "number": party.address, "emergency": party.emergency},
            now,
        )

    async def _my_live_call(self, tx: Tx, call_id: int, user: str) -> tuple[Row, list[Row]]:
        call = await self._call(tx, call_id)
        legs = await sql.legs_of(tx, call_id)
        if call["state"] != CallState.CONNECTED:
            raise Conflict(f"call {call_id} is {call['state']}, not connected")
        if not any(
            leg["role"] == LegRole.OPERATOR and leg["party"] == user and leg["state"] == LegState.ANSWERED
            for leg in legs
        ):
            raise Conflict(f"{user} is not on call {call_id}")
        return call, legs

    async def add_party(self, call_id: int, *, user: str, target: Target, source: str) -> Row:
        """A third party into a connected call ("I have the ambulance on the line")."""

        async def work(tx: Tx, post: PostCommit) -> Row:
            now = self.clock()
            call, _ = await self._my_live_call(tx, call_id, user)
            alert = await alert_row(tx, int(call["alert_id"]))
            if alert is None:
                raise NotFound(f"no alert for call {call_id}")
            party = await party_for(tx, alert, target, self.settings)
            await self._add_party_leg(tx, post, call, party, user, now)
            return await self._call(tx, call_id)

        result: Row = await self.transaction(work)
        return result

    async def transfer(self, call_id: int, *, user: str, to: str, source: str) -> Row:
        """Offer the call to another operator; when they answer, ``user`` is taken off it."""
        line = self.settings.line(to)
        if line is None:
            raise InvalidRequest(f"{to[:64]} takes no calls (not in telephony.operators)")
        if to == user:
            raise InvalidRequest("transfer the call to someone else")

        async def work(tx: Tx, post: PostCommit) -> Row:
            now = self.clock()
            call, _ = await self._my_live_call(tx, call_id, user)
            if to in await sql.engaged_operators(tx):
                raise Conflict(f"{to} is on another call")
            await self._offer(tx, post, call, line, now, transfer_from=user)
            return await self._call(tx, call_id)

        result: Row = await self.transaction(work)
        return result

    async def hang_up(self, call_id: int, *, user: str, source: str) -> Row:
        """``user`` leaves the call (the call ends if nobody of ours is left on it), or stops their own
        phone ringing for a call they dialled."""

        async def work(tx: Tx, post: PostCommit) -> Row:
            now = self.clock()
            call = await self._call(tx, call_id)
            mine = [
                leg
                for leg in await sql.legs_of(tx, call_id)
                if leg["role"] == LegRole.OPERATOR and leg["party"] == user
            ]
            live = [leg for leg in mine if leg["state"] == LegState.ANSWERED]
            ringing = [leg for leg in mine if leg["state"] in (LegState.QUEUED, LegState.RINGING)]
            if live:
                for leg in live:
                    await sql.move_leg(tx, int(leg["id"]), LegState.HANGING_UP, now, result=f"{user} hung up")
            elif ringing and call["state"] == CallState.DIALING:
                await self._stop_ringing(tx, call, now, reason=f"{user} hung up")
                await self._finish(tx, post, call, now, CallResult.CANCELLED, why=f"{user} hung up")
            else:
                raise Conflict(f"{user} is not on call {call_id}")
            return await self._call(tx, call_id)

        result: Row = await self.transaction(work)
        return result

    async def decline(self, call_id: int, *, user: str, source: str) -> Row:
        """``user`` declines the call ringing for them: it is offered to the next operator at once."""

        async def work(tx: Tx, post: PostCommit) -> Row:
            now = self.clock()
            call = await self._call(tx, call_id)
            offers = [
                leg
                for leg in await sql.legs_of(tx, call_id)
                if leg["role"] == LegRole.OPERATOR
                and leg["party"] == user
                and leg["state"] in (LegState.QUEUED, LegState.RINGING)
            ]
            if not offers or call["state"] == CallState.DIALING:
                raise Conflict(f"no call {call_id} is ringing for {user}")
            for leg in offers:
                if (
                    leg["state"] == LegState.QUEUED
                    and not leg["sid"]
                    and (leg["lease_until"] is None or leg["lease_until"] <= now)
                ):
                    await sql.set_leg(tx, int(leg["id"]), now, result=DECLINED)
                    fresh = await sql.leg(tx, int(leg["id"]))
                    assert fresh is not None
                    await self._unanswered(tx, post, fresh, DECLINED, now)
                else:
                    await sql.move_leg(tx, int(leg["id"]), LegState.CANCELLING, now, result=DECLINED)
            return await self._call(tx, call_id)

        result: Row = await self.transaction(work)
        return result

    async def set_available(self, user: str, available: bool) -> dict[str, Any]:
        """Take calls or not; an operator who becomes available may be offered a waiting call at once."""
        self._line_of(user)

        async def work(tx: Tx, post: PostCommit) -> None:
            await sql.set_presence(tx, user, available, self.clock())

        await self.transaction(work)
        if available:
            await self.route_waiting()
        return await self.presence_of(user)

    async def presence_of(self, user: str) -> dict[str, Any]:
        return await views.presence_of(self.store, self.settings, user)

    async def presence_list(self) -> list[dict[str, Any]]:
        return await views.presence_list(self.store, self.settings)

    # -- views ---------------------------------------------------------------------------------------
    async def view(self, call_id: int) -> dict[str, Any]:
        async with self.store.read() as tx:
            call = await self._call(tx, call_id)
            return (await views.call_views(tx, [call]))[0]

    async def live_views(self, alert_id: int | None = None) -> list[dict[str, Any]]:
        """Calls not ended (or every call of one alert)."""
        async with self.store.read() as tx:
            calls = (
                await sql.calls_of_alert(tx, alert_id) if alert_id is not None else await sql.live_calls(tx)
            )
            return await views.call_views(tx, calls)
