"""Strict RFC 8259 JSON for every input and output of the bridge, sans-I/O (stdlib only).

Python's ``json`` is lenient where the bridge must not be: it reads ``NaN``, ``Infinity`` and
``-Infinity``, turns ``1e999`` into ``inf``, keeps the *last* of two equal keys (so
``{"type":"pendant","type":"heartbeat"}`` reads as a heartbeat), recurses until ``RecursionError`` on
deeply nested arrays, and writes ``NaN`` back out, which no browser's ``JSON.parse`` accepts.

:func:`loads` refuses all of these with one error, :class:`JSONRefused`, whose ``code`` says which
rule was broken (for metrics and tests) and whose message is meant for the sender. :func:`dumps`
refuses to write a non-finite number; :func:`safe_dumps` writes ``null`` in its place (for answers
and stored text, where refusing would blank a reader's screen instead). :func:`repair` rewrites text
stored before these rules into strict JSON.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

#: Deepest nesting of arrays and objects accepted. Real payloads nest a handful of levels; the limit
#: keeps far below the interpreter's recursion limit, here and in every reader downstream.
MAX_DEPTH = 64
#: Longest integer literal accepted: beyond this it cannot be read as a double anywhere (it overflows).
MAX_INT_DIGITS = 309

_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class Refusal(enum.StrEnum):
    """Which rule a refused document broke."""

    ENCODING = "encoding"
    SYNTAX = "syntax"
    NON_FINITE = "non_finite"
    DUPLICATE_KEY = "duplicate_key"
    TOO_DEEP = "too_deep"


class JSONRefused(ValueError):
    """A document that is not strict JSON; the message says why, ``code`` which rule it broke."""

    def __init__(self, message: str, code: Refusal) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON number", Refusal.NON_FINITE)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONRefused(f"number {text[:24]} overflows", Refusal.NON_FINITE)
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONRefused(f"integer of {len(text)} digits overflows", Refusal.NON_FINITE)
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONRefused(f"duplicate key {key[:40]!r}", Refusal.DUPLICATE_KEY)
            seen.add(key)
    return result


def _check_depth(text: str, limit: int) -> None:
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                raise JSONRefused(f"nested deeper than {limit} levels", Refusal.TOO_DEEP)
        elif token in "]}":
            depth -= 1


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


#: One decoder for every call (``json.loads`` with hooks would build a new one each time).
_DECODER = json.JSONDecoder(
    parse_constant=_constant, parse_float=_float, parse_int=_int, object_pairs_hook=_object
)


def loads(document: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON (bytes must be UTF-8); raise :class:`JSONRefused` for anything else.

    Refused besides syntax errors: ``NaN``/``Infinity``/``-Infinity``, numbers that overflow a double
    (``1e999``), an object with the same key twice, nesting deeper than ``max_depth``, and strings
    holding a lone UTF-16 surrogate (``"\\ud800"``, which no store or UTF-8 writer can take).
    """
    if isinstance(document, bytes | bytearray):
        try:
            text = bytes(document).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONRefused(f"not UTF-8 (byte {exc.start})", Refusal.ENCODING) from None
    else:
        text = document
    _check_depth(text, max_depth)
    if text.startswith("\ufeff"):
        raise JSONRefused("not JSON: Unexpected UTF-8 BOM at position 0", Refusal.SYNTAX)
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JSONRefused(f"not JSON: {exc.msg} at position {exc.pos}", Refusal.SYNTAX) from None
    except RecursionError:  # the depth check makes this unreachable; belt and braces
        raise JSONRefused("nested too deeply", Refusal.TOO_DEEP) from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise JSONRefused("not UTF-8: a string holds a lone UTF-16 surrogate", Refusal.ENCODING)
    return value


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None, **options: Any) -> str:
    """Compact strict JSON; ValueError for a non-finite number (never writes ``NaN``)."""
    options.setdefault("separators", (",", ":"))
    return json.dumps(value, allow_nan=False, default=default, **options)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def safe_dumps(value: Any, *, default: Callable[[Any], Any] | None = None, **options: Any) -> str:
    """Like :func:`dumps`, but a non-finite number becomes ``null`` instead of an error.

    For answers and stored text: what a reader gets is always strict JSON, and one bad value can
    never make the whole document unreadable.
    """
    try:
        return dumps(value, default=default, **options)
    except ValueError:
        return dumps(finite(value), default=default, **options)


def column_text(value: Any) -> str:
    """A stored JSON column's text: :func:`safe_dumps`, anything JSON has no type for written as its
    ``str`` (a datetime, an enum member). The one rule every store module writes ``data`` columns by."""
    return safe_dumps(value, default=str)


def dig(document: Any, *keys: str) -> Any:
    """The value at ``keys`` inside decoded JSON, or None where a key is missing or a level is not an
    object (``dig(envelope, "context", "System", "device", "deviceId")``)."""
    for key in keys:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def repair(text: str) -> str | None:
    """Stored JSON text rewritten as strict JSON, or None when it needs no change (or is not JSON).

    Text written before the strict rules may hold ``NaN``/``Infinity``/``-Infinity`` (or ``1e999``,
    which was read as infinity); each becomes ``null``. Nothing else in the text changes meaning.
    """
    try:
        value = json.loads(text)
        if not _has_non_finite(value):
            return None
        return dumps(finite(value))
    except (ValueError, RecursionError):
        return None
