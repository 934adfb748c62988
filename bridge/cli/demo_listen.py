"""What the demo's extra receivers (``--with-dc09``, ``--with-scaip``) share: where one listens (the
address as given, and whether it is free before the demo starts) and registering its simulated units."""

from __future__ import annotations

import re
import socket
from typing import Any

from alarm_centre.registry.service import Registry
from alarm_centre.store import NotFound
from devices.registry import Device, Resident

#: Who the demo's registry writes are from, in the audit log.
SOURCE = "cli"

_LISTEN_RE = re.compile(r"^(\S+):([0-9]{1,5})$")


def listen_address(text: str) -> str:
    """``host:port`` (port 0 picks a free one); ValueError otherwise."""
    match = _LISTEN_RE.fullmatch(text)
    if match is None or int(match[2]) > 65535:
        raise ValueError(f"{text!r} is not host:port (port 0-65535)")
    return text


def check_free(listen: str) -> None:
    """Raise OSError when ``listen`` cannot be bound for TCP and UDP (another program has the port), so
    the demo says so in one line before it starts; port 0 is always free."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        for family, _, _, _, address in socket.getaddrinfo(host.strip("[]"), int(port), type=kind):
            with socket.socket(family, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server
                probe.bind(address)


async def register_unit(registry: Registry, resident: Resident, device: dict[str, Any]) -> None:
    """Register a demo resident and unit, again on every start (the same records): the resident once,
    the unit created or brought back to ``device``."""
    try:
        await registry.get_resident(resident.id)
    except NotFound:
        await registry.create_resident(resident, actor="demo", source=SOURCE)
    unit = Device.model_validate(device)
    try:
        await registry.device_model(unit.id)
    except NotFound:
        await registry.create_device(unit, actor="demo", source=SOURCE)
    else:
        await registry.update_device(unit, actor="demo", source=SOURCE)
