"""Which client address a connection or an HTTP request comes from.

The per-address limits (``realtime.quotas``) count by this address. It is the peer the
ASGI server reports (``scope["client"]``), unless that peer is one of
``REALTIME["TRUSTED_PROXIES"]``: then it is read from ``X-Forwarded-For``, walking from
the right past the trusted proxies, so a client cannot choose its own address by
sending the header itself. Headers from untrusted peers are never read.

Addresses are returned as keys for counting: IPv4 as is, IPv6 as its /64 network
(one subscriber line usually holds a whole /64, so counting single IPv6 addresses
would give one client 2**64 allowances), IPv4-mapped IPv6 as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from .conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPV6_PREFIX = 64


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def trusted_proxies() -> tuple[Network, ...]:
    return _networks(tuple(settings.TRUSTED_PROXIES))


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def _is_trusted(address, proxies: tuple[Network, ...]) -> bool:
    return any(address in network for network in proxies)


def _forwarded_for(headers) -> list[str]:
    values = [value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-for"]
    return [part for value in values for part in value.split(",") if part.strip()]


def client_address(scope: dict) -> str | None:
    """The counting key of the client an ASGI ``scope`` comes from, or None when the
    server reports no peer (a Unix socket with no trusted proxy in front)."""
    client = scope.get("client")
    proxies = trusted_proxies()
    peer = _parse(client[0]) if client else None
    if not proxies:
        if peer is not None:
            return _key(peer)
        return str(client[0]) if client else None
    # A peer on a Unix socket (no address) can only be the proxy in front of us.
    if peer is not None and not _is_trusted(peer, proxies):
        return _key(peer)
    hops = _forwarded_for(scope.get("headers", ()))
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            # Not an address: whatever the nearest proxy saw, it did not write this.
            return hop.strip()[:64]
        if not _is_trusted(address, proxies):
            return _key(address)
    if hops:
        address = _parse(hops[0])
        return _key(address) if address is not None else hops[0].strip()[:64]
    return _key(peer) if peer is not None else None


def reset() -> None:
    """Forget parsed settings (settings changed)."""
    _networks.cache_clear()
