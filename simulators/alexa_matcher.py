"""A small local matcher from utterance text to an intent name, over the interaction model's samples.

It stands in for Alexa's own language understanding in simulators and tests: normalise the text, try an
exact match against every sample utterance, then the best content-word overlap above a threshold, else
``AMAZON.FallbackIntent``. "Alexa, ask care alarm to ..." prefixes are stripped; "open care alarm" (or
nothing left after stripping) is a ``LaunchRequest``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

FALLBACK = "AMAZON.FallbackIntent"
LAUNCH = "LaunchRequest"
DEFAULT_THRESHOLD = 0.6
LOCALES = ("en-GB", "en-US")

#: Words that carry no intent on their own; ignored when scoring overlap (not for exact matches).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "im",
        "ive",
        "id",
        "me",
        "my",
        "to",
        "is",
        "am",
        "are",
        "be",
        "it",
        "its",
        "of",
        "for",
        "on",
        "in",
        "now",
        "please",
        "can",
        "could",
        "would",
        "you",
        "your",
        "do",
        "did",
        "has",
        "have",
        "had",
        "this",
        "that",
        "some",
        "someone",
        "somebody",
        "anyone",
        "need",
        "get",
        "just",
        "with",
    ]
)

#: What Alexa's built-in intents answer to (they carry no samples in our model); exact matches only.
BUILT_IN_PHRASES: dict[str, tuple[str, ...]] = {
    "AMAZON.StopIntent": ("stop", "off", "shut up", "be quiet", "quiet"),
    "AMAZON.CancelIntent": ("cancel", "never mind", "forget it"),
    "AMAZON.HelpIntent": ("help", "what can i say", "what can you do", "how does this work"),
    "AMAZON.NavigateHomeIntent": ("go home", "home", "exit"),
}

_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_NON_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower-case, drop apostrophes ("I've" -> "ive"), turn other punctuation into spaces, squash spaces."""
    text = _APOSTROPHES.sub("", text.casefold())
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def load_model(locale: str = "en-GB") -> dict[str, Any]:
    """Load the packaged interaction model JSON for ``locale`` (``en-GB`` or ``en-US``)."""
    if locale not in LOCALES:
        raise ValueError(f"no interaction model for locale {locale!r}; have {', '.join(LOCALES)}")
    text = resources.files("skills").joinpath("interaction_model", f"{locale}.json").read_text("utf-8")
    model: dict[str, Any] = json.loads(text)
    return model


@dataclass(frozen=True, slots=True)
class Match:
    """The matcher's answer. ``score`` is 1.0 for an exact match, the overlap score otherwise."""

    intent: str
    score: float
    exact: bool


class UtteranceMatcher:
    """Maps utterances to intents over one interaction model's sample utterances."""

    def __init__(self, model: dict[str, Any], *, threshold: float = DEFAULT_THRESHOLD) -> None:
        language_model = model["interactionModel"]["languageModel"]
        self.invocation_name: str = normalise(language_model["invocationName"])
        self.threshold = threshold
        self._exact: dict[str, str] = {}
        self._samples: list[tuple[frozenset[str], str]] = []
        for intent in language_model["intents"]:
            for sample in intent.get("samples", []):
                norm = normalise(sample)
                self._exact.setdefault(norm, intent["name"])
                self._samples.append((_content_words(norm), intent["name"]))
        for name, phrases in BUILT_IN_PHRASES.items():
            for phrase in phrases:
                self._exact.setdefault(normalise(phrase), name)
        inv = re.escape(self.invocation_name)
        self._one_shot = re.compile(rf"^(?:ask|tell) {inv}(?: (?:to|that|for|if|whether))? (?P<rest>.+)$")
        self._launch = re.compile(rf"^(?:(?:open|launch|start|begin|run|use|ask|tell) )?{inv}$")

    @classmethod
    def for_locale(cls, locale: str = "en-GB", *, threshold: float = DEFAULT_THRESHOLD) -> UtteranceMatcher:
        """A matcher over the packaged model for ``locale``."""
        return cls(load_model(locale), threshold=threshold)

    def match(self, utterance: str) -> Match:
        """Return the intent for ``utterance``: exact sample first, then best overlap, else fallback."""
        text = normalise(utterance)
        if text == "alexa" or text.startswith("alexa "):
            text = text[len("alexa") :].strip()
        if not text or self._launch.match(text):
            return Match(LAUNCH, 1.0, exact=True)
        one_shot = self._one_shot.match(text)
        if one_shot:
            text = one_shot["rest"]
        if text in self._exact:
            return Match(self._exact[text], 1.0, exact=True)
        words = _content_words(text)
        best_intent, best_score = FALLBACK, 0.0
        for sample_words, intent in self._samples:
            score = _dice(words, sample_words)
            if score > best_score:  # strict: earlier intents (help first) win ties
                best_intent, best_score = intent, score
        if best_score >= self.threshold:
            return Match(best_intent, best_score, exact=False)
        return Match(FALLBACK, best_score, exact=False)


def _content_words(normalised: str) -> frozenset[str]:
    words = normalised.split()
    content = frozenset(w for w in words if w not in STOP_WORDS)
    return content or frozenset(words)


def _dice(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return 2 * len(a & b) / (len(a) + len(b))
