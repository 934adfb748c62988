"""Shared state for sign-in and webhooks: access changes, sign-in failures, Twilio replays.

All three live in the store so they survive a restart and every node sees the same:
- ``access_changes``: a row per change to a user's access (signed out, disabled, new role, new password or
  token). Open event streams of that user re-check their credentials when one appears.
- ``sign_in_failures``: failed sign-ins per name, per client address and per pair, within a window.
- ``webhook_replays``: Twilio webhooks already handled, until they expire.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        31,
        """
CREATE TABLE access_changes (
    id {pk},
    user_name TEXT NOT NULL,
    changed_at {real} NOT NULL
);
CREATE INDEX access_changes_time ON access_changes(changed_at);
CREATE TABLE sign_in_failures (
    failure_key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failed_at {real} NOT NULL
);
CREATE INDEX sign_in_failures_time ON sign_in_failures(last_failed_at);
CREATE TABLE webhook_replays (
    replay_key TEXT PRIMARY KEY,
    expires_at {real} NOT NULL
);
CREATE INDEX webhook_replays_expiry ON webhook_replays(expires_at);
""",
    ),
]
