"""Escalation's metrics on the bridge's Prometheus registry: service levels, SMS and calls, webhooks,
and every failure of the escalation loop (a loop that keeps people safe never fails silently)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class EscalationMetrics:
    """Service levels and escalation traffic on the bridge's registry."""

    def __init__(self, registry: Any) -> None:
        self.ack_seconds = Histogram(
            "telecare_acknowledge_seconds",
            "From an alert being raised to its acknowledgement (test alerts left out)",
            ["priority"],
            registry=registry,
            buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800),
        )
        self.share = Gauge(
            "telecare_service_level_ratio",
            "Share of alerts raised in the last 24 h acknowledged within the threshold (met / (met + late))",
            ["priority", "threshold_s"],
            registry=registry,
        )
        self.counted = Gauge(
            "telecare_service_level_alerts",
            "Alerts raised in the last 24 h (tests left out)",
            ["priority"],
            registry=registry,
        )
        self.notifications = Counter(
            "telecare_notifications",
            "SMS and calls attempted, by result",
            ["channel", "purpose", "result"],
            registry=registry,
        )
        self.pending = Gauge(
            "telecare_escalation_pending",
            "Pending escalation steps and notifications",
            ["kind"],
            registry=registry,
        )
        self.loop_errors = Counter(
            "telecare_escalation_loop_errors",
            "Failures inside the escalation loop, by stage (each is logged with its traceback)",
            ["stage"],
            registry=registry,
        )
        self.webhooks = Counter(
            "telecare_twilio_webhooks",
            "Twilio webhooks by route and result",
            ["route", "result"],
            registry=registry,
        )
