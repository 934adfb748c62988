"""The embedded MQTT broker for the one-command start (amqtt), locked like the shipped Mosquitto.

Clients sign in with the same per-unit credentials the bridge writes for Mosquitto
(``credentials.password_file``, ``$7$`` PBKDF2 hashes, reread when the file changes) and are held to
the same ACL (:func:`bridge.credentials.broker_acl`): a unit publishes only its own ``event``,
``alarm`` and ``status`` and reads only its own ``ack`` and ``cmd``; only the bridge reads and writes
everything. The bridge's own user lives in memory (its password is generated per start unless
``credentials.bridge_password`` is set). Anonymous clients are refused unless
``mqtt.embedded_allow_anonymous`` (demo only) lets them in, and then they get a unit's rights on any
unit's topics, never the bridge's.

amqtt's own plugins cannot do this: ``FileAuthPlugin`` reads only argon2/bcrypt/sha512-crypt hashes,
not Mosquitto's ``$7$``, and ``TopicAccessControlListPlugin`` takes fixed per-user topic lists, with
no ``%u`` pattern. So two small plugins here use amqtt's hooks (``authenticate``,
``topic_filtering`` for publish, subscribe and every delivery), and :class:`_GuardedBroker` closes
three holes in amqtt 0.12.1 (docs/design-notes.md):

- it deletes or rewrites the session held under a client id *before* authenticating the newcomer,
  so a refused stranger could strip the bridge's or a unit's subscriptions, or swap its username;
- it publishes a client's will without checking the will topic against the ACL (dropped here, as
  Mosquitto drops it);
- it replays retained messages to clients that never subscribed to them, past the read ACL.

Other known limits (DESIGN.md): MQTT 3.1.1 only, no shared subscriptions, binds 0.0.0.0 unless told
otherwise (we always bind loopback), delivers QoS 0 as QoS 1. For production and for several bridge
nodes use Mosquitto or EMQX (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.utils import gen_client_id

from bridge.credentials import AclRule, acl_allows, broker_acl, check_mosquitto_hash, read_password_file

log = logging.getLogger(__name__)


class BrokerAccess:
    """Who may sign in to the embedded broker and what each client may do: the bridge's user (in
    memory), the units in the password file, anonymous clients only when allowed."""

    def __init__(
        self,
        *,
        topic_root: str,
        bridge_username: str,
        bridge_password: str,
        password_file: Path | None,
        allow_anonymous: bool,
    ) -> None:
        self.rules: tuple[AclRule, ...] = broker_acl(topic_root, bridge_username)
        self.bridge_username = bridge_username
        self._bridge_password = bridge_password
        self._password_file = password_file
        self.allow_anonymous = allow_anonymous
        self._hashes: dict[str, str] = {}
        self._file_stamp: tuple[int, int, int] | None = None
        self._missing_logged = False

    async def authenticate(self, username: str | None, password: str | None) -> bool:
        """True when the client may connect: a known user with its password, or anonymous if allowed."""
        if username is None:
            return self.allow_anonymous and password is None
        given = password or ""
        if username == self.bridge_username:
            return secrets.compare_digest(given.encode(), self._bridge_password.encode())
        hashed = (await self._unit_hashes()).get(username)
        if hashed is None:
            return False
        return await asyncio.to_thread(check_mosquitto_hash, given, hashed)

    def may_publish(self, username: str | None, topic: str) -> bool:
        return acl_allows(self.rules, username, topic, "write")

    def may_subscribe(self, username: str | None, topic_filter: str) -> bool:
        return acl_allows(self.rules, username, topic_filter, "read", subscribe=True)

    def may_receive(self, username: str | None, topic: str) -> bool:
        return acl_allows(self.rules, username, topic, "read")

    async def _unit_hashes(self) -> dict[str, str]:
        """The password file's ``user:hash`` lines, reread whenever the file changes on disk."""
        path = self._password_file
        if path is None:
            return {}
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            text = None
            if stamp != self._file_stamp:
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as exc:  # missing or unreadable: no unit signs in (never a stale, revoked one)
            if not self._missing_logged:
                log.warning("embedded broker: cannot read %s (%s): no unit can sign in", path, exc)
                self._missing_logged = True
            self._hashes, self._file_stamp = {}, None
            return self._hashes
        if text is not None:
            hashes = read_password_file(text)
            hashes.pop(self.bridge_username, None)  # the bridge signs in with its own password, not a unit's
            self._hashes, self._file_stamp, self._missing_logged = hashes, stamp, False
            log.info("embedded broker: %d unit credential(s) read from %s", len(hashes), path)
        return self._hashes


def _access(plugin: BaseAuthPlugin | BaseTopicPlugin) -> BrokerAccess:
    access = plugin.config.access
    assert isinstance(access, BrokerAccess)
    return access


class PasswordFilePlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """amqtt auth hook: Mosquitto-format credentials; a will on a topic the client may not publish to
    is dropped (amqtt would publish it unchecked when the client vanishes)."""

    @dataclass
    class Config:
        access: Any = None

    async def authenticate(self, *, session: Any) -> bool:
        access = _access(self)
        username = session.username
        if not await access.authenticate(username, session.password):
            log.info(
                "embedded broker refused %s: %s",
                session.client_id,
                "bad credentials"
                if username
                else "anonymous clients are not allowed (mqtt.embedded_allow_anonymous)",
            )
            return False
        if session.will_flag and not access.may_publish(username, session.will_topic or ""):
            # As Mosquitto does: the client connects, but its will is never published.
            log.warning(
                "embedded broker: %s may not publish on its will topic %r: will dropped",
                session.client_id,
                session.will_topic,
            )
            session.will_flag = False
        session.is_anonymous = username is None
        return True


class TopicAclPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """amqtt topic hook: :func:`bridge.credentials.broker_acl` for publish, subscribe and delivery."""

    @dataclass
    class Config:
        access: Any = None

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or not topic:
            return False
        access = _access(self)
        username = session.username
        if action == Action.PUBLISH:
            return access.may_publish(username, topic)
        if action == Action.SUBSCRIBE:
            return access.may_subscribe(username, topic)
        if action == Action.RECEIVE:
            return access.may_receive(username, topic)
        return False


class _GuardedBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's Broker with its pre-authentication session handling and retained replay closed."""

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        # amqtt 0.12.1 reads CONNECT, then deletes (clean session) or rewrites (persistent session)
        # whatever session holds the same client id, and authenticates only afterwards. Here the
        # newcomer is authenticated first; a refusal gets CONNACK "not authorised" and touches nothing.
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        if not await self._authenticate(session, None):
            session.parent = 0
            if not session.client_id:
                session.client_id = gen_client_id()
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"client {session.client_id!r} from {remote_address} not authorised")
        existing = self._sessions.get(session.client_id) if session.client_id else None
        # A persistent session is resumed only by the user who made it (Mosquitto does the same):
        # a different user starts afresh rather than inheriting its subscriptions and queued messages.
        if existing is not None and not session.clean_session and existing[0].username == session.username:
            old = existing[0]
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(old, name, getattr(session, name))
            session = old
            session.parent = 1
        else:
            if existing is not None:
                await self._end_connection(existing)
                await self._delete_session(session.client_id)
            elif not session.client_id:
                session.client_id = gen_client_id()
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _end_connection(self, existing: tuple[Any, Any]) -> None:
        """Close the connection of a session being replaced (amqtt would leave it running, orphaned)."""
        old_session, old_handler = existing
        if old_session.transitions.is_connected():
            await old_handler.handle_connection_closed()
            await old_handler.stop()

    async def retain_message(
        self, source_session: Any, topic_name: str | None, data: Any, qos: int | None = None
    ) -> None:
        # Keep no retained messages: amqtt 0.12.1 replays them to every client whose connection
        # coincides with any subscription on the broker, whoever subscribed, past the read ACL. The
        # bridge never relies on retained messages; the live message itself is still delivered.
        if data:
            log.debug("embedded broker: not retaining the message on %s", topic_name)


class EmbeddedBroker:
    """amqtt on ``host:port`` (loopback by default), credentials and ACL enforced; an async context
    manager. ``bridge_username``/``bridge_password`` are what the bridge itself signs in with."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 18830,
        topic_root: str = "telecare",
        bridge_username: str = "telecare-bridge",
        bridge_password: str = "",
        password_file: Path | None = None,
        allow_anonymous: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.bridge_username = bridge_username
        self.bridge_password = bridge_password or secrets.token_urlsafe(24)
        self.access = BrokerAccess(
            topic_root=topic_root,
            bridge_username=bridge_username,
            bridge_password=self.bridge_password,
            password_file=password_file,
            allow_anonymous=allow_anonymous,
        )
        self._broker: Any = None

    async def __aenter__(self) -> Self:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                f"{__name__}.PasswordFilePlugin": {"access": self.access},
                f"{__name__}.TopicAclPlugin": {"access": self.access},
            },
        }
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._broker = _GuardedBroker(config)
        await self._broker.start()
        if self.port == 0:  # an ephemeral port, as tests ask for: read back what the OS chose
            server = self._broker._servers["default"].instance
            self.port = int(server.sockets[0].getsockname()[1])
        anonymous = "anonymous clients allowed (demo)" if self.access.allow_anonymous else "sign-in required"
        log.info("embedded MQTT broker on %s:%d (amqtt, MQTT 3.1.1; %s)", self.host, self.port, anonymous)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"
