"""Per-device MQTT credentials: the bridge issues a password per unit and writes Mosquitto's password
and ACL files so each unit can publish only on its own topics.

The password file uses Mosquitto 2's PBKDF2-SHA512 format, ``user:$7$101$<salt b64>$<hash b64>`` (what
``mosquitto_passwd`` writes: 12-byte salt, 64-byte key, 101 iterations by default). Only the hash is
kept in the store; the password is shown once to the installer. The ACL file gives the bridge's own
user the whole tree and everyone else pattern rules with ``%u`` (the username is the device id)::

    pattern write telecare/v1/%u/event      pattern read telecare/v1/%u/ack
    pattern write telecare/v1/%u/status     pattern read telecare/v1/%u/cmd

Files are replaced atomically, then ``credentials.reload_command`` (e.g. ``systemctl reload mosquitto``)
makes the broker read them again. A retired unit's line disappears, so it can no longer connect.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from alarm_centre.registry import Registry

if TYPE_CHECKING:
    from bridge.config import CredentialsConfig

log = logging.getLogger(__name__)

SALT_BYTES = 12


def mosquitto_hash(password: str, *, iterations: int = 101, salt: bytes | None = None) -> str:
    """A Mosquitto 2 ``$7$`` PBKDF2-SHA512 hash of ``password``."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def check_mosquitto_hash(password: str, encoded: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash."""
    try:
        _, kind, iterations, salt, key = encoded.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(key)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return secrets.compare_digest(expected, got)


def new_password() -> str:
    """A random 192-bit password, URL-safe so it can be typed into a unit's web page."""
    return secrets.token_urlsafe(24)


def render_password_file(entries: list[tuple[str, str]]) -> str:
    """``user:hash`` lines; users are device ids (no ``:``), so no escaping is needed."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in entries)


def render_acl(topic_root: str, bridge_username: str) -> str:
    root = f"{topic_root}/v1"
    return (
        "# Written by telecare-bridge: do not edit; it is rewritten when credentials change.\n"
        f"user {bridge_username}\n"
        f"topic readwrite {root}/#\n"
        "\n"
        "# Each unit (username = device id) publishes only as itself and reads only its own replies.\n"
        f"pattern write {root}/%u/event\n"
        f"pattern write {root}/%u/status\n"
        f"pattern read {root}/%u/ack\n"
        f"pattern read {root}/%u/cmd\n"
    )


def write_atomically(path: Path, text: str, mode: int = 0o640, group: str = "") -> None:
    """Replace ``path`` in one step; with ``group`` (e.g. ``mosquitto``) the broker's group may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if group:
            shutil.chown(tmp, group=group)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CredentialManager:
    """Issues credentials through the registry and keeps the broker's files in step with it."""

    def __init__(
        self, registry: Registry, config: CredentialsConfig, *, topic_root: str, bridge_password: str
    ) -> None:
        if not bridge_password:
            raise ValueError(
                "credentials.enabled needs the bridge's own broker password: put it in mqtt.url "
                "(mqtt://telecare-bridge:PASSWORD@host:1883) or credentials.bridge_password"
            )
        self._registry = registry
        self._config = config
        self._topic_root = topic_root
        self._bridge_hash = mosquitto_hash(bridge_password, iterations=config.iterations)
        self._lock = asyncio.Lock()

    @property
    def password_file(self) -> Path:
        return Path(self._config.password_file)

    @property
    def acl_file(self) -> Path:
        return Path(self._config.acl_file)

    async def issue(self, device_id: str, *, actor: str, source: str) -> str:
        """A new password for a unit (replacing any earlier one); the files are rewritten before returning."""
        password = new_password()
        hashed = await asyncio.to_thread(mosquitto_hash, password, iterations=self._config.iterations)
        await self._registry.store_credential(device_id, hashed, actor=actor, source=source)
        await self.sync()
        return password

    async def sync(self) -> None:
        """Rewrite the password and ACL files from the store, then ask the broker to reload them."""
        async with self._lock:
            entries = [
                (self._config.bridge_username, self._bridge_hash),
                *await self._registry.active_credentials(),
            ]
            group = self._config.file_group
            await asyncio.to_thread(
                write_atomically, self.password_file, render_password_file(entries), 0o640, group
            )
            await asyncio.to_thread(
                write_atomically,
                self.acl_file,
                render_acl(self._topic_root, self._config.bridge_username),
                0o640,
                group,
            )
            await self._reload()

    async def _reload(self) -> None:
        command = self._config.reload_command.strip()
        if not command:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(command), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            async with asyncio.timeout(30):
                _, err = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            log.error("credentials.reload_command %r failed: %s", command, exc)
            return
        if proc.returncode != 0:
            log.error(
                "credentials.reload_command %r exited %s: %s",
                command,
                proc.returncode,
                err.decode(errors="replace").strip()[:500],
            )
