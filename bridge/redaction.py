"""Secrets never reach a screen or a log: one function that redacts them from what the CLI prints.

A URL keeps its scheme, user, host, port and path but loses its password (``mqtt://bridge:***@host``),
also a ``password=`` in its query (libpq accepts one there). A configuration key that names a secret
(``twilio.auth_token``, ``credentials.bridge_password``, anything ending in ``password``, ``token``,
``secret`` or ``key``) shows ``***`` when it is set. The ``run`` banner and ``check-config`` both print
through :func:`redact`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: Configuration keys whose values are secrets (matched on the last part of the key path).
SECRET_KEY_RE = re.compile(r"(?:^|_)(?:password|passwd|passphrase|secret|token|key)s?$", re.IGNORECASE)
_SECRET_QUERY = {"password", "passwd", "sslpassword", "token", "secret"}


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every secret masked: URL passwords, and values of keys that name a secret.

    Dicts and lists are walked (dict keys decide), so a whole configuration dump can be passed in.
    """
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if value and SECRET_KEY_RE.search(key):
            return MASK
        if "://" in value:
            return _redact_url(value)
    return value


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show none of it but the scheme
        return url.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in _SECRET_QUERY for name, _ in pairs):
            query = urlencode(
                [(name, MASK if name.lower() in _SECRET_QUERY else v) for name, v in pairs], safe="*"
            )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
