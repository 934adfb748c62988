"""Console sign-in: argon2 password hashes, server-side sessions with a CSRF token, and a login rate limit.

A session is a 256-bit random token in an HttpOnly cookie; the store keeps only its SHA-256, the user,
a per-session CSRF token, and two deadlines (absolute ``expires_at`` and an idle limit on ``last_seen_at``).
Every lookup joins the users table, so disabling a user or changing their role takes effect at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alarm_centre.model import Role, User
from alarm_centre.store.base import AlertStore, NotFound, PostCommit, Tx, hash_token

log = logging.getLogger(__name__)
_HASHER = PasswordHasher()
#: Verified when the user does not exist, so an unknown name costs as much time as a wrong password.
_DUMMY_HASH = _HASHER.hash("not-a-real-password-" + secrets.token_hex(8))
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
#: Update ``last_seen_at`` at most this often (seconds), so reads do not become writes.
TOUCH_EVERY_S = 30.0


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``; raises ValueError if it is too short or too long."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; always does the argon2 work, even for a missing hash."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def set_password(store: AlertStore, name: str, password: str) -> None:
    """Give an existing user a new password (and end their console sessions). NotFound if no such user."""
    hashed = await asyncio.to_thread(hash_password, password)

    async def work(tx: Tx, post: PostCommit) -> None:
        changed = await tx.execute("UPDATE users SET password_hash = ? WHERE name = ?", hashed, name)
        if changed != 1:
            raise NotFound(f"no user {name!r}")
        await tx.execute("DELETE FROM console_sessions WHERE user_name = ?", name)

    await store.transaction(work)


async def set_disabled(store: AlertStore, name: str, disabled: bool) -> None:
    """Disable (or re-enable) a user; disabling ends their console sessions."""

    async def work(tx: Tx, post: PostCommit) -> None:
        changed = await tx.execute("UPDATE users SET disabled = ? WHERE name = ?", int(disabled), name)
        if changed != 1:
            raise NotFound(f"no user {name!r}")
        if disabled:
            await tx.execute("DELETE FROM console_sessions WHERE user_name = ?", name)

    await store.transaction(work)


async def list_users(store: AlertStore) -> list[dict[str, Any]]:
    async with store.read() as tx:
        rows = await tx.fetchall("SELECT name, role, disabled, password_hash FROM users ORDER BY name")
    return [{"name": r["name"], "role": r["role"], "disabled": bool(r["disabled"]),
             "password": r["password_hash"] is not None} for r in rows]


async def check_login(store: AlertStore, name: str, password: str) -> User | None:
    """The user if ``name``/``password`` are right and the user is enabled; None otherwise."""
    async with store.read() as tx:
        row = await tx.fetchone("SELECT name, role, password_hash, disabled FROM users WHERE name = ?", name)
    stored = None if row is None or row["disabled"] else row["password_hash"]
    ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or row is None:
        return None
    return User(row["name"], Role(row["role"]))


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf: str
    expires_at: float
    idle_deadline: float

    @property
    def deadline(self) -> float:
        """The moment (epoch seconds) this session stops working unless it is used again."""
        return min(self.expires_at, self.idle_deadline)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionStore:
    """Console sessions kept in the alert store, so they survive a restart and work on every node."""

    def __init__(
        self,
        store: AlertStore,
        *,
        ttl_s: float,
        idle_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock  # wall-clock seconds; tests drive expiry with a clock of their own

    async def create(self, user: User, *, address: str) -> tuple[str, Session]:
        """Start a session; returns the cookie token (never stored) and the session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + self.ttl_s

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute("DELETE FROM console_sessions WHERE expires_at < ?", now)
            await tx.execute(
                "INSERT INTO console_sessions (token_hash, user_name, csrf, address, created_at, "
                "last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                hash_token(token), user.name, csrf, address[:64], now, now, expires)

        await self._store.transaction(work)
        return token, Session(user, csrf, expires, now + self.idle_timeout_s)

    async def lookup(self, token: str) -> Session | None:
        """The live session for a cookie token, or None (unknown, expired, idle too long, user disabled)."""
        if not 20 <= len(token) <= 128:
            return None
        key = hash_token(token)
        now = self.clock()
        async with self._store.read() as tx:
            row = await tx.fetchone(
                "SELECT s.csrf, s.expires_at, s.last_seen_at, u.name, u.role, u.disabled "
                "FROM console_sessions s JOIN users u ON u.name = s.user_name WHERE s.token_hash = ?", key)
        if row is None or row["disabled"]:
            return None
        if now >= row["expires_at"] or now >= row["last_seen_at"] + self.idle_timeout_s:
            await self.end(token)
            return None
        last_seen = float(row["last_seen_at"])
        if now - last_seen >= min(TOUCH_EVERY_S, self.idle_timeout_s / 4):
            last_seen = now

            async def touch(tx: Tx, post: PostCommit) -> None:
                await tx.execute("UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?",
                                 now, key)

            await self._store.transaction(touch)
        return Session(User(row["name"], Role(row["role"])), row["csrf"], float(row["expires_at"]),
                       last_seen + self.idle_timeout_s)

    async def still_valid(self, token: str) -> bool:
        """For long-lived streams: is the session still there, in time, and its user enabled?"""
        key = hash_token(token)
        try:
            async with self._store.read() as tx:
                row = await tx.fetchone(
                    "SELECT s.expires_at, s.last_seen_at, u.disabled FROM console_sessions s "
                    "JOIN users u ON u.name = s.user_name WHERE s.token_hash = ?", key)
        except Exception as exc:  # the store is down or closing: end the stream; the console reconnects
            log.warning("could not check a console session: %s", exc)
            return False
        now = self.clock()
        if row is None or row["disabled"] or now >= row["expires_at"]:
            return False
        # An open live queue is activity: keep the idle deadline moving while the stream is connected.
        if now - float(row["last_seen_at"]) >= TOUCH_EVERY_S:

            async def touch(tx: Tx, post: PostCommit) -> None:
                await tx.execute("UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?",
                                 now, key)

            await self._store.transaction(touch)
        return True

    async def end(self, token: str) -> None:
        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute("DELETE FROM console_sessions WHERE token_hash = ?", hash_token(token))

        await self._store.transaction(work)


class LoginLimiter:
    """Failed sign-ins allowed per user name and per client address within a sliding window."""

    def __init__(self, *, per_user: int, per_address: int, window_s: float) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until another attempt is allowed; 0 when one is allowed now."""
        now = time.monotonic()
        waits = [0.0]
        for key, limit in ((f"user:{name.lower()}", self.per_user), (f"addr:{address}", self.per_address)):
            times = self._recent(key, now)
            if len(times) >= limit:
                waits.append(times[-limit] + self.window_s - now)
        return max(waits)

    def failed(self, name: str, address: str) -> None:
        now = time.monotonic()
        if len(self._failures) > 100_000:  # bound memory under a spray of made-up names
            self._failures.clear()
        for key in (f"user:{name.lower()}", f"addr:{address}"):
            self._failures.setdefault(key, deque(maxlen=1000)).append(now)

    def succeeded(self, name: str) -> None:
        self._failures.pop(f"user:{name.lower()}", None)
