"""The forwarder's metrics on the bridge's Prometheus registry: frames by path and result, paths up."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge


class ForwardMetrics:
    """``telecare_dc09_forward_frames_total`` and ``telecare_dc09_forward_path_up``."""

    def __init__(self, registry: Any) -> None:
        self.frames = Counter(
            "telecare_dc09_forward_frames",
            "DC-09 frames sent to upstream centres, by path, kind (message, link_test) and result "
            "(ack, nak, duh, unreadable, timeout, refused)",
            ["path", "kind", "result"],
            registry=registry,
        )
        self.path_up = Gauge(
            "telecare_dc09_forward_path_up",
            "1 while an upstream path answers within its link-test interval, 0 while it is down",
            ["path"],
            registry=registry,
        )
        self.pending = Gauge(
            "telecare_dc09_forward_pending",
            "Forwards not yet answered by any path",
            registry=registry,
        )
