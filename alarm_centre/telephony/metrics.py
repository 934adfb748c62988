"""Telephony's metrics on the bridge's Prometheus registry: answer times, calls, legs, webhooks, and every
failure of the telephony loop (it keeps callers connected: it never fails silently)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class TelephonyMetrics:
    def __init__(self, registry: Any) -> None:
        self.answer_seconds = Histogram(
            "telecare_call_answer_seconds",
            "Offered to answered (inbound calls), and signal to speech (per alert), in seconds",
            ["measure"],
            registry=registry,
            buckets=(5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
        )
        self.share = Gauge(
            "telecare_call_service_level_ratio",
            "Share answered within the threshold over the last 24 h (met / (met + late))",
            ["measure", "threshold_s"],
            registry=registry,
        )
        self.meets = Gauge(
            "telecare_call_service_level_met",
            "1 when the last 24 h meet the view of the standard (97.5/60+99/180, or 98.5/60), else 0",
            ["measure", "view"],
            registry=registry,
        )
        self.counted = Gauge(
            "telecare_calls_last_24h",
            "Inbound calls (offered) and alerts with calls (speech) in the last 24 h; abandoned apart",
            ["measure", "kind"],
            registry=registry,
        )
        self.live = Gauge(
            "telecare_calls_live", "Calls not yet ended, by state", ["state"], registry=registry
        )
        self.legs = Counter(
            "telecare_call_legs",
            "Legs placed, stopped and hung up at Twilio, by role and result",
            ["role", "result"],
            registry=registry,
        )
        self.webhooks = Counter(
            "telecare_call_webhooks",
            "Twilio call webhooks (status, conference, recording) by route and result",
            ["route", "result"],
            registry=registry,
        )
        self.recordings = Counter(
            "telecare_call_recordings", "Recordings stored, played and deleted", ["event"], registry=registry
        )
        self.loop_errors = Counter(
            "telecare_telephony_loop_errors",
            "Failures inside the telephony loop, by stage (each is logged with its traceback)",
            ["stage"],
            registry=registry,
        )
