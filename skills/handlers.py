"""The Care Alarm skill: ask-sdk-core request handlers that turn a :class:`VoiceResult` into speech.

ask-sdk-core handlers are synchronous, so they do no I/O: the endpoint has already done the store work
for the request (see :func:`skills.endpoint.work_for`) and passes its result as ``context`` to
``skill.invoke``. Every intent in the interaction model has a handler; anything else (an intent the
model does not know) gets the fallback answer and raises nothing.

Speech never claims that 999 was called: Alexa cannot call it, and the bridge does not.
"""

from __future__ import annotations

import logging
from typing import Any

from ask_sdk_core.dispatch_components.exception_components import AbstractExceptionHandler
from ask_sdk_core.dispatch_components.request_components import AbstractRequestHandler
from ask_sdk_core.handler_input import HandlerInput
from ask_sdk_core.skill import CustomSkill
from ask_sdk_core.skill_builder import SkillBuilder
from ask_sdk_core.utils.predicate import is_intent_name, is_request_type
from ask_sdk_core.utils.request_util import get_intent_name
from ask_sdk_model.intent_request import IntentRequest
from ask_sdk_model.response import Response

from skills.voice import VoiceResult

log = logging.getLogger(__name__)

CARD_TITLE = "Care Alarm"

# -- what the skill says ---------------------------------------------------------------------------
ALERTED = "I've alerted the control centre. Someone will speak to you through your alarm unit shortly."
ALERTED_NO_UNIT = "I've alerted the control centre. An operator will call you back shortly."
JOINED = (
    "I've told the control centre again. They already have your call for help, and someone will speak "
    "to you through your alarm unit shortly."
)
JOINED_NO_UNIT = (
    "I've told the control centre again. They already have your call for help, and an operator "
    "will call you back shortly."
)
ALERTED_UNLINKED = (
    "I've alerted the control centre. This Echo isn't linked to your alarm yet, so they may not "
    "know where you are. If you can, press your pendant as well."
)
UNAVAILABLE = (
    "I'm sorry, I couldn't reach the control centre. Please press your pendant, or call 999 "
    "yourself if you can."
)
STATUS_ACKNOWLEDGED = "An operator has your call."
STATUS_RAISED = "Your call is waiting for an operator."
STATUS_NONE = "There is no open call. If you need help, say: trigger help."
STATUS_UNAVAILABLE = (
    "I'm sorry, I can't check on your call right now. If you need help, press your pendant, or "
    "call 999 yourself if you can."
)
CANCEL_RECORDED = (
    "I've told the control centre you said you're fine. An operator will still check on you "
    "before closing the call."
)
CANCEL_NONE = "There is no open call to cancel."
CANCEL_UNAVAILABLE = (
    "I'm sorry, I couldn't reach the control centre to cancel. An operator will still check on you."
)
CHECKIN_RECORDED = "Thank you. I've let the control centre know you're okay today."
CHECKIN_UNLINKED = (
    "Thank you. This Echo isn't linked to a resident yet, so I couldn't record your check-in. "
    "Your installer can link it."
)
CHECKIN_UNAVAILABLE = (
    "I'm sorry, I couldn't record your check-in right now. Please try again in a few minutes."
)
ASK_NEED_HELP = "Do you need help? Say 'trigger help' and I'll alert the control centre."
HELP = (
    "Do you need help? Say 'trigger help' and I'll alert the control centre. You can also ask 'is help "
    "coming', say 'false alarm' to cancel, or say 'I'm okay' to check in."
)
FALLBACK = "Sorry, I didn't catch that. If you need help, say 'trigger help'."
GOODBYE = "Okay. If you need help, say: Alexa, ask care alarm to trigger help."
ERROR = "Sorry, something went wrong. If you need help, press your pendant, or call 999 yourself if you can."

CUSTOM_INTENTS = ("TriggerHelpIntent", "CancelHelpIntent", "HelpStatusIntent", "CheckInIntent")
BUILT_IN_INTENTS = (
    "AMAZON.HelpIntent",
    "AMAZON.StopIntent",
    "AMAZON.CancelIntent",
    "AMAZON.FallbackIntent",
    "AMAZON.NavigateHomeIntent",
)


def _result(handler_input: HandlerInput, action: str) -> VoiceResult | None:
    context = handler_input.context
    if isinstance(context, VoiceResult) and context.action == action:
        return context
    return None


def trigger_speech(result: VoiceResult | None) -> str:
    if result is None or result.status == "unavailable":
        return UNAVAILABLE
    if not result.linked:
        return ALERTED_UNLINKED
    if result.status == "joined":
        return JOINED if result.has_unit else JOINED_NO_UNIT
    return ALERTED if result.has_unit else ALERTED_NO_UNIT


def status_speech(result: VoiceResult | None) -> str:
    if result is None or result.status == "unavailable":
        return STATUS_UNAVAILABLE
    return {"acknowledged": STATUS_ACKNOWLEDGED, "raised": STATUS_RAISED}.get(result.status, STATUS_NONE)


def cancel_speech(result: VoiceResult | None) -> str:
    if result is None or result.status == "unavailable":
        return CANCEL_UNAVAILABLE
    return CANCEL_RECORDED if result.status == "recorded" else CANCEL_NONE


def check_in_speech(result: VoiceResult | None) -> str:
    if result is None or result.status == "unavailable":
        return CHECKIN_UNAVAILABLE
    return CHECKIN_RECORDED if result.status == "recorded" else CHECKIN_UNLINKED


class _Intent(AbstractRequestHandler):
    names: tuple[str, ...] = ()

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return any(is_intent_name(name)(handler_input) for name in self.names)


class TriggerHelpHandler(_Intent):
    names = ("TriggerHelpIntent",)

    def handle(self, handler_input: HandlerInput) -> Response:
        speech = trigger_speech(_result(handler_input, "trigger"))
        return handler_input.response_builder.speak(speech).set_should_end_session(True).response


class HelpStatusHandler(_Intent):
    names = ("HelpStatusIntent",)

    def handle(self, handler_input: HandlerInput) -> Response:
        speech = status_speech(_result(handler_input, "status"))
        return handler_input.response_builder.speak(speech).set_should_end_session(True).response


class CancelHelpHandler(_Intent):
    names = ("CancelHelpIntent",)

    def handle(self, handler_input: HandlerInput) -> Response:
        speech = cancel_speech(_result(handler_input, "cancel"))
        return handler_input.response_builder.speak(speech).set_should_end_session(True).response


class CheckInHandler(_Intent):
    names = ("CheckInIntent",)

    def handle(self, handler_input: HandlerInput) -> Response:
        speech = check_in_speech(_result(handler_input, "check_in"))
        return handler_input.response_builder.speak(speech).set_should_end_session(True).response


class LaunchHandler(AbstractRequestHandler):
    """ "Alexa, open care alarm" -- and an Alexa Routine for "Alexa, trigger help" arrives as this."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return bool(is_request_type("LaunchRequest")(handler_input))

    def handle(self, handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.speak(ASK_NEED_HELP).ask(ASK_NEED_HELP).response


class HelpHandler(_Intent):
    """A bare "help" reaches AMAZON.HelpIntent: offer to raise help, keep listening."""

    names = ("AMAZON.HelpIntent",)

    def handle(self, handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.speak(HELP).ask(ASK_NEED_HELP).response


class StopHandler(_Intent):
    """Stop, Cancel and NavigateHome end the session; they never cancel an alert (that is CancelHelp)."""

    names = ("AMAZON.StopIntent", "AMAZON.CancelIntent", "AMAZON.NavigateHomeIntent")

    def handle(self, handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.speak(GOODBYE).set_should_end_session(True).response


class FallbackHandler(AbstractRequestHandler):
    """AMAZON.FallbackIntent and any intent this skill does not know: re-ask, raise nothing."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return isinstance(handler_input.request_envelope.request, IntentRequest)

    def handle(self, handler_input: HandlerInput) -> Response:
        name = get_intent_name(handler_input)
        if name != "AMAZON.FallbackIntent":
            log.info("unknown intent %r answered with the fallback", name[:80] if name else name)
        return handler_input.response_builder.speak(FALLBACK).ask(ASK_NEED_HELP).response


class SessionEndedHandler(AbstractRequestHandler):
    def can_handle(self, handler_input: HandlerInput) -> bool:
        return bool(is_request_type("SessionEndedRequest")(handler_input))

    def handle(self, handler_input: HandlerInput) -> Response:
        request = handler_input.request_envelope.request
        reason = getattr(request, "reason", None)
        if reason is not None and str(getattr(reason, "value", reason)) == "ERROR":
            log.warning("Alexa ended a session with an error: %s", getattr(request, "error", None))
        return handler_input.response_builder.response


class OtherRequestHandler(AbstractRequestHandler):
    """Any other request type (display events, etc.): an empty answer."""

    def can_handle(self, handler_input: HandlerInput) -> bool:
        return True

    def handle(self, handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.response


class SafeExceptionHandler(AbstractExceptionHandler):
    """A bug in a handler still gets an honest answer, never silence or a false promise."""

    def can_handle(self, handler_input: HandlerInput, exception: Exception) -> bool:
        return True

    def handle(self, handler_input: HandlerInput, exception: Exception) -> Response:
        log.error("skill handler failed: %r", exception)
        return handler_input.response_builder.speak(ERROR).set_should_end_session(True).response


def build_skill(skill_id: str | None = None) -> CustomSkill:
    """The skill with a handler for every request and intent in the interaction model (order matters)."""
    builder = SkillBuilder()
    builder.skill_id = skill_id  # type: ignore[assignment]  # ask-sdk types it as None
    for handler in (
        TriggerHelpHandler(),
        HelpStatusHandler(),
        CancelHelpHandler(),
        CheckInHandler(),
        LaunchHandler(),
        HelpHandler(),
        StopHandler(),
        SessionEndedHandler(),
        FallbackHandler(),
        OtherRequestHandler(),
    ):
        builder.add_request_handler(handler)
    builder.add_exception_handler(SafeExceptionHandler())
    skill: CustomSkill = builder.create()
    return skill


def invoke(skill: CustomSkill, request_envelope: Any, result: VoiceResult) -> Any:
    """Run the skill on a deserialised envelope with the store work's result as context."""
    return skill.invoke(request_envelope=request_envelope, context=result)
