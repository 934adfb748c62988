"""The phone network behind the local Twilio stand-in: calls that ring and are answered, TwiML that is
followed (``<Say>``, ``<Pause>``, ``<Dial><Conference>``, ``<Hangup>``), conferences with their events,
and recordings with their callbacks, each webhook signed as Twilio signs it.

It follows Twilio's documented behaviour closely enough for the bridge to be driven end to end:

- A call **in** (:meth:`VoiceNetwork.dial_in`) posts the number's voice URL (``Direction=inbound``,
  ``CallStatus=ringing``) and follows the TwiML it gets back.
- A call **out** (REST ``Calls.json``) rings until the test answers or refuses it; its
  ``StatusCallback`` hears the events it asked for (``answered``, ``completed``: the final status, be it
  ``completed``, ``busy``, ``no-answer``, ``canceled`` or ``failed``).
- A **conference** starts when a participant with ``startConferenceOnEnter`` joins, and ends when one
  with ``endConferenceOnExit`` leaves or the last one does; then everyone still in it is hung up (the
  bridge's TwiML has nothing after ``<Dial>``). Its ``statusCallback`` hears ``conference-start``,
  ``participant-join``, ``participant-leave`` and ``conference-end`` as asked, with the participant's
  label; a recorded conference posts its ``recordingStatusCallback`` when it ends.
- REST updates: ``Status=canceled`` stops a call ringing, ``Status=completed`` hangs one up; recordings
  can be fetched (``.json``, ``.mp3``, ``.wav``) and deleted.

Webhooks caused by a REST request are sent after its answer, in the background (as Twilio does); those
caused by a test's own action (answer, hang up, dial in) are awaited by it, so a test knows the bridge
has heard them when the call returns. :meth:`VoiceNetwork.settled` waits for the background ones.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

log = logging.getLogger(__name__)

RINGING = frozenset({"queued", "initiated", "ringing"})
FINAL = frozenset({"completed", "busy", "no-answer", "canceled", "failed"})
#: A tiny MP3 (an ID3 header and one silent MPEG-1 Layer III frame) standing in for a recording's audio.
SILENT_MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(413)
#: The same as a WAV file: 8 kHz mono, a few samples of silence.
SILENT_WAV = (
    b"RIFF" + (36 + 16).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    + b"data" + (16).to_bytes(4, "little") + bytes(16)
)  # fmt: skip

#: Posts a form to a URL with Twilio's signature and returns the answer (status, text).
Poster = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, str]]]


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None else value.strip().lower() == "true"


@dataclass(slots=True)
class SimCall:
    """One call on the network (either direction), as Twilio knows it."""

    sid: str
    direction: str  # "inbound" or "outbound-api"
    from_: str
    to: str
    status: str
    twiml: str | None = None
    url: str | None = None
    status_callback: str | None = None
    status_events: frozenset[str] = frozenset()
    heard: list[str] = field(default_factory=list)
    conference: str | None = None
    label: str = ""
    started_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    sequence: int = 0

    @property
    def live(self) -> bool:
        return self.status not in FINAL


@dataclass(slots=True)
class SimParticipant:
    call_sid: str
    label: str
    start_on_enter: bool
    end_on_exit: bool


@dataclass(slots=True)
class SimConference:
    sid: str
    name: str
    status: str = "init"  # init, in-progress, completed
    participants: dict[str, SimParticipant] = field(default_factory=dict)
    status_callback: str | None = None
    events: frozenset[str] = frozenset()
    record: bool = False
    recording_callback: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    sequence: int = 0
    recording_sid: str | None = None


@dataclass(slots=True)
class SimRecording:
    sid: str
    conference_sid: str
    duration_s: int
    channels: int = 1
    status: str = "completed"
    created_at: float = 0.0
    deleted: bool = False


class VoiceNetwork:
    """Calls, conferences and recordings of one stand-in account."""

    def __init__(
        self, *, account_sid: str, post: Poster, base_url: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        self.account_sid = account_sid
        self._post = post
        self._base_url = base_url
        self.clock = clock
        self.calls: dict[str, SimCall] = {}
        self.conferences: dict[str, SimConference] = {}
        self.recordings: dict[str, SimRecording] = {}
        #: The voice URL of each of our numbers (what the console's "A call comes in" would hold).
        self.numbers: dict[str, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Condition()

    # -- what tests and the control API do --------------------------------------------------------
    async def dial_in(self, from_: str, to: str, voice_url: str | None = None) -> SimCall:
        """Someone calls ``to`` (one of our numbers) from ``from_``: the voice webhook, then its TwiML."""
        url = voice_url or self.numbers.get(to)
        if not url:
            raise LookupError(f"no voice URL for {to}: pass voice_url or configure the number")
        call = SimCall(new_sid("CA"), "inbound", from_, to, "ringing", url=url, started_at=self.clock())
        self.calls[call.sid] = call
        status, text = await self._post(url, self._call_params(call))
        if status != 200:
            call.status = "failed"
            call.ended_at = self.clock()
            log.warning("twilio simulator: voice URL answered %s for %s", status, call.sid)
            await self._notify()
            return call
        call.status = "in-progress"
        call.answered_at = self.clock()
        call.twiml = text
        await self._follow(call, text)
        return call

    async def answer(self, sid: str) -> SimCall:
        """The phone of an outbound call is picked up: ``answered``, then its TwiML is followed."""
        call = self._call(sid)
        if call.status not in RINGING:
            raise ValueError(f"call {sid} is {call.status}, not ringing")
        call.status = "in-progress"
        call.answered_at = self.clock()
        await self._status(call, "answered")
        twiml = call.twiml
        if twiml is None and call.url:
            _, twiml = await self._post(call.url, self._call_params(call))
        await self._follow(call, twiml or "<Response/>")
        return call

    async def refuse(self, sid: str, status: str = "no-answer") -> SimCall:
        """The phone of an outbound call is not answered (``no-answer``), engaged (``busy``), or fails."""
        if status not in ("no-answer", "busy", "failed", "canceled"):
            raise ValueError("status must be no-answer, busy, failed or canceled")
        call = self._call(sid)
        if call.status not in RINGING:
            raise ValueError(f"call {sid} is {call.status}, not ringing")
        await self._finish(call, status)
        return call

    async def hang_up(self, sid: str) -> SimCall:
        """The person on ``sid`` hangs up: they leave their conference, and the call completes."""
        call = self._call(sid)
        if call.status in RINGING:
            await self._finish(call, "canceled")
        elif call.live:
            await self._leave(call)
        return call

    async def keys_answered(self, sid: str, twiml: str) -> None:
        """The TwiML the ``<Gather>`` action answered with, followed on the call (if it is on the line)."""
        call = self.calls.get(sid)
        if call is not None and call.status == "in-progress":
            await self._follow(call, twiml)

    async def settled(self) -> None:
        """Wait until every webhook caused by REST requests so far has been answered."""
        while self._background:
            await asyncio.wait(set(self._background))

    # -- what the REST API does -------------------------------------------------------------------
    def create(self, form: Mapping[str, str], sid: str, events: frozenset[str]) -> SimCall:
        """``Calls.json``: a call out that rings (the test answers or refuses it). ``events`` are the
        ``StatusCallbackEvent`` values asked for (the final status is always reported)."""
        call = SimCall(
            sid,
            "outbound-api",
            form.get("From", ""),
            form.get("To", ""),
            "ringing",
            twiml=form.get("Twiml"),
            url=form.get("Url"),
            status_callback=form.get("StatusCallback"),
            status_events=events | {"completed"},
            started_at=self.clock(),
        )
        self.calls[sid] = call
        if "ringing" in events or "initiated" in events:
            self._in_background(self._status(call, "ringing"))
        return call

    def update(self, sid: str, form: Mapping[str, str]) -> SimCall:
        """``Calls/{sid}.json``: ``Status=canceled`` stops it ringing, ``completed`` hangs it up."""
        call = self._call(sid)
        status = form.get("Status", "")
        if status == "canceled" and call.status in RINGING:
            call.status = "canceled"  # at once: the REST answer already says so
            self._in_background(self._finish(call, "canceled", already=True))
        elif status == "completed" and call.status in RINGING:
            call.status = "canceled"
            self._in_background(self._finish(call, "canceled", already=True))
        elif status == "completed" and call.live:
            self._in_background(self._leave(call))
        elif status and status not in ("canceled", "completed"):
            raise ValueError("Status must be canceled or completed")
        return call

    def recording(self, sid: str) -> SimRecording | None:
        rec = self.recordings.get(sid)
        return None if rec is None or rec.deleted else rec

    def delete_recording(self, sid: str) -> bool:
        rec = self.recording(sid)
        if rec is None:
            return False
        rec.deleted = True
        return True

    # -- following TwiML --------------------------------------------------------------------------
    async def _follow(self, call: SimCall, twiml: str) -> None:
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError:
            log.warning("twilio simulator: unreadable TwiML for %s", call.sid)
            await self._finish(call, "failed")
            return
        for verb in root:
            if not call.live:
                return
            if verb.tag == "Say":
                call.heard.append(verb.text or "")
            elif verb.tag == "Hangup":
                await self._finish(call, "completed")
                return
            elif verb.tag == "Dial":
                room = verb.find("Conference")
                if room is None:
                    log.warning("twilio simulator: only <Dial><Conference> is modelled (call %s)", call.sid)
                    continue
                await self._join(call, room)
                return  # the call stays in the conference until it leaves
            elif verb.tag == "Gather":
                for say in verb.iter("Say"):
                    call.heard.append(say.text or "")
                await self._notify()
                return  # the call waits for keys (press_digits), whose answer is followed then
            elif verb.tag == "Pause":
                continue
        await self._notify()

    async def _join(self, call: SimCall, room: ET.Element) -> None:
        name = (room.text or "").strip()
        conference = self.conferences.get(name)
        if conference is None or conference.status == "completed":
            conference = SimConference(
                new_sid("CF"),
                name,
                status_callback=room.get("statusCallback"),
                events=frozenset((room.get("statusCallbackEvent") or "").split()),
                record=(room.get("record") or "do-not-record") != "do-not-record",
                recording_callback=room.get("recordingStatusCallback"),
            )
            self.conferences[name] = conference
        participant = SimParticipant(
            call.sid,
            room.get("participantLabel") or "",
            _flag(room.get("startConferenceOnEnter"), True),
            _flag(room.get("endConferenceOnExit"), False),
        )
        call.conference = name
        call.label = participant.label
        conference.participants[call.sid] = participant
        await self._conference_event(conference, "participant-join", "join", participant)
        if participant.start_on_enter and conference.status == "init":
            conference.status = "in-progress"
            conference.started_at = self.clock()
            await self._conference_event(conference, "conference-start", "start", None)
        await self._notify()

    async def _leave(self, call: SimCall) -> None:
        conference = self.conferences.get(call.conference or "")
        participant = conference.participants.pop(call.sid, None) if conference is not None else None
        if conference is not None and participant is not None:
            await self._conference_event(conference, "participant-leave", "leave", participant)
        await self._finish(call, "completed")
        if conference is None or participant is None or conference.status == "completed":
            return
        if participant.end_on_exit:
            await self._end_conference(conference, "participant-with-end-conference-on-exit-left", call.sid)
        elif not conference.participants:
            await self._end_conference(conference, "last-participant-left", call.sid)

    async def _end_conference(self, conference: SimConference, reason: str, by: str) -> None:
        started = conference.status == "in-progress"
        conference.status = "completed"
        conference.ended_at = self.clock()
        for sid in list(conference.participants):
            other = self.calls[sid]
            participant = conference.participants.pop(sid)
            await self._conference_event(conference, "participant-leave", "leave", participant)
            await self._finish(other, "completed")
        await self._conference_event(
            conference,
            "conference-end",
            "end",
            None,
            ReasonConferenceEnded=reason,
            CallSidEndingConference=by,
        )
        if started and conference.record and conference.started_at is not None:
            await self._record(conference)
        await self._notify()

    async def _record(self, conference: SimConference) -> None:
        assert conference.started_at is not None and conference.ended_at is not None
        rec = SimRecording(
            new_sid("RE"),
            conference.sid,
            max(0, round(conference.ended_at - conference.started_at)),
            created_at=self.clock(),
        )
        self.recordings[rec.sid] = rec
        conference.recording_sid = rec.sid
        if conference.recording_callback:
            where = f"{self._base_url()}/2010-04-01/Accounts/{self.account_sid}/Recordings/{rec.sid}"
            params = {
                "AccountSid": self.account_sid,
                "ConferenceSid": conference.sid,
                "RecordingSid": rec.sid,
                "RecordingUrl": where,
                "RecordingStatus": "completed",
                "RecordingDuration": str(rec.duration_s),
                "RecordingChannels": str(rec.channels),
                "RecordingStartTime": format_datetime(datetime.fromtimestamp(conference.started_at, UTC)),
                "RecordingSource": "StartConferenceVerb",
            }
            await self._post(conference.recording_callback, params)

    # -- webhooks ---------------------------------------------------------------------------------
    def _call_params(self, call: SimCall) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": call.status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
        }

    async def _status(self, call: SimCall, event: str) -> None:
        if not call.status_callback or event not in call.status_events:
            return
        call.sequence += 1
        params = self._call_params(call) | {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.sequence),
            "Timestamp": format_datetime(datetime.fromtimestamp(self.clock(), UTC)),
        }
        if call.status == "completed" and call.answered_at is not None:
            seconds = str(max(0, round((call.ended_at or self.clock()) - call.answered_at)))
            params |= {"CallDuration": seconds, "Duration": seconds}
        await self._post(call.status_callback, params)

    async def _conference_event(
        self,
        conference: SimConference,
        name: str,
        short: str,
        participant: SimParticipant | None,
        **extra: str,
    ) -> None:
        if not conference.status_callback or short not in conference.events:
            return
        conference.sequence += 1
        params = {
            "AccountSid": self.account_sid,
            "ConferenceSid": conference.sid,
            "FriendlyName": conference.name,
            "StatusCallbackEvent": name,
            "SequenceNumber": str(conference.sequence),
            "Timestamp": format_datetime(datetime.fromtimestamp(self.clock(), UTC)),
            **extra,
        }
        if participant is not None:
            params |= {
                "CallSid": participant.call_sid,
                "Muted": "false",
                "Hold": "false",
                "Coaching": "false",
                "StartConferenceOnEnter": str(participant.start_on_enter).lower(),
                "EndConferenceOnExit": str(participant.end_on_exit).lower(),
            }
            if participant.label:
                params["ParticipantLabel"] = participant.label
        await self._post(conference.status_callback, params)

    async def _finish(self, call: SimCall, status: str, *, already: bool = False) -> None:
        if not already and not call.live:
            return
        call.status = status
        call.ended_at = self.clock()
        await self._status(call, "completed")
        await self._notify()

    def _call(self, sid: str) -> SimCall:
        try:
            return self.calls[sid]
        except KeyError:
            raise LookupError(f"no call {sid}") from None

    def _in_background(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("twilio simulator: a webhook could not be delivered")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, check: Callable[[], bool]) -> None:
        """Until ``check()`` holds after some change (bound it with asyncio.timeout)."""
        async with self.changed:
            await self.changed.wait_for(check)

    # -- what the stand-in shows --------------------------------------------------------------------
    def call_json(self, call: SimCall) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "direction": call.direction,
            "from": call.from_,
            "to": call.to,
            "status": call.status,
            "conference": call.conference,
            "label": call.label,
            "heard": list(call.heard),
        }

    def conference_json(self, conference: SimConference) -> dict[str, Any]:
        return {
            "sid": conference.sid,
            "friendly_name": conference.name,
            "status": conference.status,
            "participants": [
                {"call_sid": p.call_sid, "label": p.label} for p in conference.participants.values()
            ],
            "recording_sid": conference.recording_sid,
        }

    def recording_json(self, rec: SimRecording) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "sid": rec.sid,
            "conference_sid": rec.conference_sid,
            "duration": str(rec.duration_s),
            "channels": rec.channels,
            "status": rec.status,
            "source": "StartConferenceVerb",
            "date_created": format_datetime(datetime.fromtimestamp(rec.created_at, UTC)),
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{rec.sid}.json",
        }
