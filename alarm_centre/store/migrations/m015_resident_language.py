"""Repair residents' languages the registry could not read back.

Before writes were validated, ``store.upsert_resident`` stored whatever it was given; the demo seeded
``"language": "English"`` and ``"Welsh"``, and every registry read of those residents failed. A
language name the registry knows becomes its tag (``English`` -> ``en``, ``Welsh`` -> ``cy``, see
:data:`devices.registry.LANGUAGE_NAMES`); any other value that is not a language tag (or not text) is
removed, so the resident reads back with the default ``en-GB`` and an installer can set it again.
"""

from __future__ import annotations

from devices.registry import LANGUAGE_NAMES


def _case(value: str) -> str:
    whens = " ".join(f"WHEN '{name}' THEN '{tag}'" for name, tag in sorted(LANGUAGE_NAMES.items()))
    return f"CASE {value} {whens} END"


def _names() -> str:
    return ", ".join(f"'{name}'" for name in sorted(LANGUAGE_NAMES))


_SQLITE_VALUE = "trim(json_extract(data, '$.language'))"
_SQLITE_ALNUM = "[A-Za-z0-9]"
#: Each clause is one way a value breaks ``devices.registry.LANGUAGE_RE`` (SQLite has no regex).
_SQLITE_NOT_A_TAG = " OR ".join(
    [
        f"length({_SQLITE_VALUE}) > 35",
        f"{_SQLITE_VALUE} GLOB '*[^A-Za-z0-9-]*'",
        f"NOT ({_SQLITE_VALUE} GLOB '[A-Za-z][A-Za-z]' OR {_SQLITE_VALUE} GLOB '[A-Za-z][A-Za-z][A-Za-z]' "
        f"OR {_SQLITE_VALUE} GLOB '[A-Za-z][A-Za-z]-*' OR {_SQLITE_VALUE} GLOB '[A-Za-z][A-Za-z][A-Za-z]-*')",
        f"{_SQLITE_VALUE} GLOB '*-' OR {_SQLITE_VALUE} GLOB '*--*'",
        f"{_SQLITE_VALUE} GLOB '*-{_SQLITE_ALNUM}' OR {_SQLITE_VALUE} GLOB '*-{_SQLITE_ALNUM}-*'",
        f"{_SQLITE_VALUE} GLOB '*{_SQLITE_ALNUM * 9}*'",
    ]
)

SQLITE = f"""
UPDATE residents SET data = json_set(data, '$.language', {_case(f"lower({_SQLITE_VALUE})")})
WHERE json_valid(data) AND json_type(data, '$.language') = 'text'
AND lower({_SQLITE_VALUE}) IN ({_names()});
UPDATE residents SET data = json_remove(data, '$.language')
WHERE json_valid(data) AND json_type(data, '$.language') IS NOT NULL
AND (json_type(data, '$.language') <> 'text' OR {_SQLITE_NOT_A_TAG})
"""

_PG_VALUE = "btrim(data::jsonb->>'language')"
POSTGRESQL = f"""
UPDATE residents SET data = jsonb_set(data::jsonb, '{{language}}',
    to_jsonb(({_case(f"lower({_PG_VALUE})")})::text))::text
WHERE jsonb_typeof(data::jsonb->'language') = 'string' AND lower({_PG_VALUE}) IN ({_names()});
UPDATE residents SET data = (data::jsonb - 'language')::text
WHERE jsonb_typeof(data::jsonb->'language') IS NOT NULL
AND (jsonb_typeof(data::jsonb->'language') <> 'string' OR length({_PG_VALUE}) > 35
     OR {_PG_VALUE} !~ '^[A-Za-z]{{2,3}}(-[A-Za-z0-9]{{2,8}})*$')
"""

MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (15, {"sqlite": SQLITE, "postgresql": POSTGRESQL}),
]
