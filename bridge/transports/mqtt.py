"""The bridge's MQTT connections: events in, acks and commands out.

Two connections (events and statuses; the v1.1 ``alarm`` lane for calls for help), each a persistent
session at QoS 1. Each event is decoded (the codec never sees the network), handed to the intake, and
acknowledged only after the intake says it is stored. When the store cannot commit, no ack is sent: the
unit retries (the intake logs that fault; the link does not log it again).

Reconnecting (issue 17): the first retry after a connection that worked comes within
:data:`FIRST_RETRY_S`, later ones back off (jittered) to ``reconnect_max_s`` (default 0.5 s), so the
bridge is back within a second of the broker. A CONNACK that does not come within
:data:`CONNECT_TIMEOUT_S` (a broker that accepts connections but never answers) counts as a failed try.
The outage is one fault in the log (:class:`alarm_centre.faults.FaultLog`): a line when it starts, a
summary at most once a second, and a line when both connections are subscribed again.

Coming back to a backlog (a broker that kept our session hands over everything units sent meanwhile):
the link reads from the first moment and counts a kept session as subscribed at its CONNACK; a copy of
an event already waiting in the inbox is dropped (:class:`Inbox`), and retries of events stored lately
are answered from memory (:mod:`bridge.transports.recent_acks`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
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
from alarm_centre.faults import ECHO_SUMMARY_EVERY_S, Backoff, FaultLog
from bridge.metrics import BridgeMetrics
from bridge.transports.mqtt_client import BrokerClient
from bridge.transports.recent_acks import EventKey, RecentAcks
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
from devices.vocabulary import is_help

log = logging.getLogger(__name__)

#: Records units going online/offline: [(device_id, online), ...] read together.
StatusCallback = Callable[[list[tuple[str, bool]]], Awaitable[None]]
#: Most messages handled as one batch.
READ_BATCH = 500
#: An ack to send: the unit, the stored event it answers (None for a refusal), the payload.
_Ack = tuple[str, EventKey | None, bytes]
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
#: The first reconnect wait after a connection that worked (jittered below it): short, so a broker
#: restart costs about the restart.
FIRST_RETRY_S = 0.1
#: A connection must have stayed up this long for the next retry to start short again (a broker that
#: drops us right after CONNACK -- a duplicate client id, a failing ACL -- is not hammered).
STABLE_S = 2.0
#: Seconds to wait for CONNACK (and for the TCP connection) before the try counts as failed.
CONNECT_TIMEOUT_S = 5.0
#: Seconds to wait for SUBACK and for each PUBACK.
OPERATION_TIMEOUT_S = 10.0


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


async def _until_either_fails(reading: asyncio.Task[None], subscribing: asyncio.Task[None]) -> None:
    """Wait until the connection ends: ``reading`` ends, or ``subscribing`` fails (raising its error)."""
    pending = {reading, subscribing}
    while reading in pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    raise aiomqtt.MqttError("the connection ended")


@dataclass(eq=False)
class _Lane:
    """One connection of the link: its client id, what it subscribes to, and its own budget, so a
    flood on one lane never holds back reading, storing or acking on the other."""

    name: str
    client_id: str
    filters: tuple[str, ...]
    budget: _Budget
    client: BrokerClient | None = None
    connections: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    #: When the lane last subscribed (``time.monotonic()``).
    subscribed_at: float = 0.0
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
        reconnect_max_s: float = 0.5,
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
        #: Events stored lately: a unit's retries of them are answered without the store.
        self.recent = RecentAcks()
        #: Set while both connections are subscribed.
        self.subscribed = asyncio.Event()
        where = f"{broker.host}:{broker.port}"
        #: The broker outage as one fault in the log, from the first lane lost to both subscribed again.
        self.outage = FaultLog(log, f"MQTT broker {where} unreachable", level=logging.WARNING)
        #: Acks that could not be published (stored events; their units retry and get "duplicate").
        self.unsent_acks = FaultLog(
            log,
            f"acks not published to {where}",
            noun="unsent acks (their units retry)",
            level=logging.WARNING,
            every_s=ECHO_SUMMARY_EVERY_S,
        )

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

    def _make_client(self, lane: _Lane, inbox: asyncio.Queue[aiomqtt.Message]) -> BrokerClient:
        kwargs: dict[str, object] = {}
        if self._mqtt5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        if self._broker.tls:
            kwargs["tls_params"] = aiomqtt.TLSParameters()
        return BrokerClient(
            self._broker.host,
            self._broker.port,
            identifier=lane.client_id,
            username=self._broker.username,
            password=self._broker.password,
            keepalive=self._keepalive,
            max_inflight_messages=1000,
            timeout=CONNECT_TIMEOUT_S,  # aiomqtt waits this long for CONNACK; operations pass their own
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
            self.outage.recovered()
        else:
            self.subscribed.clear()
            self._metrics.mqtt_connected.set(0)

    def problem(self) -> str | None:
        """Why the link is not subscribed to device events, for ``/healthz``; None when it is."""
        if self.subscribed.is_set():
            return None
        return f"not subscribed to device events: {self.outage.problem() or 'connecting to the broker'}"

    async def run(self) -> None:
        """Keep both connections up and subscribed until cancelled."""
        async with asyncio.TaskGroup() as lanes:
            lanes.create_task(self._stay_connected(self._alarms), name="mqtt-alarms")
            lanes.create_task(self._stay_connected(self._events), name="mqtt-events")

    async def _stay_connected(self, lane: _Lane) -> None:
        """Stay connected and subscribed on one lane until cancelled."""
        backoff = Backoff(min(FIRST_RETRY_S, self._reconnect_max_s), self._reconnect_max_s)
        cancels = cancel_requests()
        while True:
            inbox = Inbox()
            try:
                async with self._make_client(lane, inbox) as client:
                    lane.client = client
                    # Read from the first moment: a broker that kept our session sends what it queued
                    # while we were away before its SUBACK; waiting for the SUBACK without reading
                    # timed out behind that backlog and threw the connection (and the backlog) away.
                    reading = asyncio.create_task(self._read(lane, client, inbox), name=f"mqtt-{lane.name}")
                    subscribing = asyncio.create_task(self._subscribe(lane, client, reading, inbox))
                    try:
                        # A broker that kept our session (CONNACK "session present") kept its
                        # subscriptions: events flow at once, so the lane counts as subscribed now
                        # (after a long pause the SUBACK came 15-20 s behind the backlog, events
                        # handled all along). SUBSCRIBE is still sent, for a session that differs.
                        if not getattr(client, "session_present", False):
                            await asyncio.wait([subscribing])
                            subscribing.result()
                        # aiomqtt waits in asyncio.wait_for, which on 3.11 can return with our
                        # cancellation lost (gh-86296): honour it rather than serve on under a shutdown.
                        honour_cancellation(cancels)
                        lane.connections += 1
                        lane.subscribed_at = time.monotonic()
                        lane.subscribed.set()
                        self._note_subscribed()
                        log.info(
                            "subscribed to %s on %s:%d",
                            ", ".join(lane.filters),
                            self._broker.host,
                            self._broker.port,
                        )
                        await _until_either_fails(reading, subscribing)
                    finally:
                        for task in (subscribing, reading):
                            task.cancel()
                        await asyncio.wait([subscribing, reading])
            except aiomqtt.MqttError as exc:
                self._lost(lane, exc)
            finally:
                lane.client = None
                if lane.subscribed.is_set() and time.monotonic() - lane.subscribed_at >= STABLE_S:
                    backoff.reset()  # it worked for a while: the first retry is short
                lane.subscribed.clear()
                self._note_subscribed()
            honour_cancellation(cancels)
            await asyncio.sleep(backoff.next_delay())

    async def _subscribe(
        self, lane: _Lane, client: aiomqtt.Client, reading: asyncio.Task[None], inbox: Inbox
    ) -> None:
        """Subscribe to the lane's filters while ``reading`` reads; raise if the connection ends first,
        or if neither the SUBACK nor any message comes for OPERATION_TIMEOUT_S. While messages keep
        arriving the broker is plainly there: its SUBACK is behind what it queued for our session (a
        50 s pause under load queued minutes of it), and giving up would throw that away."""
        for topic_filter in lane.filters:
            suback = asyncio.ensure_future(
                client.subscribe(self._filter(topic_filter), qos=1, timeout=math.inf)
            )
            try:
                while not suback.done() and not reading.done():
                    arrived = inbox.arrived
                    await asyncio.wait(
                        {suback, reading}, timeout=OPERATION_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not suback.done() and not reading.done() and inbox.arrived == arrived:
                        raise aiomqtt.MqttError(f"no SUBACK nor any message for {OPERATION_TIMEOUT_S:g} s")
            finally:
                if not suback.done():
                    suback.cancel()
                    await asyncio.wait([suback])
            if suback.cancelled():  # the connection ended while we waited for the SUBACK
                reading.result()
                raise aiomqtt.MqttError("connection ended before the SUBACK")
            suback.result()

    async def _read(self, lane: _Lane, client: BrokerClient, inbox: Inbox) -> None:
        """Hand what arrives to handlers in batches until the connection ends (then raise MqttError).

        Reads the inbox itself: aiomqtt's message iterator costs a task and an ``asyncio.wait`` per
        message, which at a steady few hundred events a second (one or two per turn) was a good part of
        an event's own CPU. The inbox is ended when the connection is (:meth:`Inbox.end`), after what
        had arrived before."""
        client.ended.add_done_callback(inbox.end)
        while True:
            # Take what else has already arrived, so a burst is decoded, stored and acked together.
            batch = [await inbox.get()]
            while len(batch) < READ_BATCH and batch[-1] is not END:
                try:
                    batch.append(inbox.get_nowait())
                except asyncio.QueueEmpty:
                    break
            ended = batch[-1] is END
            if ended:
                batch.pop()
            if batch:
                await lane.budget.take(len(batch))
                # More than a batch still waiting: a backlog (a broker handing over what it queued while
                # we were away), whose copies of an event just acked were sent before that ack.
                backlog = inbox.qsize() >= READ_BATCH
                task = asyncio.create_task(self._handle_batch(lane, batch, backlog), name=f"mqtt-{lane.name}")
                self._handlers.add(task)
                task.add_done_callback(functools.partial(self._done, lane, len(batch)))
            if ended:
                raise aiomqtt.MqttError("disconnected while reading messages")

    def _lost(self, lane: _Lane, exc: Exception) -> None:
        self._metrics.mqtt_reconnects.inc()
        self.outage.failed(f"{lane.name} connection lost or refused ({exc})")

    def _done(self, lane: _Lane, size: int, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        lane.budget.give(size)
        if not task.cancelled() and task.exception() is not None:
            log.error("message handler failed", exc_info=task.exception())

    async def _handle_batch(self, lane: _Lane, batch: list[aiomqtt.Message], backlog: bool = False) -> None:
        """Decode what arrived together, store it in one go, then ack each event on the same lane."""
        started = time.perf_counter()
        events: list[DeviceEvent] = []
        statuses: list[tuple[str, bool]] = []
        acks: list[_Ack] = []
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
                    event = decode(device_id, payload)
                except Rejected as exc:
                    acks.append((device_id, None, self._rejection(device_id, payload, exc)))
                    continue
                key = (device_id, event.event_id)
                known = self.recent.lookup(key)
                if known is None:
                    events.append(event)
                    continue
                # A retry of an event stored lately: the store's answer, from memory. In a backlog, a
                # copy of an event whose ack went out a moment ago was sent before that ack: it gets no
                # second one (a call for help always gets its answer).
                self._metrics.events.labels(event.type.value, "duplicate", "mqtt").inc()
                if not (backlog and self.recent.just_acked(known) and not is_help(event.type)):
                    ack = encode_ack(event.event_id, "duplicate", alert_id=known.alert_id)
                    acks.append((device_id, key, ack))
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
        await self._ack_all(lane, acks)
        latency = time.perf_counter() - started
        histogram = self._metrics.ack_latency.labels("mqtt")
        for _ in acks:
            histogram.observe(latency)

    async def _ack_all(self, lane: _Lane, acks: list[_Ack]) -> None:
        """Send a batch's acks, at most :data:`ACK_WINDOW` unconfirmed at a time and
        :data:`LOOP_SHARE` between turns of the loop, and wait for their PUBACKs. An ack is a future
        here, not a task: the task, event and timer aiomqtt's ``publish`` costs each were most of an
        ack's own CPU."""
        sending: list[asyncio.Future[None]] = []
        try:
            for n, (device_id, key, payload) in enumerate(acks):
                if n and n % LOOP_SHARE == 0:
                    await asyncio.sleep(0)
                await lane.acks_outstanding.acquire()
                try:
                    confirmed = self._publish_ack(lane.client, self._topics.ack(device_id), payload)
                except ConnectionError as exc:
                    lane.acks_outstanding.release()
                    self.unsent_acks.failed(f"to {device_id}: {exc}")
                    continue
                confirmed.add_done_callback(functools.partial(self._confirmed, lane, device_id, key))
                sending.append(confirmed)
            if sending:
                await asyncio.wait(sending)
        except asyncio.CancelledError:
            for confirmed in sending:
                confirmed.cancel()
            raise

    def _confirmed(
        self, lane: _Lane, device_id: str, key: EventKey | None, confirmed: asyncio.Future[None]
    ) -> None:
        """An ack's PUBACK came, or it failed: free its place in the window and note which."""
        lane.acks_outstanding.release()
        if confirmed.cancelled():
            return
        if (exc := confirmed.exception()) is not None:
            # Stored but not acked: the unit retries and gets "duplicate" with the same alert id.
            self.unsent_acks.failed(f"to {device_id}: {exc}")
            return
        self.unsent_acks.recovered()
        if key is not None:
            self.recent.acked(key)

    def _publish_ack(self, client: BrokerClient | None, topic: str, payload: bytes) -> asyncio.Future[None]:
        if client is None:
            raise ConnectionError("not connected to the broker")
        try:
            return client.publish_ack(topic, payload, OPERATION_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"publish to {topic} failed: {exc}") from exc

    def _stored_acks(
        self, events: list[DeviceEvent], outcomes: list[IngestResult | StoreUnavailable]
    ) -> list[_Ack]:
        """Acks for the events the store took; none for those it could not (their units retry)."""
        acks: list[_Ack] = []
        unstored: list[StoreUnavailable] = []
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, StoreUnavailable):
                unstored.append(outcome)
                continue
            self._metrics.events.labels(event.type.value, outcome.result, "mqtt").inc()
            ack = encode_ack(event.event_id, outcome.result, alert_id=outcome.alert_id, error=outcome.error)
            key: EventKey | None = None
            if outcome.result != "rejected":
                key = (event.device_id, event.event_id)
                self.recent.stored(key, outcome.alert_id)
            acks.append((event.device_id, key, ack))
        if unstored:  # the intake logs the store's fault; here it is only counted
            self._metrics.unstored.labels("mqtt").inc(len(unstored))
        return acks

    def _rejection(self, device_id: str, payload: bytes, exc: Rejected) -> bytes:
        self._metrics.events.labels("invalid", "rejected", "mqtt").inc()
        self._metrics.rejects.labels(exc.code.value, "mqtt").inc()
        event_id = exc.event_id or peek_event_id(payload)
        log.warning("rejected event from %s (event_id=%r): %s", device_id, event_id, exc.reason)
        return encode_ack(event_id, "rejected", error=exc.reason)

    async def _publish(self, client: aiomqtt.Client | None, topic: str, payload: bytes) -> None:
        if client is None:
            raise ConnectionError("not connected to the broker")
        try:
            await client.publish(topic, payload, qos=1, timeout=OPERATION_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"publish to {topic} failed: {exc}") from exc

    async def send_command(self, device_id: str, payload: bytes) -> None:
        """Publish a command to a unit; ConnectionError when the broker cannot take it now."""
        client = self._alarms.client or self._events.client
        await self._publish(client, self._topics.cmd(device_id), payload)

    async def wait_subscribed(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.subscribed.wait()


#: What the inbox holds after the last message of a connection that ended (:meth:`Inbox.end`).
END = aiomqtt.Message("$telecare/connection-ended", b"", qos=0, retain=False, mid=0, properties=None)


class Inbox(asyncio.Queue[aiomqtt.Message]):
    """The messages a connection has received and not yet handled, where a copy of an event that is
    already waiting -- the same topic, the same bytes: a unit's retry -- is dropped on arrival.

    Units retry every few seconds until acked, so when acks fall behind (a backlog after an outage),
    each waiting event gains a copy per retry, the inbox grows faster than it is handled, and every
    event waits behind more copies: the bench's 2,000 units at 400 events/s never caught up after a
    15 s database restart. The copy adds nothing: the waiting one is stored and acked, and that ack
    answers the unit. Only events and alarms coalesce (a status is the latest of a sequence)."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._waiting: set[tuple[str, bytes]] = set()
        #: Messages received, and copies of them dropped, so far.
        self.arrived = 0
        self.coalesced = 0

    @staticmethod
    def _key(message: aiomqtt.Message) -> tuple[str, bytes] | None:
        topic = message.topic.value
        if not topic.endswith(("/event", "/alarm")) or not isinstance(message.payload, bytes):
            return None
        return topic, message.payload

    def _put(self, item: aiomqtt.Message) -> None:
        self.arrived += 1
        key = self._key(item)
        if key is not None:
            if key in self._waiting:
                self.coalesced += 1
                return
            self._waiting.add(key)
        super()._put(item)

    def end(self, ended: asyncio.Future[None]) -> None:
        """The connection ended (the done-callback of its end): :data:`END` comes after what arrived
        before. The end's own error is read here; the reader raises one of its own."""
        if not ended.cancelled():
            ended.exception()
        self.put_nowait(END)

    def _get(self) -> aiomqtt.Message:
        item = super()._get()
        key = self._key(item)
        if key is not None:
            self._waiting.discard(key)
        return item


class _Budget:
    """How many events may be in hand at once; reading from the broker waits when it is spent. The
    lane's reader is its one taker: it waits on a future that ``give`` resolves, no task between."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiter: asyncio.Future[None] | None = None

    async def take(self, n: int) -> None:
        while self._free <= 0:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._free -= n  # a batch may overdraw once; the next waits until it is paid back

    def give(self, n: int) -> None:
        self._free += n
        if self._free > 0 and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
