"""The bridge's MQTT connections: events in, acks and commands out.

Two connections (events and statuses; the v1.1 ``alarm`` lane for calls for help), each a persistent
session at QoS 1 with reconnect and jittered exponential backoff. Each event is decoded (the codec
never sees the network), handed to the intake, and acknowledged only after the intake says it is
stored. When the store cannot commit, no ack is sent: the unit retries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self, cast
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alarm_centre.alerts.intake import BatchIntake, IngestResult, StoreUnavailable
from bridge.metrics import BridgeMetrics
from devices.cancellation import cancel_requests, honour_cancellation
from devices.events import DeviceEvent
from devices.mqtt_codec import (
    Rejected,
    RejectReason,
    Topics,
    decode_alarm,
    decode_event,
    decode_status,
    encode_ack,
    peek_event_id,
)

log = logging.getLogger(__name__)

#: Records units going online/offline: [(device_id, online), ...] read together.
StatusCallback = Callable[[list[tuple[str, bool]]], Awaitable[None]]
#: Most messages handled as one batch.
READ_BATCH = 500
#: Messages decoded, and acks started, between two turns of the event loop: a batch of a flood never
#: holds the loop for long, so a call for help (its statements, its ack) gets a turn in between.
LOOP_SHARE = 25
#: Acks a connection has published and not yet had confirmed (PUBACK), at most. paho-mqtt's client
#: reads, in one turn of the loop, as many packets as it has messages outstanding, and on each PUBACK
#: walks every outstanding message; aiomqtt lists them all on each publish. With thousands of acks
#: outstanding in a flood, one turn took seconds of CPU and every other task waited; with this many
#: it takes about a millisecond, and acks still flow at tens of thousands a second.
ACK_WINDOW = 25
#: Acks are small and latency matters: switch off Nagle's algorithm (it adds up to 40 ms per ack).
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
#: aiomqtt warns on every publish while many are pending -- normal under load, not news for the operator.
_PAHO_LOG = logging.getLogger("bridge.transports.mqtt.client")
_PAHO_LOG.setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=parts.username,
            password=parts.password,
            tls=tls,
        )


@dataclass(eq=False)
class _Lane:
    """One connection of the link: its client id, what it subscribes to, and its own budget, so a
    flood on one lane never holds back reading, storing or acking on the other."""

    name: str
    client_id: str
    filters: tuple[str, ...]
    budget: _Budget
    client: aiomqtt.Client | None = None
    connections: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Acks published and not yet confirmed (:data:`ACK_WINDOW`).
    acks_outstanding: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ACK_WINDOW))


class MqttLink:
    """Subscribes to device events and statuses; publishes acks and commands. An async context manager
    whose ``run()`` keeps the connections up until cancelled.

    Two connections (wire contract v1.1): ``events`` reads ``event`` and ``status``; ``alarms`` reads
    ``alarm``, the lane for calls for help, under the client id ``{client_id}-alarm``. A call for help
    is therefore never queued in the broker, in our inbox or in our in-flight budget behind a flood on
    ``event``; the intake then stores it first (:class:`alarm_centre.alerts.intake.GroupCommitter`).
    Commands go out on the ``alarms`` connection while it is up: it has no backlog of acks.
    """

    def __init__(
        self,
        *,
        broker: BrokerAddress,
        topics: Topics,
        intake: BatchIntake,
        metrics: BridgeMetrics,
        client_id: str,
        shared_group: str = "",
        on_status: StatusCallback | None = None,
        mqtt5: bool = True,
        keepalive: int = 30,
        max_in_flight: int = 2000,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self._broker = broker
        self._topics = topics
        self._intake = intake
        self._metrics = metrics
        self._client_id = client_id
        self._shared_group = shared_group
        self._on_status = on_status
        self._mqtt5 = mqtt5
        self._keepalive = keepalive
        self._reconnect_max_s = reconnect_max_s
        self._events = _Lane(
            "events", client_id, (topics.event_filter, topics.status_filter), _Budget(max_in_flight)
        )
        self._alarms = _Lane("alarms", f"{client_id}-alarm", (topics.alarm_filter,), _Budget(max_in_flight))
        self._handlers: set[asyncio.Task[None]] = set()
        #: Set while both connections are subscribed.
        self.subscribed = asyncio.Event()

    @property
    def connections(self) -> int:
        """Connections made so far on the events lane (reconnects included)."""
        return self._events.connections

    @property
    def alarm_connections(self) -> int:
        """Connections made so far on the alarm lane."""
        return self._alarms.connections

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def _make_client(self, lane: _Lane, inbox: asyncio.Queue[aiomqtt.Message]) -> aiomqtt.Client:
        kwargs: dict[str, object] = {}
        if self._mqtt5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        if self._broker.tls:
            kwargs["tls_params"] = aiomqtt.TLSParameters()
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            identifier=lane.client_id,
            username=self._broker.username,
            password=self._broker.password,
            keepalive=self._keepalive,
            max_inflight_messages=1000,
            timeout=10,
            logger=_PAHO_LOG,
            socket_options=NO_DELAY,
            # Our own inbox, so a burst can be drained without a task per message (see run()).
            queue_type=cast("type[asyncio.Queue[aiomqtt.Message]]", lambda maxsize=0: inbox),
            **kwargs,  # type: ignore[arg-type]
        )

    def _filter(self, topic_filter: str) -> str:
        return f"$share/{self._shared_group}/{topic_filter}" if self._shared_group else topic_filter

    def _note_subscribed(self) -> None:
        if self._events.subscribed.is_set() and self._alarms.subscribed.is_set():
            self.subscribed.set()
            self._metrics.mqtt_connected.set(1)
        else:
            self.subscribed.clear()
            self._metrics.mqtt_connected.set(0)

    async def run(self) -> None:
        """Keep both connections up and subscribed until cancelled."""
        async with asyncio.TaskGroup() as lanes:
            lanes.create_task(self._stay_connected(self._alarms), name="mqtt-alarms")
            lanes.create_task(self._stay_connected(self._events), name="mqtt-events")

    async def _stay_connected(self, lane: _Lane) -> None:
        """Stay connected and subscribed on one lane until cancelled."""
        delay = 0.5
        cancels = cancel_requests()
        while True:
            inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
            try:
                async with self._make_client(lane, inbox) as client:
                    lane.client = client
                    for topic_filter in lane.filters:
                        await client.subscribe(self._filter(topic_filter), qos=1)
                    # aiomqtt waits in asyncio.wait_for, which on 3.11 can return with our cancellation
                    # lost (gh-86296): honour it rather than serve on under a shutdown waiting for us.
                    honour_cancellation(cancels)
                    lane.connections += 1
                    lane.subscribed.set()
                    self._note_subscribed()
                    log.info(
                        "subscribed to %s on %s:%d",
                        ", ".join(lane.filters),
                        self._broker.host,
                        self._broker.port,
                    )
                    delay = 0.5
                    async for first in client.messages:
                        # Take what else has already arrived, so a burst is decoded, stored and acked
                        # together; the iterator costs a task per call, draining the inbox does not.
                        batch = [first]
                        while len(batch) < READ_BATCH:
                            try:
                                batch.append(inbox.get_nowait())
                            except asyncio.QueueEmpty:
                                break
                        await lane.budget.take(len(batch))
                        task = asyncio.create_task(self._handle_batch(lane, batch), name=f"mqtt-{lane.name}")
                        self._handlers.add(task)
                        task.add_done_callback(functools.partial(self._done, lane, len(batch)))
            except aiomqtt.MqttError as exc:
                self._lost(lane, exc)
            finally:
                lane.client = None
                lane.subscribed.clear()
                self._note_subscribed()
            honour_cancellation(cancels)
            # Full jitter: spread reconnects so a restarted broker is not hit by every node at once.
            await asyncio.sleep(random.uniform(0.1, delay))
            delay = min(delay * 2, self._reconnect_max_s)

    def _lost(self, lane: _Lane, exc: Exception) -> None:
        self._metrics.mqtt_reconnects.inc()
        log.warning(
            "MQTT connection (%s) to %s:%d lost or refused (%s); retrying",
            lane.name,
            self._broker.host,
            self._broker.port,
            exc,
        )

    def _done(self, lane: _Lane, size: int, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        lane.budget.give(size)
        if not task.cancelled() and task.exception() is not None:
            log.error("message handler failed", exc_info=task.exception())

    async def _handle_batch(self, lane: _Lane, batch: list[aiomqtt.Message]) -> None:
        """Decode what arrived together, store it in one go, then ack each event on the same lane."""
        started = time.perf_counter()
        events: list[DeviceEvent] = []
        statuses: list[tuple[str, bool]] = []
        acks: list[tuple[str, bytes]] = []
        for n, message in enumerate(batch):
            if n and n % LOOP_SHARE == 0:
                await asyncio.sleep(0)
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                device_id, kind = self._topics.parse(topic)
            except Rejected as exc:
                self._metrics.rejects.labels(exc.code.value, "mqtt").inc()
                log.warning("ignored message on %r: %s", topic[:200], exc.reason)
                continue
            if kind in ("event", "alarm"):
                try:
                    decode = decode_alarm if kind == "alarm" else decode_event
                    events.append(decode(device_id, payload))
                except Rejected as exc:
                    acks.append((device_id, self._rejection(device_id, payload, exc)))
            elif kind == "status":
                status = decode_status(payload)
                if status is None:
                    self._metrics.rejects.labels(RejectReason.STATUS.value, "mqtt").inc()
                else:
                    statuses.append((device_id, status))
        if events:
            acks += self._stored_acks(events, await self._intake.submit_many(events))
        if statuses and self._on_status is not None:
            try:
                await self._on_status(statuses)
            except Exception:
                log.exception("could not record the status of %d units", len(statuses))
        if not acks:
            return
        if len(acks) == 1:  # a call for help on its lane, usually: out now, not a turn later
            await self._ack(lane, *acks[0])
        else:
            await self._ack_all(lane, acks)
        latency = time.perf_counter() - started
        histogram = self._metrics.ack_latency.labels("mqtt")
        for _ in acks:
            histogram.observe(latency)

    async def _ack_all(self, lane: _Lane, acks: list[tuple[str, bytes]]) -> None:
        """Send a batch's acks, started :data:`LOOP_SHARE` at a time between turns of the loop."""
        sending: list[asyncio.Task[None]] = []
        try:
            for start in range(0, len(acks), LOOP_SHARE):
                if start:
                    await asyncio.sleep(0)
                chunk = acks[start : start + LOOP_SHARE]
                sending += [
                    asyncio.create_task(self._ack(lane, device, payload)) for device, payload in chunk
                ]
            await asyncio.gather(*sending)
        except asyncio.CancelledError:
            for task in sending:
                task.cancel()
            raise

    def _stored_acks(
        self, events: list[DeviceEvent], outcomes: list[IngestResult | StoreUnavailable]
    ) -> list[tuple[str, bytes]]:
        """Acks for the events the store took; none for those it could not (their units retry)."""
        acks = []
        unstored: list[StoreUnavailable] = []
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, StoreUnavailable):
                unstored.append(outcome)
                continue
            self._metrics.events.labels(event.type.value, outcome.result, "mqtt").inc()
            ack = encode_ack(event.event_id, outcome.result, alert_id=outcome.alert_id, error=outcome.error)
            acks.append((event.device_id, ack))
        if unstored:
            self._metrics.unstored.labels("mqtt").inc(len(unstored))
            log.error("not acking %d events: the store cannot commit (%s)", len(unstored), unstored[0])
        return acks

    def _rejection(self, device_id: str, payload: bytes, exc: Rejected) -> bytes:
        self._metrics.events.labels("invalid", "rejected", "mqtt").inc()
        self._metrics.rejects.labels(exc.code.value, "mqtt").inc()
        event_id = exc.event_id or peek_event_id(payload)
        log.warning("rejected event from %s (event_id=%r): %s", device_id, event_id, exc.reason)
        return encode_ack(event_id, "rejected", error=exc.reason)

    async def _ack(self, lane: _Lane, device_id: str, payload: bytes) -> None:
        try:
            async with lane.acks_outstanding:
                await self._publish(lane.client, self._topics.ack(device_id), payload)
        except ConnectionError as exc:
            # Stored but not acked: the unit retries and gets "duplicate" with the same alert id.
            log.warning("ack to %s not sent (%s); the unit will retry", device_id, exc)

    async def _publish(self, client: aiomqtt.Client | None, topic: str, payload: bytes) -> None:
        if client is None:
            raise ConnectionError("not connected to the broker")
        try:
            await client.publish(topic, payload, qos=1, timeout=10)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"publish to {topic} failed: {exc}") from exc

    async def send_command(self, device_id: str, payload: bytes) -> None:
        """Publish a command to a unit; ConnectionError when the broker cannot take it now."""
        client = self._alarms.client or self._events.client
        await self._publish(client, self._topics.cmd(device_id), payload)

    async def wait_subscribed(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.subscribed.wait()


class _Budget:
    """How many events may be in hand at once; reading from the broker waits when it is spent."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._changed = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._free > 0)
            self._free -= n  # a batch may overdraw once; the next waits until it is paid back

    def give(self, n: int) -> None:
        self._free += n
        task = asyncio.ensure_future(self._notify())
        _NOTIFIERS.add(task)
        task.add_done_callback(_NOTIFIERS.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


_NOTIFIERS: set[asyncio.Future[None]] = set()
