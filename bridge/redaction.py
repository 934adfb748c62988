"""Secrets and personal data never reach a screen or a log: the one home of redaction.

- :func:`redact` for what the CLI prints: a URL keeps its scheme, user, host, port and path but loses its
  password (``mqtt://bridge:***@host``), also a ``password=`` in its query (libpq accepts one there). A
  configuration key that names a secret (``twilio.auth_token``, ``credentials.bridge_password``,
  anything ending in ``password``, ``token``, ``secret`` or ``key``) shows ``***`` when it is set. The
  ``run`` banner and ``check-config`` both print through it.
- :class:`PersonalDataFilter` for the log: every phone number in a record (its message, its arguments,
  its traceback) is masked to its last three digits (:func:`devices.phone.mask_numbers`), whichever
  library wrote it. :func:`install_log_redaction` puts it on the handlers every command logs through.
  Names, SMS texts and medical notes cannot be recognised in free text, so no call site logs them
  (tests/privacy/test_log_redaction.py runs the paths that once did and scans the log); this filter is
  the net under the numbers.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from devices.phone import mask_numbers

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


class PersonalDataFilter(logging.Filter):
    """Masks phone numbers in every record that passes (message, arguments, traceback)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is logging's to report, not ours to drop
            return True
        record.msg = mask_numbers(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_numbers(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> PersonalDataFilter:
    """Put one :class:`PersonalDataFilter` on every handler of ``logger`` (the root logger): records of
    every module and library pass through them."""
    target = logger or logging.getLogger()
    found = next((f for h in target.handlers for f in h.filters if isinstance(f, PersonalDataFilter)), None)
    shield = found or PersonalDataFilter()
    for handler in target.handlers:
        if shield not in handler.filters:
            handler.addFilter(shield)
    return shield
