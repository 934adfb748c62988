"""One clock decides time in a running bridge: every feature hands ``host.clock`` to what it builds.

A part built with its default clock (``time.time``) keeps deadlines on the real clock while the rest of
the bridge, and the tests that inject a :class:`tests.clock.SteppedClock`, keep them on another: the voice
check-in loop did, and raised a resident's missed check-in before the test's own time had reached the
deadline. Checked on the source with ``ast``: a call, in a feature module, of anything with a ``clock``
parameter must pass one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

from bridge.features import FEATURES

ROOT = Path(__file__).resolve().parent.parent

#: Parts that keep the real clock on purpose, with the reason.
REAL_CLOCK = {
    # An Alexa request's timestamp is checked against the real time Amazon signed it at.
    "AlexaVerifier": "the signed request's own time",
}


def takes_clock(target: object) -> inspect.Parameter | None:
    try:
        return inspect.signature(target).parameters.get("clock")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def calls_without_clock(module_name: str, root: Path = ROOT) -> list[str]:
    module = importlib.import_module(module_name)
    path = Path(inspect.getfile(module))
    offenders = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        name = node.func.id
        target = getattr(module, name, None)
        parameter = takes_clock(target) if callable(target) else None
        if parameter is None or name in REAL_CLOCK:
            continue
        positional = list(inspect.signature(target).parameters).index("clock")  # type: ignore[arg-type]
        passed = any(k.arg == "clock" for k in node.keywords) or (
            parameter.kind is not inspect.Parameter.KEYWORD_ONLY and len(node.args) > positional
        )
        if not passed:
            offenders.append(f"{path.relative_to(root)}:{node.lineno} {name}(...) without clock=")
    return offenders


def test_every_feature_hands_the_bridges_clock_to_what_keeps_time() -> None:
    modules = sorted({feature.__module__ for feature in FEATURES})
    assert "bridge.feature_voice" in modules and "bridge.feature_registry" in modules
    offenders = [line for module in modules for line in calls_without_clock(module)]
    assert offenders == [], "pass clock=host.clock:\n" + "\n".join(offenders)


def test_the_guard_sees_a_part_built_on_the_real_clock(tmp_path: Path) -> None:
    """The guard itself can fail: the voice feature as it was (``VoiceService`` on its default clock)."""
    source = (
        "from skills.voice import VoiceService\n"
        "def start(host):\n"
        "    return VoiceService(host.store, host.intake, metrics_registry=None)\n"
    )
    (tmp_path / "old_feature_voice.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        assert calls_without_clock("old_feature_voice", root=tmp_path) == [
            "old_feature_voice.py:3 VoiceService(...) without clock="
        ]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("old_feature_voice", None)
