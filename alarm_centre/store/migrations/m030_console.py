"""Console sign-in: server-side sessions (only a hash of each session token is stored)."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        30,
        """
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    created_at {real} NOT NULL,
    last_seen_at {real} NOT NULL,
    expires_at {real} NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions(user_name);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
""",
    ),
]
