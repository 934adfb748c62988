"""The running bridge: every part started as an async context manager, long-lived loops in one TaskGroup.

Features beyond the MQTT alarm path (voice, serial, console, escalation, ...) are started from
``bridge/features.py``: each gets the bridge as a :class:`bridge.host.FeatureHost` (routes, loops,
readiness checks, ordered store hooks, outbox channels) and its exit stack, and nothing else.

``Bridge`` is reusable but not reentrant: ``async with Bridge(config) as bridge: await bridge.serve()``.
Shutdown (cancel, SIGINT, SIGTERM) stops intake first, then the transports, then the store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Self

from aiohttp import web
from prometheus_client import CollectorRegistry

from alarm_centre.alerts.feed import AlertFeed
from alarm_centre.alerts.intake import INLINE_OTHERS, OTHER_BATCH, OTHER_BATCH_ALONGSIDE, GroupCommitter
from alarm_centre.alerts.model import OutboxItem
from alarm_centre.faults import describe
from alarm_centre.host import HookOrder, Loop, OutboxSender, ReadinessCheck
from alarm_centre.http.api import ON_SCRAPE, make_app
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import EventBatchHook, EventHook, RaiseBatchHook, RaiseHook, ResolveHook
from bridge.config import Config
from bridge.credentials import CredentialManager
from bridge.features import FEATURES
from bridge.host import FeatureHost
from bridge.memory import MemoryTrimmer, glibc_malloc_trim
from bridge.metrics import BridgeMetrics
from bridge.outbox import OutboxDispatcher, mqtt_payload
from bridge.transports.embedded_broker import EmbeddedBroker
from bridge.transports.mqtt import BrokerAddress, MqttLink
from devices.mqtt_codec import Topics

log = logging.getLogger(__name__)

#: After a batch of events failed to commit, /healthz answers 503 without asking the store again until
#: a batch commits -- or until no batch has failed for this long (no traffic): then a probe decides.
BATCH_VERDICT_S = 3.0
#: A batch that failed this recently keeps the answer 503 even after another committed: on a nearly full
#: disk some batches fit and others do not, and readiness should not flicker with them.
FLICKER_HOLD_S = 0.5
#: A commit (a batch or a probe) this recent answers for the store without a probe.
FRESH_S = 0.5
#: A probe write that takes longer than this counts as failed.
PROBE_TIMEOUT_S = 2.0
#: The garbage collector's thresholds once the bridge is up (see :meth:`Bridge.__aenter__`).
GC_THRESHOLDS = (2_000, 10, 100)


class Bridge:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        #: Wall-clock seconds for deadlines the bridge keeps (escalation steps); tests pass their own.
        self.clock = clock
        self.node = config.node_name
        self.metrics = BridgeMetrics(self.node)
        self._stack: AsyncExitStack | None = None
        self.store: AlertStore
        self.intake: GroupCommitter
        self.mqtt: MqttLink
        self.feed: AlertFeed
        self.outbox: OutboxDispatcher
        self.broker: EmbeddedBroker | None = None
        #: Issues units' broker passwords when ``credentials.enabled`` (handed over by the registry feature).
        self.credentials: CredentialManager | None = None
        self.http_port: int = 0
        self._runner: web.AppRunner | None = None
        self._store_ok_at = 0.0
        self._loops: list[tuple[str, Loop]] = []
        #: Extra readiness checks added by features; each answers its problems (empty when fine).
        self._readiness_checks: list[ReadinessCheck] = []
        self.app: web.Application

    async def __aenter__(self) -> Self:
        cfg = self.config
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self.store = await stack.enter_async_context(open_store(cfg.store.url))
            self.metrics.count_round_trips(self.store.round_trip_counts)
            if cfg.mqtt.url:
                address = BrokerAddress.from_url(cfg.mqtt.url)
                # MQTT 5 for shared subscriptions across nodes; a single node speaks 3.1.1, whose
                # messages paho parses at about half the cost (no per-message Properties).
                mqtt5 = bool(cfg.mqtt.shared_group)
            else:
                self.broker = await stack.enter_async_context(embedded_broker(cfg))
                address = BrokerAddress(
                    host=self.broker.host,
                    port=self.broker.port,
                    username=self.broker.bridge_username,
                    password=self.broker.bridge_password,
                )
                mqtt5 = False  # amqtt speaks MQTT 3.1.1 only
                if cfg.mqtt.shared_group:
                    raise RuntimeError(
                        "mqtt.shared_group needs a broker with shared subscriptions (Mosquitto, EMQX); "
                        "the embedded broker has none. Set mqtt.url, or leave mqtt.shared_group empty."
                    )
            alongside = self.store.concurrent_writers
            lanes = await stack.enter_async_context(self.store.lanes())
            self.intake = await stack.enter_async_context(
                GroupCommitter(
                    self.store,
                    help_store=lanes.help,
                    other_store=lanes.others,
                    help_alongside=alongside,
                    max_other_batch=OTHER_BATCH_ALONGSIDE if alongside else OTHER_BATCH,
                    inline_others=INLINE_OTHERS if alongside else 0,
                    on_batch=self.metrics.observe_batch,
                )
            )
            self.feed = AlertFeed(self.store)
            self.outbox = OutboxDispatcher(self.store, self.metrics, poll_s=cfg.outbox.poll_s)
            self.mqtt = await stack.enter_async_context(
                MqttLink(
                    broker=address,
                    topics=Topics(cfg.topic_root),
                    intake=self.intake,
                    metrics=self.metrics,
                    client_id=cfg.mqtt.client_id or f"telecare-bridge-{self.node}",
                    shared_group=cfg.mqtt.shared_group,
                    on_status=self.store.devices.set_many_online,
                    mqtt5=mqtt5,
                    keepalive=cfg.mqtt.keepalive,
                    max_in_flight=cfg.mqtt.max_in_flight,
                    reconnect_max_s=cfg.mqtt.reconnect_max_s,
                )
            )
            self.outbox.add_channel("mqtt", self._send_mqtt)
            self.app = make_app(
                self.store,
                self.feed,
                self.metrics.registry,
                self.readiness,
                max_body_bytes=cfg.http.max_body_bytes,
                body_timeout_s=cfg.http.body_timeout_s,
                on_error=lambda status: self.metrics.http_errors.labels(str(status)).inc(),
            )
            app = self.app
            app[ON_SCRAPE] = self._refresh_gauges
            for start_feature in FEATURES:  # voice, serial, console, escalation, registry, ...
                await start_feature(self, stack)
            # keepalive_timeout closes a connection that has no request in progress -- fresh, between
            # requests, or still trickling its headers -- after http.idle_timeout_s.
            self._runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                shutdown_timeout=1.0,
                keepalive_timeout=cfg.http.idle_timeout_s,
            )
            await self._runner.setup()
            stack.push_async_callback(self._runner.cleanup)
            site = web.TCPSite(self._runner, cfg.http.host, cfg.http.port)
            await site.start()
            self.http_port = _bound_port(site, cfg.http.port)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        # Everything built so far (modules, app, routes) lives as long as the process: move it out of
        # the garbage collector's sight, so full collections stay short and acks do not stall behind them.
        gc.collect()
        gc.freeze()
        # A flood allocates fast: with Python's default thresholds (700, 10, 10) a 10,000-event storm
        # made some 3,000 young and 14 full collections, the full ones holding the loop 50-250 ms of
        # CPU each (over a second on a busy machine), with calls for help waiting behind them. Full
        # collections at most every 100 middle ones; the young ones a little rarer, the middle ones
        # (up to 10 young ones' survivors) still short.
        gc.set_threshold(*GC_THRESHOLDS)
        # Freed memory back to the system once a minute: RSS follows what the bridge uses.
        trim = glibc_malloc_trim()
        if trim is not None:
            self.add_loop("memory-trim", MemoryTrimmer(self.metrics, trim).run)
        # The store's COMMIT runs in a worker thread; when its fsync returns it must win the GIL back
        # from the busy event loop. The default 5 ms switch interval would add up to 5 ms to every ack.
        sys.setswitchinterval(0.001)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    @property
    def http_url(self) -> str:
        return f"http://{self.config.http.host}:{self.http_port}"

    async def serve(self) -> None:
        """Run every loop until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mqtt.run(), name="mqtt-link")
            tg.create_task(self.outbox.run(), name="outbox")
            tg.create_task(self.feed.run(), name="alert-feed")
            tg.create_task(self.store.follow_access_changes(), name="access-changes")
            for name, loop in self._loops:
                tg.create_task(loop(), name=name)

    # -- the host interface (bridge/host.py) ------------------------------------------------------
    @property
    def metrics_registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def add_loop(self, name: str, loop: Loop) -> None:
        """Register a long-running coroutine that ``serve()`` runs in the bridge's TaskGroup."""
        self._loops.append((name, loop))

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        self._readiness_checks.append(check)

    def add_raise_hook(self, hook: RaiseHook, order: HookOrder, batch: RaiseBatchHook | None = None) -> None:
        self.store.add_raise_hook(hook, order, batch)

    def add_event_hook(self, hook: EventHook, order: HookOrder, batch: EventBatchHook | None = None) -> None:
        self.store.add_event_hook(hook, order, batch)

    def add_resolve_hook(self, hook: ResolveHook, order: HookOrder) -> None:
        self.store.add_resolve_hook(hook, order)

    def add_outbox_channel(self, name: str, send: OutboxSender) -> None:
        self.outbox.add_channel(name, send)

    def provide_credentials(self, credentials: CredentialManager | None) -> None:
        self.credentials = credentials

    async def _send_mqtt(self, device_id: str, item: OutboxItem) -> None:
        await self.mqtt.send_command(device_id, mqtt_payload(item))

    async def readiness(self) -> list[str]:
        """Reasons the bridge is not ready; empty when it is."""
        problems = []
        broker = self.mqtt.problem()
        if broker is not None:
            problems.append(broker)
        store = await self._store_problem()
        self.metrics.store_writable.set(0 if store else 1)
        if store is not None:
            problems.append(store)
        for check in self._readiness_checks:
            problems.extend(await check())
        return problems

    async def _store_problem(self) -> str | None:
        """Why the store cannot take events now, or None. What batches of events do decides: a batch
        that failed keeps the answer "no" until one commits (a one-row probe may still fit on a disk
        where batches do not). Only when no batch was tried lately does a probe write decide."""
        now = time.monotonic()
        fault = self.intake.fault
        last_failure = fault.last_failure_at
        if fault.active and last_failure is not None and now - last_failure < BATCH_VERDICT_S:
            return f"store does not accept writes: {fault.problem()}"
        if last_failure is not None and now - last_failure < FLICKER_HOLD_S:  # some batches fit, some not
            ago = now - last_failure
            return f"store does not accept writes: {fault.what} {ago:.1f} s ago: {fault.last_problem}"
        committed = max(self.intake.last_commit_at or 0.0, self._store_ok_at)
        if not fault.active and now - committed < FRESH_S:
            return None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await self.store.probe_write()
        except Exception as exc:
            return f"store does not accept writes: {describe(exc)}"
        self._store_ok_at = time.monotonic()
        return None

    async def _refresh_gauges(self) -> None:
        """The open-alert gauge, from the store, on each /metrics scrape (never a scrape behind); a
        store that cannot answer is logged and counted (``telecare_loop_errors_total{loop="gauges"}``)."""
        counts = None
        with self.metrics.loop_round("gauges"):
            counts = await self.store.alerts.open_alert_counts()
        if counts is None:
            return
        self.metrics.open_alerts.clear()
        for (priority, state), n in counts.items():
            self.metrics.open_alerts.labels(str(priority), state).set(n)


def embedded_broker(cfg: Config) -> EmbeddedBroker:
    """The embedded broker on loopback, with the units' credentials from ``credentials.password_file``
    (when ``credentials.enabled``) and the same ACL as the Mosquitto files."""
    creds = cfg.credentials
    if not creds.enabled and not cfg.mqtt.embedded_allow_anonymous:
        log.warning(
            "embedded broker: credentials.enabled is false and anonymous clients are refused, so only the "
            "bridge can connect; enable credentials (docs/installing.md) or, for a demo, "
            "mqtt.embedded_allow_anonymous"
        )
    return EmbeddedBroker(
        host="127.0.0.1",
        port=cfg.mqtt.embedded_port,
        topic_root=cfg.topic_root,
        bridge_username=creds.bridge_username,
        bridge_password=creds.bridge_password,
        password_file=Path(creds.password_file) if creds.enabled else None,
        allow_anonymous=cfg.mqtt.embedded_allow_anonymous,
    )


def _bound_port(site: web.TCPSite, configured: int) -> int:
    """The port the HTTP site listens on (the OS picks one when the config says 0)."""
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else configured


if TYPE_CHECKING:  # the bridge is the host its features are started with (checked by mypy)

    def _is_a_host(bridge: Bridge) -> FeatureHost:
        return bridge
