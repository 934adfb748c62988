"""The Alexa interaction model files, and the simulator's envelopes as ask-sdk-core sees them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ask_sdk_core.handler_input import HandlerInput
from ask_sdk_core.serialize import DefaultSerializer
from ask_sdk_core.skill_builder import SkillBuilder
from ask_sdk_core.utils import is_intent_name, is_request_type
from ask_sdk_model import RequestEnvelope, Response

from simulators.alexa import encode, intent_request, launch_request, session_ended_request
from simulators.alexa_matcher import BUILT_IN_PHRASES, LOCALES, load_model, normalise

CUSTOM_INTENTS = {"TriggerHelpIntent", "CancelHelpIntent", "HelpStatusIntent", "CheckInIntent"}
REQUIRED_BUILT_INS = {
    "AMAZON.HelpIntent",
    "AMAZON.StopIntent",
    "AMAZON.CancelIntent",
    "AMAZON.FallbackIntent",
    "AMAZON.NavigateHomeIntent",
}
#: Alexa sample utterances: letters, spaces, apostrophes and periods; numbers spelled out.
SAMPLE_RE = re.compile(r"[a-z][a-z' .]*")
SKILL_ID = "amzn1.ask.skill.model-test"


def intents(locale: str) -> dict[str, dict[str, Any]]:
    model = load_model(locale)
    return {intent["name"]: intent for intent in model["interactionModel"]["languageModel"]["intents"]}


@pytest.mark.parametrize("locale", LOCALES)
def test_every_intent_present(locale: str) -> None:
    assert set(intents(locale)) == CUSTOM_INTENTS | REQUIRED_BUILT_INS


def test_locales_have_the_same_intents_and_invocation_name() -> None:
    gb, us = load_model("en-GB"), load_model("en-US")
    assert set(intents("en-GB")) == set(intents("en-US"))
    assert gb["interactionModel"]["languageModel"]["invocationName"] == "care alarm"
    assert us["interactionModel"]["languageModel"]["invocationName"] == "care alarm"


@pytest.mark.parametrize("locale", LOCALES)
def test_utterances_are_unique_within_a_locale(locale: str) -> None:
    seen: dict[str, str] = {}
    for name, intent in intents(locale).items():
        for sample in intent["samples"]:
            key = normalise(sample)
            assert key not in seen, f"{sample!r} in both {seen[key]} and {name}"
            seen[key] = name


@pytest.mark.parametrize("locale", LOCALES)
def test_samples_follow_alexa_rules(locale: str) -> None:
    for intent in intents(locale).values():
        for sample in intent["samples"]:
            assert SAMPLE_RE.fullmatch(sample), sample
            assert sample == sample.strip() and "  " not in sample, sample


@pytest.mark.parametrize("locale", LOCALES)
def test_no_sample_shadows_a_built_in_intent(locale: str) -> None:
    built_in = {normalise(p) for phrases in BUILT_IN_PHRASES.values() for p in phrases}
    for name in CUSTOM_INTENTS:
        clashes = {normalise(s) for s in intents(locale)[name]["samples"]} & built_in
        assert not clashes, (name, clashes)


@pytest.mark.parametrize("locale", LOCALES)
def test_custom_intents_have_enough_samples(locale: str) -> None:
    found = intents(locale)
    assert len(found["TriggerHelpIntent"]["samples"]) >= 50
    for name in CUSTOM_INTENTS:
        assert len(found[name]["samples"]) >= 15, name
    for name in REQUIRED_BUILT_INS:
        assert found[name]["samples"] == [], name


@pytest.mark.parametrize(
    "phrase", ["trigger help", "i need help", "call for help", "i've fallen", "get me help"]
)
def test_issue_trigger_phrases_are_samples(phrase: str) -> None:
    for locale in LOCALES:
        assert phrase in intents(locale)["TriggerHelpIntent"]["samples"]


# --- ask-sdk-core sees the simulator's envelopes ----------------------------------------------------


def _skill() -> Any:
    builder = SkillBuilder()
    builder.skill_id = SKILL_ID

    @builder.request_handler(can_handle_func=is_intent_name("TriggerHelpIntent"))
    def trigger(handler_input: HandlerInput) -> Response:
        system = handler_input.request_envelope.context.system
        speech = f"alerted for {system.device.device_id} {system.user.user_id} {handler_input.context}"
        return handler_input.response_builder.speak(speech).set_should_end_session(True).response

    @builder.request_handler(can_handle_func=is_request_type("LaunchRequest"))
    def launch(handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.speak("launched").ask("Do you need help?").response

    @builder.request_handler(can_handle_func=is_request_type("SessionEndedRequest"))
    def ended(handler_input: HandlerInput) -> Response:
        return handler_input.response_builder.response

    return builder.create()


def _invoke(envelope: dict[str, Any], context: Any = None) -> dict[str, Any]:
    serializer = DefaultSerializer()
    request = serializer.deserialize(encode(envelope).decode("utf-8"), RequestEnvelope)
    result: dict[str, Any] = serializer.serialize(_skill().invoke(request_envelope=request, context=context))
    return result


def test_ask_sdk_core_handles_a_simulated_intent_request() -> None:
    envelope = intent_request("TriggerHelpIntent", device_id="echo-1", user_id="user-1", skill_id=SKILL_ID)
    reply = _invoke(envelope, context="alert-42")
    assert reply["response"]["outputSpeech"]["ssml"] == "<speak>alerted for echo-1 user-1 alert-42</speak>"
    assert reply["response"]["shouldEndSession"] is True


def test_ask_sdk_core_handles_launch_and_session_end() -> None:
    ids = {"device_id": "echo-1", "user_id": "user-1", "skill_id": SKILL_ID}
    launched = _invoke(launch_request(**ids))
    assert launched["response"]["outputSpeech"]["ssml"] == "<speak>launched</speak>"
    assert launched["response"]["shouldEndSession"] is False
    ended = _invoke(session_ended_request(**ids))
    assert "outputSpeech" not in ended["response"]
