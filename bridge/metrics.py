"""Prometheus metrics for one bridge node, on a registry of its own (so tests can run many bridges)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from alarm_centre.faults import ECHO_SUMMARY_EVERY_S, FaultLog

log = logging.getLogger(__name__)


class BridgeMetrics:
    """Every metric the bridge exports; ``node`` is a constant label so several nodes can be told apart."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry()
        self.node = node
        self.info = Gauge("telecare_bridge_info", "This bridge node", ["node"], registry=self.registry)
        self.info.labels(node).set(1)
        self.events = Counter(
            "telecare_events_received",
            "Device events received, by type and result",
            ["type", "result", "transport"],
            registry=self.registry,
        )
        self.rejects = Counter(
            "telecare_events_rejected_reasons",
            "Rejected device messages, by kind of problem",
            ["reason", "transport"],
            registry=self.registry,
        )
        self.unstored = Counter(
            "telecare_events_unstored",
            "Events not acknowledged because the store could not commit",
            ["transport"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "telecare_ack_latency_seconds",
            "From receiving an event to sending its ack",
            ["transport"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.open_alerts = Gauge(
            "telecare_open_alerts",
            "Open alerts by priority and state",
            ["priority", "state"],
            registry=self.registry,
        )
        self.commands = Counter(
            "telecare_commands_sent",
            "Commands sent to units, by command and result",
            ["cmd", "result"],
            registry=self.registry,
        )
        self.mqtt_connected = Gauge(
            "telecare_mqtt_connected", "1 while subscribed to device events", registry=self.registry
        )
        self.mqtt_reconnects = Counter(
            "telecare_mqtt_reconnects", "Broker connections lost and retried", registry=self.registry
        )
        #: Filled from the store by :meth:`count_round_trips` (PostgreSQL only).
        self._round_trips: Callable[[], dict[str, int]] | None = None
        self.registry.register(_RoundTripCollector(self))
        self.store_writable = Gauge(
            "telecare_store_writable", "1 while the store accepts writes", registry=self.registry
        )
        self.batch_size = Histogram(
            "telecare_commit_batch_size",
            "Events per group commit",
            registry=self.registry,
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
        )
        self.commit_seconds = Histogram(
            "telecare_commit_seconds",
            "Seconds a group commit's transaction took, by where it ran (help, others, inline)",
            ["lane"],
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.http_errors = Counter(
            "telecare_http_errors", "HTTP requests answered with an error", ["status"], registry=self.registry
        )
        self.serial_link_up = Gauge(
            "telecare_serial_link_up",
            "1 while a configured unit serial port is open",
            ["port"],
            registry=self.registry,
        )
        self.serial_frames = Counter(
            "telecare_serial_frames",
            "Unit frames on serial lines, by outcome "
            "(accepted, duplicate, rejected, malformed, store_unavailable)",
            ["port", "outcome"],
            registry=self.registry,
        )
        self.modem_ready = Gauge(
            "telecare_modem_ready",
            "1 while the GSM modem is initialised and answering",
            ["port"],
            registry=self.registry,
        )
        self.modem_signal_dbm = Gauge(
            "telecare_modem_signal_dbm",
            "GSM signal strength from AT+CSQ (NaN when the modem reports no signal)",
            ["port"],
            registry=self.registry,
        )
        self.modem_registered = Gauge(
            "telecare_modem_registered",
            "1 while the modem is registered on a network (home or roaming)",
            ["port"],
            registry=self.registry,
        )
        self.sms_messages = Counter(
            "telecare_sms_messages",
            "SMS handled by the GSM modem, by outcome "
            "(accepted, duplicate, rejected, ignored, store_unavailable, deleted)",
            ["outcome"],
            registry=self.registry,
        )
        self.sms_sent = Counter(
            "telecare_sms_sent", "SMS commands sent to units, by result", ["result"], registry=self.registry
        )
        self.loop_errors = Counter(
            "telecare_loop_errors",
            "Rounds of a background loop that failed and were survived, by loop",
            ["loop"],
            registry=self.registry,
        )
        self._loop_faults: dict[str, FaultLog] = {}
        self.memory_returned = Counter(
            "telecare_memory_returned_bytes",
            "Freed memory the C allocator handed back to the system (bridge/memory.py): RSS before a trim "
            "minus after",
            registry=self.registry,
        )

    def observe_batch(self, size: int, seconds: float, lane: str) -> None:
        """A group commit: its events and how long its transaction took (``GroupCommitter``'s observer)."""
        self.batch_size.observe(size)
        self.commit_seconds.labels(lane).observe(seconds)

    def count_round_trips(self, read: Callable[[], dict[str, int]]) -> None:
        """Export ``telecare_store_round_trips_total{kind}`` from the store's own counts (``read``)."""
        self._round_trips = read

    @contextlib.contextmanager
    def loop_round(self, loop: str) -> Iterator[None]:
        """One round of the safety loop ``loop``: an error is counted in ``telecare_loop_errors_total``
        and logged as the loop's fault (:class:`alarm_centre.faults.FaultLog`: the traceback when it
        starts, a summary at most once a second while it lasts, a line when a round works again), and
        the loop goes on. Cancellation is not an error and passes through."""
        fault = self._loop_faults.get(loop)
        if fault is None:
            fault = self._loop_faults[loop] = FaultLog(
                log,
                f"{loop} round failed",
                level=logging.WARNING,
                traceback=True,
                every_s=ECHO_SUMMARY_EVERY_S,
            )
        try:
            yield
        except Exception as exc:
            self.loop_errors.labels(loop).inc()
            fault.failed(exc)
        else:
            fault.recovered()


class _RoundTripCollector(Collector):
    """Statements sent to the database server, by kind (``write``: in write transactions; ``read``)."""

    def __init__(self, metrics: BridgeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        read = self._metrics._round_trips
        if read is None:
            return
        family = CounterMetricFamily(
            "telecare_store_round_trips",
            "Statements sent to the database server (each waits for its answer), by kind",
            labels=["kind"],
        )
        for kind, total in read().items():
            family.add_metric([kind], total)
        yield family
