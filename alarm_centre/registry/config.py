"""Remote configuration: the states a requested settings version goes through.

A version is *pending* from the request until the unit confirms it (*applied*), a newer version or the
device's retirement replaces it (*superseded*), or the outbox gives up delivering it (*failed*).
"""

from __future__ import annotations

from enum import StrEnum

from alarm_centre.store.tx import Row


class ConfigState(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    SUPERSEDED = "superseded"
    FAILED = "failed"


def config_state(version: Row) -> ConfigState:
    """A stored version's state (a ``device_configs`` row joined with its outbox ``outbox_done_at``)."""
    if version["applied_at"]:
        return ConfigState.APPLIED
    if version["superseded_at"]:
        return ConfigState.SUPERSEDED
    if version["outbox_done_at"]:
        return ConfigState.FAILED
    return ConfigState.PENDING
