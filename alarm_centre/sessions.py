"""Console sign-in: argon2 password hashes, server-side sessions with a CSRF token, and a sign-in throttle.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alarm_centre.alerts.model import Role, User
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import NotFound, PostCommit, Tx
from alarm_centre.store.users import hash_token

log = logging.getLogger(__name__)
_HASHER = PasswordHasher()
#: Verified when the user does not exist, so an unknown name costs as much time as a wrong password.
_DUMMY_HASH = _HASHER.hash("not-a-real-password-" + secrets.token_hex(8))
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
#: Names longer than this share a failure count (the form refuses them anyway).
MAX_NAME_KEY = 80
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
        await store.users.record_access_change(tx, post, name)

    await store.transaction(work)


async def set_disabled(store: AlertStore, name: str, disabled: bool) -> None:
    """Disable (or re-enable) a user; disabling ends their console sessions."""

    async def work(tx: Tx, post: PostCommit) -> None:
        changed = await tx.execute("UPDATE users SET disabled = ? WHERE name = ?", int(disabled), name)
        if changed != 1:
            raise NotFound(f"no user {name!r}")
        if disabled:
            await tx.execute("DELETE FROM console_sessions WHERE user_name = ?", name)
        await store.users.record_access_change(tx, post, name)

    await store.transaction(work)


async def list_users(store: AlertStore) -> list[dict[str, Any]]:
    async with store.read() as tx:
        rows = await tx.fetchall("SELECT name, role, disabled, password_hash FROM users ORDER BY name")
    return [
        {
            "name": r["name"],
            "role": r["role"],
            "disabled": bool(r["disabled"]),
            "password": r["password_hash"] is not None,
        }
        for r in rows
    ]


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
                hash_token(token),
                user.name,
                csrf,
                address[:64],
                now,
                now,
                expires,
            )

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
                "FROM console_sessions s JOIN users u ON u.name = s.user_name WHERE s.token_hash = ?",
                key,
            )
        if row is None or row["disabled"]:
            return None
        if now >= row["expires_at"] or now >= row["last_seen_at"] + self.idle_timeout_s:
            await self.end(token)
            return None
        last_seen = float(row["last_seen_at"])
        if now - last_seen >= min(TOUCH_EVERY_S, self.idle_timeout_s / 4):
            last_seen = now

            async def touch(tx: Tx, post: PostCommit) -> None:
                await tx.execute(
                    "UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?", now, key
                )

            await self._store.transaction(touch)
        return Session(
            User(row["name"], Role(row["role"])),
            row["csrf"],
            float(row["expires_at"]),
            last_seen + self.idle_timeout_s,
        )

    @property
    def extension_s(self) -> float:
        """How far one "Stay signed in" reaches: an idle period, never more than a whole session."""
        return min(self.ttl_s, self.idle_timeout_s)

    async def extend(self, token: str) -> Session | None:
        """The person at the screen asked for more time (warned before the session ends, WCAG 2.2.1).

        Both deadlines move to at least :attr:`extension_s` from now; a session may be extended again
        and again, each time by someone answering the warning. None if the session has already ended.
        """
        session = await self.lookup(token)
        if session is None:
            return None
        key = hash_token(token)
        now = self.clock()
        expires = max(session.expires_at, now + self.extension_s)

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "UPDATE console_sessions SET last_seen_at = ?, expires_at = ? WHERE token_hash = ?",
                now,
                expires,
                key,
            )

        await self._store.transaction(work)
        return Session(session.user, session.csrf, expires, now + self.idle_timeout_s)

    async def live_user(self, token: str) -> User | None:
        """For long-lived streams: the session's user now, or None (signed out, expired, disabled).

        The stream compares the answer with the user it started as, so a new role ends it too.
        """
        key = hash_token(token)
        try:
            async with self._store.read() as tx:
                row = await tx.fetchone(
                    "SELECT s.expires_at, s.last_seen_at, u.name, u.role, u.disabled FROM console_sessions s "
                    "JOIN users u ON u.name = s.user_name WHERE s.token_hash = ?",
                    key,
                )
        except Exception as exc:  # the store is down or closing: end the stream; the console reconnects
            log.warning("could not check a console session: %s", exc)
            return None
        now = self.clock()
        if row is None or row["disabled"] or now >= row["expires_at"]:
            return None
        # An open live queue is activity: keep the idle deadline moving while the stream is connected.
        if now - float(row["last_seen_at"]) >= TOUCH_EVERY_S:

            async def touch(tx: Tx, post: PostCommit) -> None:
                await tx.execute(
                    "UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?", now, key
                )

            await self._store.transaction(touch)
        return User(row["name"], Role(row["role"]))

    async def end(self, token: str) -> None:
        """End a session; its user's open streams re-check their credentials (on every node)."""
        key = hash_token(token)

        async def work(tx: Tx, post: PostCommit) -> None:
            row = await tx.fetchone("SELECT user_name FROM console_sessions WHERE token_hash = ?", key)
            await tx.execute("DELETE FROM console_sessions WHERE token_hash = ?", key)
            if row is not None:
                await self._store.users.record_access_change(tx, post, str(row["user_name"]))

        await self._store.transaction(work)


@dataclass(frozen=True, slots=True)
class SignInPace:
    """What the throttle says about one sign-in attempt before the password is checked."""

    #: Seconds this client must wait before trying again (0: it may try now). Only the client's own
    #: failures (from its address) ever set this, never a stranger's.
    retry_after: float
    #: Seconds to hold the answer back before checking the password, right or wrong: the name has been
    #: guessed at from many places. Slows guessing down without refusing the right password.
    delay: float


class SignInThrottle:
    """Failed sign-ins counted in the store per name, per client address and per (name, address).

    - A client address that keeps failing (``per_address`` failures for any names, or ``per_name``
      failures for one name) must back off: 1 s, then 2, 4, ... up to ``window_s``, after its last failure.
      Only that address is refused (429); staff elsewhere are not.
    - A name that keeps failing from everywhere (``per_name`` failures in all) is never refused: every
      answer for it -- right password or wrong -- is held back, 0.25 s doubling up to ``max_delay_s``.
    - Failures are forgotten ``window_s`` after the last one; a successful sign-in forgets that
      client's failures for the name. The counts live in the store, so they survive a restart and are
      the same on every node.
    """

    def __init__(
        self,
        store: AlertStore,
        *,
        per_name: int,
        per_address: int,
        window_s: float,
        max_delay_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.per_name = per_name
        self.per_address = per_address
        self.window_s = window_s
        self.max_delay_s = max_delay_s
        #: Epoch seconds now; tests freeze it so back-offs do not run out under them.
        self.clock = clock

    @staticmethod
    def _keys(name: str, address: str) -> tuple[str, str, str]:
        folded = name.lower()[:MAX_NAME_KEY]
        return f"name:{folded}", f"addr:{address[:64]}", f"pair:{address[:64]}|{folded}"

    async def pace(self, name: str, address: str) -> SignInPace:
        """How this attempt must be treated: refused for a while, delayed, or let straight through."""
        name_key, addr_key, pair_key = self._keys(name, address)
        now = self.clock()
        async with self._store.read() as tx:
            rows = await tx.fetchall(
                "SELECT failure_key, failures, last_failed_at FROM sign_in_failures "
                "WHERE failure_key IN (?, ?, ?) AND last_failed_at > ?",
                name_key,
                addr_key,
                pair_key,
                now - self.window_s,
            )
        found = {r["failure_key"]: (int(r["failures"]), float(r["last_failed_at"])) for r in rows}
        retry_after = 0.0
        for key, limit in ((addr_key, self.per_address), (pair_key, self.per_name)):
            failures, last = found.get(key, (0, 0.0))
            if failures >= limit:
                backoff = min(2.0 ** (failures - limit), self.window_s)
                retry_after = max(retry_after, last + backoff - now)
        name_failures = found.get(name_key, (0, 0.0))[0]
        delay = 0.0
        if name_failures >= self.per_name:
            delay = min(0.25 * 2.0 ** min(name_failures - self.per_name, 32), self.max_delay_s)
        return SignInPace(retry_after=max(retry_after, 0.0), delay=delay)

    async def failed(self, name: str, address: str) -> None:
        """Count a failed attempt against the name, the address and the pair."""
        now = self.clock()
        stale = now - self.window_s

        async def work(tx: Tx, post: PostCommit) -> None:
            for key in self._keys(name, address):
                await tx.execute(
                    "INSERT INTO sign_in_failures (failure_key, failures, last_failed_at) VALUES (?, 1, ?) "
                    "ON CONFLICT (failure_key) DO UPDATE SET "
                    "failures = CASE WHEN sign_in_failures.last_failed_at > ? "
                    "THEN sign_in_failures.failures + 1 ELSE 1 END, last_failed_at = ?",
                    key,
                    now,
                    stale,
                    now,
                )
            await tx.execute("DELETE FROM sign_in_failures WHERE last_failed_at <= ?", stale)

        await self._store.transaction(work)

    async def succeeded(self, name: str, address: str) -> None:
        """Forget this client's failures for the name (the name-wide count runs out with its window)."""
        pair_key = self._keys(name, address)[2]

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute("DELETE FROM sign_in_failures WHERE failure_key = ?", pair_key)

        await self._store.transaction(work)
