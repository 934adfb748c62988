"""The MQTT client the bridge's link uses: aiomqtt's, with three changes for a bridge that acks hundreds
of events a second.

- A connection attempt fails as soon as its socket closes (:meth:`BrokerClient._on_disconnect`).
- Acks are published without a task each (:meth:`BrokerClient.publish_ack`): aiomqtt's ``publish``
  waits for the PUBACK through ``asyncio.wait_for`` on an ``Event``, which on Python 3.11 is a task, an
  event and a timer per message, and it lists every pending call on each publish. An ack is a future
  here, resolved from paho-mqtt's ``on_publish`` callback, failed when the connection ends or after
  ``timeout`` seconds.
- Packets queued in one turn of the event loop are written in one ``send`` (:func:`coalesce`). paho-mqtt
  writes each packet with a ``send`` of its own; on loopback each one wakes the broker, and on the two
  cores a bridge shares with its broker and database the waking showed as 16 % of the bridge's samples
  in a soak at 500 events/s.

The last two reach into paho-mqtt's private parts (``_out_packet``, ``_packet_write``), as aiomqtt itself
does; ``pyproject.toml`` pins the versions they are tested with, and the tests in
``tests/transports/test_mqtt_client.py`` fail if paho-mqtt changes them.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import Any, Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

#: Most bytes written in one ``send`` when packets are joined.
COALESCE_BYTES = 64 * 1024


def coalesce(queue: deque[Any]) -> int:
    """Join the packets at the head of paho-mqtt's write queue into one, so they go out in one ``send``.

    Only packets paho-mqtt does nothing with after writing them are joined (everything but a QoS 0
    PUBLISH and a DISCONNECT); a partly written packet joins from where it stopped. The joined packet
    carries PUBACK's command, which paho-mqtt writes and forgets. Returns how many packets were joined
    (0 or 1: nothing changed)."""
    if len(queue) < 2:
        return 0
    taken: list[Any] = []
    size = 0
    while queue and size < COALESCE_BYTES:
        packet = queue[0]
        command = packet["command"] & 0xF0
        if command == paho.DISCONNECT or (command == paho.PUBLISH and packet["qos"] == 0):
            break
        queue.popleft()
        taken.append(packet)
        size += packet["to_process"]
    if len(taken) < 2:
        queue.extendleft(reversed(taken))
        return 0
    joined = b"".join(bytes(p["packet"][p["pos"] :]) for p in taken)
    queue.appendleft(
        {
            "command": paho.PUBACK,
            "mid": 0,
            "qos": 1,
            "pos": 0,
            "to_process": len(joined),
            "packet": joined,
            "info": None,
        }
    )
    return len(taken)


class BrokerClient(aiomqtt.Client):
    """aiomqtt's client, with acks as futures and one ``send`` per turn (see the module's docstring).

    aiomqtt ignores a disconnect that comes before the CONNACK, so a CONNECT to a broker that accepts
    the connection and then drops it (a hung broker restarted) waited out the whole connect timeout
    before the next try -- 5 s late back (issue 17, the half-open experiment). A failed attempt also
    closes its socket at once, rather than leaving it open to a silent peer until paho's keepalive.
    """

    _connecting = False
    #: The broker's CONNACK said it kept this client's session (and so its subscriptions).
    session_present = False

    #: Acks published and not yet confirmed, by message id (made anew at each connect, before any
    #: callback can come).
    _acks: dict[int, asyncio.Future[None]]

    def _write_coalesced(self) -> None:
        """Join what paho-mqtt has queued before each of its writes (once per client)."""
        client = self._client
        if "_packet_write" in vars(client):
            return
        write = client._packet_write

        def coalescing_write() -> MQTTErrorCode:
            coalesce(client._out_packet)
            return write()

        client._packet_write = coalescing_write  # type: ignore[method-assign]

    @property
    def ended(self) -> asyncio.Future[None]:
        """Done when the connection ends (aiomqtt's own future, made anew at each connect)."""
        return self._disconnected

    def publish_ack(self, topic: str, payload: bytes, timeout: float) -> asyncio.Future[None]:
        """Publish at QoS 1; the future is done at the PUBACK, failed (``aiomqtt.MqttError``) if the
        connection ends first or none comes within ``timeout`` seconds. Raises ``aiomqtt.MqttError``
        at once when paho-mqtt cannot queue the message (not connected)."""
        info = self._client.publish(topic, payload, 1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[None] = loop.create_future()
        if info.is_published():  # the PUBACK came while paho-mqtt was still writing
            confirmed.set_result(None)
            return confirmed
        self._acks[info.mid] = confirmed
        timer = loop.call_later(timeout, self._unconfirmed, info.mid, timeout)
        confirmed.add_done_callback(functools.partial(_forget, self._acks, info.mid, timer))
        return confirmed

    def _unconfirmed(self, mid: int, timeout: float) -> None:
        confirmed = self._acks.get(mid)  # failing it forgets it (_forget)
        if confirmed is not None and not confirmed.done():
            confirmed.set_exception(aiomqtt.MqttError(f"no PUBACK within {timeout:g} s"))

    def _fail_acks(self, reason: str) -> None:
        acks, self._acks = self._acks, {}
        for confirmed in acks.values():
            if not confirmed.done():
                confirmed.set_exception(aiomqtt.MqttError(reason))

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any = None
    ) -> None:
        confirmed = self._acks.pop(mid, None)
        if confirmed is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not confirmed.done():
            confirmed.set_result(None)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    async def __aenter__(self) -> Self:
        self._acks = {}
        self._write_coalesced()
        self._connecting = True
        try:
            return await super().__aenter__()
        except aiomqtt.MqttError:
            self._client.disconnect()  # closes the socket of the attempt that failed
            raise
        finally:
            self._connecting = False

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            self._fail_acks("the connection closed")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        self._fail_acks(f"the connection ended ({reason_code})")
        if self._connecting and not self._connected.done():
            self._connected.set_exception(
                aiomqtt.MqttError(f"connection closed before CONNACK ({reason_code})")
            )
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)


def _forget(
    acks: dict[int, asyncio.Future[None]], mid: int, timer: asyncio.TimerHandle, done: asyncio.Future[None]
) -> None:
    timer.cancel()
    if acks.get(mid) is done:
        del acks[mid]
