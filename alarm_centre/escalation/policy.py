"""Escalation policies: the steps of each priority, and the one place a policy is validated.

A **policy** is a list of steps per priority (``after_s``, ``action`` = highlight | sms | call, ``to``).
:func:`parse_steps` is the only check of a policy: the config (``escalation.policies`` in
``bridge/config.py``) and the API (``PUT /api/v1/escalation/policies/{priority}``) both use it, and
:data:`POLICY_SCHEMA` describes the same rules for the API description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alarm_centre.escalation.states import StepAction
from alarm_centre.store.tx import InvalidRequest
from devices.phone import E164_RE, is_e164

SUPERVISORS = "supervisors"
MAX_STEPS = 20
MAX_AFTER_S = 86400
STEP_ACTIONS: tuple[str, ...] = tuple(a.value for a in StepAction)


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """One step of a policy: ``after_s`` seconds after the alert was raised, do ``action`` to ``to``."""

    after_s: float
    action: StepAction
    to: tuple[str, ...] = (SUPERVISORS,)

    def to_json(self) -> dict[str, Any]:
        return {"after_s": self.after_s, "action": self.action.value, "to": list(self.to)}


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
                    "after_s": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": MAX_AFTER_S,
                        "description": "seconds after the alert was raised",
                    },
                    "action": {"type": "string", "enum": list(STEP_ACTIONS)},
                    "to": {
                        "description": f"{SUPERVISORS!r} (the default) or E.164 numbers",
                        "oneOf": [
                            {"type": "string", "const": SUPERVISORS},
                            {"type": "string", "pattern": f"^{E164_RE.pattern}$"},
                            {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "string",
                                    "anyOf": [{"const": SUPERVISORS}, {"pattern": f"^{E164_RE.pattern}$"}],
                                },
                            },
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
        if isinstance(item, PolicyStep):
            item = item.to_json()
        if not isinstance(item, dict) or set(item) - {"after_s", "action", "to"}:
            raise InvalidRequest(f"steps[{n}] must be an object with after_s, action and optional to")
        after = item.get("after_s")
        if isinstance(after, bool) or not isinstance(after, int | float) or not 0 <= after <= MAX_AFTER_S:
            raise InvalidRequest(f"steps[{n}].after_s must be a number of seconds from 0 to {MAX_AFTER_S}")
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
        steps.append(PolicyStep(float(after), StepAction(action), tuple(to)))
    return sorted(steps, key=lambda s: s.after_s)
