"""The host a bridge feature is started with: the core :class:`alarm_centre.host.Host` plus what only the
bridge has (its configuration, its transport metrics, its own address).

``bridge/features.py`` lists the features; each is ``async def start(host: FeatureHost, stack) -> None``
and uses nothing of the bridge beyond this interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Protocol

from alarm_centre.host import Host

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.credentials import CredentialManager
    from bridge.metrics import BridgeMetrics


class FeatureHost(Host, Protocol):
    """What a feature in ``bridge/`` may use of the running bridge."""

    @property
    def config(self) -> Config:
        """The whole configuration; a feature reads its own sections."""

    @property
    def metrics(self) -> BridgeMetrics:
        """The transports' shared metrics (events, rejections, commands)."""

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds for the deadlines features keep (escalation steps); tests inject their own."""

    @property
    def http_url(self) -> str:
        """This node's own HTTP address, once the server is bound."""

    def provide_credentials(self, credentials: CredentialManager | None) -> None:
        """The registry feature hands over the unit-credential manager (CLI demo, broker sign-in)."""


#: A feature: started in order by the bridge, registering what it brings on the host and the stack.
Feature = Callable[[FeatureHost, AsyncExitStack], Awaitable[None]]
