"""Plain HTML templates with escaping by default.

Templates are files in ``templates/`` using ``$name`` placeholders (``string.Template``). Every value
is HTML-escaped unless it is wrapped in :class:`Safe`, which is only ever built from escaped parts.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template

TEMPLATE_DIR = Path(__file__).parent / "templates"


class Safe(str):
    """Markup that is already escaped (built by this module or from escaped pieces)."""


def escape(value: object) -> Safe:
    """``value`` as text that is safe inside HTML element content and quoted attributes."""
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / name).read_text(encoding="utf-8"))


def render(template: str, /, **values: object) -> Safe:
    """Fill ``template``; every value is escaped unless it is ``Safe``."""
    return Safe(_template(template).substitute({k: escape(v) for k, v in values.items()}))
