"""Users as the store keeps them: API tokens (stored as hashes), roles, and the access changes that
end a user's open streams on every node."""

from __future__ import annotations

import hashlib
import secrets

from alarm_centre.alerts.model import Role, User
from alarm_centre.store.tx import Conflict, Database, PostCommit, Tx
from alarm_centre.store.tx import now as _now

#: Access-change rows are kept this long (a node that was down longer re-reads nothing it needs:
#: its streams ended with it).
ACCESS_KEEP_S = 3600.0


def hash_token(token: str) -> str:
    """API tokens are 256-bit random values, so a plain SHA-256 is a safe way to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """The users table's store side (``store.users``); passwords and sessions: ``alarm_centre.sessions``."""

    def __init__(self, store: Database) -> None:
        self._store = store

    async def add(self, name: str, role: Role, *, replace: bool = True) -> str:
        """Create a user (or give an existing one a new role and token); returns the new API token.

        With ``replace=False`` an existing user is left alone and :class:`Conflict` raised.
        """
        token = secrets.token_urlsafe(32)

        async def work(tx: Tx, post: PostCommit) -> None:
            existing = await tx.fetchone("SELECT name FROM users WHERE name = ?", name)
            if existing is not None and not replace:
                raise Conflict(f"user {name!r} already exists")
            if existing is None:
                await tx.execute(
                    "INSERT INTO users (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                    name,
                    role.value,
                    hash_token(token),
                    _now(),
                )
            else:
                await tx.execute(
                    "UPDATE users SET role = ?, token_hash = ? WHERE name = ?",
                    role.value,
                    hash_token(token),
                    name,
                )
                await self.record_access_change(tx, post, name)  # new role and token: streams re-check

        await self._store.transaction(work)
        return token

    async def for_token(self, token: str) -> User | None:
        async with self._store.read() as tx:
            row = await tx.fetchone(
                "SELECT name, role FROM users WHERE token_hash = ? AND disabled = 0", hash_token(token)
            )
        return None if row is None else User(row["name"], Role(row["role"]))

    async def record_access_change(self, tx: Tx, post: PostCommit, name: str) -> None:
        """Note in the transaction that ``name``'s access changed, so their open streams re-check it."""
        now = _now()
        await tx.execute("INSERT INTO access_changes (user_name, changed_at) VALUES (?, ?)", name, now)
        await tx.execute("DELETE FROM access_changes WHERE changed_at < ?", now - ACCESS_KEEP_S)
        post.users.add(name)
