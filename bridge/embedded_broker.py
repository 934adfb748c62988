"""The embedded MQTT broker for the one-command start (amqtt).

Known limits of amqtt 0.12.1 (DESIGN.md): MQTT 3.1.1 only, no shared subscriptions, binds 0.0.0.0 unless
told otherwise (we always bind loopback), delivers QoS 0 as QoS 1, replays retained messages to clients
that never subscribed to them -- so the bridge never relies on retained messages. For production and
for several bridge nodes use Mosquitto or EMQX (docs/scaling.md).
"""

from __future__ import annotations

import logging
from typing import Any, Self

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on ``host:port`` (loopback by default); an async context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 18830) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    async def __aenter__(self) -> Self:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._broker = Broker(config)
        await self._broker.start()
        if self.port == 0:  # an ephemeral port, as tests ask for: read back what the OS chose
            server = self._broker._servers["default"].instance
            self.port = int(server.sockets[0].getsockname()[1])
        log.info("embedded MQTT broker listening on %s:%d (amqtt, MQTT 3.1.1)", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"
