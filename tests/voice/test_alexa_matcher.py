"""The local utterance matcher used by the Alexa simulator."""

from __future__ import annotations

import pytest

from simulators.alexa_matcher import FALLBACK, LAUNCH, LOCALES, UtteranceMatcher, load_model, normalise

ISSUE_EXAMPLES = [
    ("trigger help", "TriggerHelpIntent"),
    ("Alexa, trigger help", "TriggerHelpIntent"),
    ("I need help", "TriggerHelpIntent"),
    ("call for help", "TriggerHelpIntent"),
    ("I've fallen", "TriggerHelpIntent"),
    ("get me help", "TriggerHelpIntent"),
    ("false alarm", "CancelHelpIntent"),
    ("cancel help", "CancelHelpIntent"),
    ("I'm fine now", "CancelHelpIntent"),
    ("is help coming", "HelpStatusIntent"),
    ("has anyone answered", "HelpStatusIntent"),
    ("I'm okay", "CheckInIntent"),
    ("good morning", "CheckInIntent"),
]


@pytest.fixture(scope="module", params=LOCALES)
def matcher(request: pytest.FixtureRequest) -> UtteranceMatcher:
    return UtteranceMatcher.for_locale(request.param)


@pytest.mark.parametrize(("utterance", "intent"), ISSUE_EXAMPLES)
def test_issue_examples(matcher: UtteranceMatcher, utterance: str, intent: str) -> None:
    assert matcher.match(utterance).intent == intent


@pytest.mark.parametrize(
    "utterance",
    ["TRIGGER HELP!", "  trigger,   help.  ", "I\u2019ve fallen", "ive fallen", "Alexa trigger help?"],
)
def test_case_punctuation_and_apostrophes_do_not_matter(matcher: UtteranceMatcher, utterance: str) -> None:
    result = matcher.match(utterance)
    assert result.intent == "TriggerHelpIntent"
    assert result.exact


@pytest.mark.parametrize(
    "utterance",
    [
        "Alexa, ask care alarm to trigger help",
        "ask care alarm to call for help",
        "tell care alarm I've fallen",
        "tell care alarm that I need help",
    ],
)
def test_one_shot_invocation_is_stripped(matcher: UtteranceMatcher, utterance: str) -> None:
    assert matcher.match(utterance).intent == "TriggerHelpIntent"


@pytest.mark.parametrize(
    "utterance", ["open care alarm", "Alexa, open Care Alarm", "care alarm", "", "Alexa"]
)
def test_launch_phrases(matcher: UtteranceMatcher, utterance: str) -> None:
    assert matcher.match(utterance).intent == LAUNCH


@pytest.mark.parametrize(
    ("utterance", "intent"),
    [
        ("please could you trigger help now", "TriggerHelpIntent"),
        ("I have fallen in the kitchen", "TriggerHelpIntent"),
        ("is help coming yet", "HelpStatusIntent"),
        ("good morning to you", "CheckInIntent"),
    ],
)
def test_near_misses_match_by_overlap(matcher: UtteranceMatcher, utterance: str, intent: str) -> None:
    result = matcher.match(utterance)
    assert (result.intent, result.exact) == (intent, False)
    assert result.score >= matcher.threshold


@pytest.mark.parametrize(
    "utterance", ["what is the weather", "play some music", "I need a coffee", "turn on the lights", "xyzzy"]
)
def test_unrelated_utterances_fall_back(matcher: UtteranceMatcher, utterance: str) -> None:
    result = matcher.match(utterance)
    assert result.intent == FALLBACK
    assert result.score < matcher.threshold


@pytest.mark.parametrize(
    ("utterance", "intent"),
    [
        ("stop", "AMAZON.StopIntent"),
        ("cancel", "AMAZON.CancelIntent"),
        ("never mind", "AMAZON.CancelIntent"),
        ("help", "AMAZON.HelpIntent"),
        ("go home", "AMAZON.NavigateHomeIntent"),
    ],
)
def test_built_in_intents(matcher: UtteranceMatcher, utterance: str, intent: str) -> None:
    assert matcher.match(utterance).intent == intent


def test_every_sample_matches_its_own_intent() -> None:
    for locale in LOCALES:
        model = load_model(locale)
        matcher = UtteranceMatcher(model)
        for intent in model["interactionModel"]["languageModel"]["intents"]:
            for sample in intent["samples"]:
                assert matcher.match(sample).intent == intent["name"], (locale, sample)


def test_threshold_is_adjustable() -> None:
    strict = UtteranceMatcher.for_locale("en-GB", threshold=0.99)
    assert strict.match("I have fallen in the kitchen").intent == FALLBACK
    assert strict.match("I have fallen").intent == "TriggerHelpIntent"


def test_normalise() -> None:
    assert normalise("  I\u2019VE   Fallen!! ") == "ive fallen"
    assert normalise("what's-the status?") == "whats the status"


def test_unknown_locale_is_refused() -> None:
    with pytest.raises(ValueError, match="fr-FR"):
        load_model("fr-FR")
