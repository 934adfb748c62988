"""Per-device MQTT credentials: the bridge issues a password per unit and writes Mosquitto's password
and ACL files so each unit can publish only on its own topics.

The password file uses Mosquitto 2's PBKDF2-SHA512 format, ``user:$7$101$<salt b64>$<hash b64>`` (what
``mosquitto_passwd`` writes: 12-byte salt, 64-byte key, 101 iterations by default). Only the hash is
kept in the store; the password is shown once to the installer. The ACL gives the bridge's own user
the whole tree and everyone else pattern rules with ``%u`` (the username is the device id)::

    pattern write telecare/v1/%u/event      pattern read telecare/v1/%u/ack
    pattern write telecare/v1/%u/alarm      pattern read telecare/v1/%u/cmd
    pattern write telecare/v1/%u/status

:func:`broker_acl` is the one definition of those rules: :func:`render_acl` writes it as Mosquitto's
``acl_file`` and the embedded broker (``bridge/transports/embedded_broker.py``) enforces it with
:func:`acl_allows`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from alarm_centre.registry.service import Registry
from alarm_centre.store.tx import Conflict

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


def read_password_file(text: str) -> dict[str, str]:
    """The ``user:hash`` lines of a Mosquitto password file, by user; blank and ``#`` lines are skipped."""
    hashes = {}
    for line in text.splitlines():
        user, sep, hashed = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            hashes[user] = hashed
    return hashes


#: What a unit (username = device id) may do, on its own topics only: publish its events, its
#: priority-1 alarms (wire contract v1.1) and its will; read the bridge's acks and commands to it.
UNIT_PUBLISHES = ("event", "alarm", "status")
UNIT_READS = ("ack", "cmd")

Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ACL line: ``user`` may ``access`` ``topic`` (an MQTT filter). With ``user`` None it is a
    pattern rule for every authenticated user, where ``%u`` in ``topic`` stands for the username."""

    access: Access
    topic: str
    user: str | None = None


def broker_acl(topic_root: str, bridge_username: str) -> tuple[AclRule, ...]:
    """The broker's whole ACL: the bridge reads and writes the tree, each unit only its own topics."""
    root = f"{topic_root}/v1"
    return (
        AclRule("readwrite", f"{root}/#", user=bridge_username),
        *(AclRule("write", f"{root}/%u/{kind}") for kind in UNIT_PUBLISHES),
        *(AclRule("read", f"{root}/%u/{kind}") for kind in UNIT_READS),
    )


def render_acl(topic_root: str, bridge_username: str) -> str:
    """:func:`broker_acl` in Mosquitto's ``acl_file`` syntax."""
    lines = ["# Written by telecare-bridge: do not edit; it is rewritten when credentials change."]
    rules = broker_acl(topic_root, bridge_username)
    for rule in (r for r in rules if r.user is not None):
        lines += [f"user {rule.user}", f"topic {rule.access} {rule.topic}"]
    unit_note = "# Each unit (username = device id) publishes only as itself and reads only its own replies."
    lines += ["", unit_note]
    lines += [f"pattern {r.access} {r.topic}" for r in rules if r.user is None]
    return "\n".join(lines) + "\n"


def topic_matches(topic: str, topic_filter: str) -> bool:
    """True when the concrete ``topic`` matches ``topic_filter`` (``+`` one level, ``#`` the rest)."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    for i, level in enumerate(wanted):
        if level == "#":
            return True
        if i >= len(levels) or level not in ("+", levels[i]):
            return False
    return len(levels) == len(wanted)


def filter_within(topic_filter: str, allowed: str) -> bool:
    """True when every topic ``topic_filter`` can match is matched by ``allowed`` (a subscription
    no broader than the rule; ``#`` is covered only by ``#``, ``+`` by ``+`` or ``#``)."""
    levels, rule = topic_filter.split("/"), allowed.split("/")
    for i, level in enumerate(rule):
        if level == "#":
            return True
        if i >= len(levels) or levels[i] == "#":
            return False
        if level != "+" and level != levels[i]:
            return False
    return len(levels) == len(rule)


def acl_allows(
    rules: tuple[AclRule, ...],
    username: str | None,
    topic: str,
    access: Literal["read", "write"],
    *,
    subscribe: bool = False,
) -> bool:
    """Whether ``username`` may ``access`` ``topic`` under ``rules``, as Mosquitto decides it.

    ``subscribe``: ``topic`` is a subscription filter, allowed only if no broader than a rule.
    ``username`` None is an anonymous client: pattern rules apply as if it were any unit (``%u`` is
    ``+``), which only the embedded broker's demo mode (``mqtt.embedded_allow_anonymous``) lets in.
    """
    for rule in rules:
        if access not in rule.access:  # "readwrite" contains both
            continue
        if rule.user is not None:
            if rule.user != username:
                continue
            allowed = rule.topic
        elif username is None:
            allowed = rule.topic.replace("%u", "+")
        elif any(c in username for c in "/+#"):
            continue  # Mosquitto never substitutes such a username into a pattern
        else:
            allowed = rule.topic.replace("%u", username)
        if filter_within(topic, allowed) if subscribe else topic_matches(topic, allowed):
            return True
    return False


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
        self,
        registry: Registry,
        config: CredentialsConfig,
        *,
        topic_root: str,
        bridge_password: str,
        embedded: bool = False,
    ) -> None:
        """``embedded``: the broker is the bridge's own (it knows the bridge's user in memory), so the
        password file may go without the bridge's line when no bridge password is configured."""
        if not bridge_password and not embedded:
            raise ValueError(
                "credentials.enabled needs the bridge's own broker password: put it in mqtt.url "
                "(mqtt://telecare-bridge:PASSWORD@host:1883) or credentials.bridge_password"
            )
        self._registry = registry
        self._config = config
        self._topic_root = topic_root
        self._bridge_hash = (
            mosquitto_hash(bridge_password, iterations=config.iterations) if bridge_password else ""
        )
        self._lock = asyncio.Lock()

    @property
    def password_file(self) -> Path:
        return Path(self._config.password_file)

    @property
    def acl_file(self) -> Path:
        return Path(self._config.acl_file)

    async def issue(self, device_id: str, *, actor: str, source: str) -> str:
        """A new password for a unit (replacing any earlier one); the files are rewritten before returning."""
        if device_id == self._config.bridge_username:
            raise Conflict(f"{device_id!r} is the bridge's own broker user; a unit cannot have that name")
        password = new_password()
        hashed = await asyncio.to_thread(mosquitto_hash, password, iterations=self._config.iterations)
        await self._registry.store_credential(device_id, hashed, actor=actor, source=source)
        await self.sync()
        return password

    async def sync(self) -> None:
        """Rewrite the password and ACL files from the store, then ask the broker to reload them."""
        async with self._lock:
            bridge_user = self._config.bridge_username
            entries = [(bridge_user, self._bridge_hash)] if self._bridge_hash else []
            # A unit registered under the bridge's user name never gets the bridge's rights.
            entries += [(u, h) for u, h in await self._registry.active_credentials() if u != bridge_user]
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
