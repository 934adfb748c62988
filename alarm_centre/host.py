"""The host interface: the one way a feature plugs into the running bridge.

A feature (voice, console, serial, registry, escalation, floods, ...) is started with a :class:`Host`
and registers what it brings -- HTTP routes and app keys, long-running loops, readiness checks, store
hooks in an explicit order, outbox channels -- and touches nothing else of the bridge. The bridge
(:class:`bridge.service.Bridge`) implements it; tests may implement it with anything that fits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from alarm_centre.alerts.feed import AlertFeed
    from alarm_centre.alerts.intake import GroupCommitter
    from alarm_centre.alerts.model import OutboxItem
    from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import EventBatchHook, EventHook, RaiseBatchHook, RaiseHook, ResolveHook

#: A long-running coroutine function the bridge runs in its TaskGroup until shutdown.
Loop = Callable[[], Coroutine[Any, Any, None]]
#: A readiness check: the problems it sees (empty when fine), shown by ``/healthz``.
ReadinessCheck = Callable[[], Awaitable[list[str]]]
#: Sends one outbox command to a device over one channel (mqtt, serial, sms).
OutboxSender = Callable[[str, "OutboxItem"], Awaitable[None]]


class HookOrder(IntEnum):
    """Where a feature's store hook runs inside the ingest transaction: lower first.

    The order is a decision, written here, not an accident of which feature started first.
    """

    #: Heartbeat supervision and commissioning see every stored event first (registry).
    REGISTRY = 10
    #: A new alert copies its escalation policy into its due steps (escalation).
    ESCALATION = 20
    #: Technical alarms are grouped into incidents, after the policy is copied (floods).
    FLOODS = 30
    #: A raised alert (and a unit's restore) is queued for the upstream centre last, once every other
    #: hook has shaped it (DC-09 forwarding).
    FORWARDING = 40


class Host(Protocol):
    """What a feature may use of the bridge that runs it."""

    @property
    def node(self) -> str:
        """This node's name (``node_name``), for logs, metrics and claims."""

    @property
    def store(self) -> AlertStore:
        """The alert store: transactions, listeners, the outbox."""

    @property
    def intake(self) -> GroupCommitter:
        """Where transports hand decoded events to be stored (group commit)."""

    @property
    def feed(self) -> AlertFeed:
        """Live alert changes, for streams."""

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The Prometheus registry ``/metrics`` serves."""

    @property
    def app(self) -> web.Application:
        """The HTTP application: add routes and app keys here, before the server starts."""

    def add_loop(self, name: str, loop: Loop) -> None:
        """Run ``loop`` in the bridge's TaskGroup from ``serve()`` until shutdown."""

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        """Add a check whose problems make ``/healthz`` answer 503."""

    def add_raise_hook(self, hook: RaiseHook, order: HookOrder, batch: RaiseBatchHook | None = None) -> None:
        """Call ``hook`` in the ingest transaction after each new alert row, at ``order``; ``batch``, its
        batch form, with a batch's new alerts at once where they are written at once (PostgreSQL)."""

    def add_event_hook(self, hook: EventHook, order: HookOrder, batch: EventBatchHook | None = None) -> None:
        """Call ``hook`` in the ingest transaction after each newly stored event, at ``order`` (``batch``:
        its batch form, as for :meth:`add_raise_hook`)."""

    def add_resolve_hook(self, hook: ResolveHook, order: HookOrder) -> None:
        """Call ``hook`` in the resolving transaction of every alert: stop the feature's side effects."""

    def add_outbox_channel(self, name: str, send: OutboxSender) -> None:
        """Deliver outbox commands addressed to channel ``name`` with ``send``."""
