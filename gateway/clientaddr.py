"""The client address of a request: the one every per-address limit and log line uses.

Behind a load balancer the TCP peer is the balancer, and the client is in ``X-Forwarded-For``.
That header is believed only when the peer is a configured trusted proxy (anyone else could
write any address into it). It is read from the right, each trusted proxy having appended the
address it saw, skipping trusted hops; the first untrusted one is the client. A malformed
header gives the peer address: a broken header must not let a client pick its own bucket.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Sequence

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

UNKNOWN = "unknown"  # no peer address (a unix socket): all such clients share one bucket


def client_address(peer_text: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]) -> str:
    """The client of a request from ``peer_text`` (``request.remote``) and the values of its
    ``X-Forwarded-For`` headers (several headers read as one list)."""
    peer = parse_address(peer_text or "")
    if peer is None:
        return peer_text or UNKNOWN
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return str(peer)
    hops = ",".join(forwarded_for).split(",")
    if hops == [""]:
        return str(peer)
    client = peer
    for raw in reversed(hops):
        hop = parse_address(raw)
        if hop is None:
            return str(peer)
        client = hop
        if not _trusted(hop, trusted_proxies):
            break
    return str(client)


def parse_address(text: str) -> Address | None:
    """An IP address as proxies write it (``203.0.113.7``, ``2001:db8::1``, also with a port:
    ``203.0.113.7:51000``, ``[2001:db8::1]:51000``); None when it is not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:203.0.113.7 is the IPv4 client 203.0.113.7
    return address


def _trusted(address: Address, trusted_proxies: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted_proxies)
