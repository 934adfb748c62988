"""Prometheus metrics for one bridge node, on a registry of its own (so tests can run many bridges)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BridgeMetrics:
    """Every metric the bridge exports; ``node`` is a constant label so several nodes can be told apart."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry()
        self.node = node
        self.info = Gauge("telecare_bridge_info", "This bridge node", ["node"], registry=self.registry)
        self.info.labels(node).set(1)
        self.events = Counter(
            "telecare_events_received", "Device events received, by type and result",
            ["type", "result", "transport"], registry=self.registry,
        )
        self.rejects = Counter(
            "telecare_events_rejected_reasons", "Rejected device messages, by kind of problem",
            ["reason", "transport"], registry=self.registry,
        )
        self.unstored = Counter(
            "telecare_events_unstored", "Events not acknowledged because the store could not commit",
            ["transport"], registry=self.registry,
        )
        self.ack_latency = Histogram(
            "telecare_ack_latency_seconds", "From receiving an event to sending its ack",
            ["transport"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.open_alerts = Gauge("telecare_open_alerts", "Open alerts by priority and state",
                                 ["priority", "state"], registry=self.registry)
        self.commands = Counter("telecare_commands_sent", "Commands sent to units, by command and result",
                                ["cmd", "result"], registry=self.registry)
        self.mqtt_connected = Gauge("telecare_mqtt_connected", "1 while subscribed to device events",
                                    registry=self.registry)
        self.mqtt_reconnects = Counter("telecare_mqtt_reconnects", "Broker connections lost and retried",
                                       registry=self.registry)
        self.store_writable = Gauge("telecare_store_writable", "1 while the store accepts writes",
                                    registry=self.registry)
        self.batch_size = Histogram("telecare_commit_batch_size", "Events per group commit",
                                    registry=self.registry,
                                    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000))
        self.http_errors = Counter("telecare_http_errors", "HTTP requests answered with an error",
                                   ["status"], registry=self.registry)
