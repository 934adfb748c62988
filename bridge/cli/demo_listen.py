"""Where a demo's extra receiver listens (``--dc09-listen``, ``--scaip-listen``): the address as given,
and whether it is free before the demo starts."""

from __future__ import annotations

import re
import socket

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
