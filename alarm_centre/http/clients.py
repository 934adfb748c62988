"""Who is at the other end of a request: the client's address, believing ``X-Forwarded-For`` only from
the reverse proxies listed in ``http.trusted_proxies``. Used by the console's sign-in limits and by the
audit of reads ("from where").
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The parsed ``http.trusted_proxies`` (set when the console or the privacy feature starts).
TRUSTED_PROXIES: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")


def trusted_networks(entries: tuple[str, ...] | list[str]) -> tuple[Network, ...]:
    """Parse ``http.trusted_proxies`` (addresses or CIDR networks); ValueError names a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def forwarded_client(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then X-Forwarded-For is read
    from the right, skipping further trusted proxies, and the first other hop is the client.

    A hop that is not an IP address ends the walk at the last trusted hop: a client can write anything
    at the left of the header, but only what trusted proxies appended is believed.
    """
    if peer is None:
        return "unknown"
    if not _within(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client
        client = hop
        if not _within(hop, trusted):
            return hop
    return client


def _within(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(request: web.Request) -> str:
    """The client's address (sign-in limits, the audit of reads): X-Forwarded-For only from
    ``http.trusted_proxies``."""
    trusted = request.app.get(TRUSTED_PROXIES, ())
    return forwarded_client(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
