"""The TwiML of the centre's calls: every call is one Twilio conference, named after the call.

- The **caller** of an inbound call hears the recording announcement, then waits in the conference (hold
  music) until an operator joins; their leaving ends the conference.
- An **operator**, the **overflow** centre and every **party** dialled join the same conference when they
  answer; a party hears the announcement first. Only a caller ends the conference by leaving; when the
  last of the centre's people leaves, the bridge hangs up the rest (``calls.py``).
- Each participant carries a label (``caller``, ``leg-<id>``), so conference events name the leg even
  before Twilio's sid for it is known; recording and conference events are posted back with the call id.
"""

from __future__ import annotations

from dataclasses import dataclass

from twilio.twiml.voice_response import Dial, VoiceResponse

from alarm_centre.telephony.settings import TelephonySettings

CALLER_LABEL = "caller"
LEG_LABEL_PREFIX = "leg-"


def conference_name(call_id: int) -> str:
    """The Twilio conference of a call (unique per call, like the row it belongs to)."""
    return f"telecare-call-{call_id}"


def leg_label(leg_id: int) -> str:
    return f"{LEG_LABEL_PREFIX}{leg_id}"


@dataclass(frozen=True, slots=True)
class ConferenceOptions:
    """What every participant of one call's conference is joined with (Twilio takes the first's)."""

    name: str
    events_url: str
    recording_url: str
    record: bool
    hold_music_url: str = ""
    announcement: str = ""
    language: str = "en-GB"


def _join(
    response: VoiceResponse, options: ConferenceOptions, *, label: str, starts: bool, ends: bool
) -> str:
    dial = Dial()
    extra: dict[str, str] = {}
    if options.hold_music_url:
        extra["wait_url"] = options.hold_music_url
    if options.record:
        extra |= {
            "record": "record-from-start",
            "recording_status_callback": options.recording_url,
            "recording_status_callback_method": "POST",
            "recording_status_callback_event": "completed",
        }
    dial.conference(
        options.name,
        start_conference_on_enter=starts,
        end_conference_on_exit=ends,
        beep=False,
        participant_label=label,
        status_callback=options.events_url,
        status_callback_method="POST",
        status_callback_event="start end join leave",
        **extra,
    )
    response.append(dial)
    return str(response)


def caller_twiml(options: ConferenceOptions) -> str:
    """The answer to an inbound call: the announcement, then the conference (waiting for an operator)."""
    response = VoiceResponse()
    if options.announcement:
        response.say(options.announcement, language=options.language)
    return _join(response, options, label=CALLER_LABEL, starts=False, ends=True)


def staff_twiml(options: ConferenceOptions, leg_id: int) -> str:
    """An operator's (or the overflow centre's) leg: straight into the conference, which starts."""
    return _join(VoiceResponse(), options, label=leg_label(leg_id), starts=True, ends=False)


def party_twiml(options: ConferenceOptions, leg_id: int) -> str:
    """A party dialled from the alert card: the announcement, then the conference."""
    response = VoiceResponse()
    if options.announcement:
        response.say(options.announcement, language=options.language)
    return _join(response, options, label=leg_label(leg_id), starts=True, ends=False)


#: Where Twilio reports on the centre's calls (each signed, each checked like every /twilio/ webhook).
STATUS_PATH = "/twilio/calls/status"
CONFERENCE_PATH = "/twilio/calls/conference"
RECORDING_PATH = "/twilio/calls/recording"


def conference_options(settings: TelephonySettings, base_url: str, call_id: int) -> ConferenceOptions:
    """The conference of call ``call_id``, with its callbacks under ``base_url`` (Twilio's view of us)."""
    base = base_url.rstrip("/")
    return ConferenceOptions(
        name=conference_name(call_id),
        events_url=f"{base}{CONFERENCE_PATH}?call={call_id}",
        recording_url=f"{base}{RECORDING_PATH}?call={call_id}",
        record=settings.record,
        hold_music_url=settings.hold_music_url,
        announcement=settings.announcement,
        language=settings.language,
    )


def status_url(base_url: str, leg_id: int) -> str:
    return f"{base_url.rstrip('/')}{STATUS_PATH}?leg={leg_id}"
