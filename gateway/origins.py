"""Which web pages may open a websocket: the ``Origin`` check that stops cross-site websocket
hijacking.

A browser sends ``Origin`` with every websocket handshake, and a page cannot forge it; a
websocket, unlike ``fetch``, is not held back by CORS. Without this check any site an agent
visits could open ``/agent/ws`` from the agent's browser. So a handshake with an ``Origin`` that
is not allowed is refused with 403 before the upgrade.

A handshake **without** ``Origin`` is let through: it does not come from a web page (scripts,
the ``websockets`` library, curl), and such a client has to hold a token anyway.

Always allowed: the gateway's own origin, i.e. an ``Origin`` whose host and port are the
request's ``Host`` (a page the gateway served itself, such as ``/chat``), and the origins in
``server.allowed_origins`` (the gateway's other names, behind a proxy). A web chat channel adds
its ``allowed_origins``: the sites that embed the widget (``"*"``: any site).
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

from aiohttp import web

ANY = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case without a default port, as browsers send it;
    ValueError for anything else (a path, a query, a user name)."""
    if value == ANY:
        return ANY
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{value!r} is not an origin like https://www.example.com (scheme http or https and a host)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not an origin: leave out the path (https://www.example.com, not .../page)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has a bad port") from exc
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[scheme] else "")


def normalize_origins(values: Iterable[str]) -> list[str]:
    return [normalize_origin(v) for v in values]


class OriginPolicy:
    """The origins allowed on one websocket endpoint, besides the gateway's own."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(normalize_origins(allowed))

    def allows(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if ANY in self.allowed:
            return True
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return False  # "null" (a sandboxed frame, a file:// page) and anything malformed
        return normalized in self.allowed or _same_host(normalized, request.host)

    def check(self, request: web.Request) -> None:
        """Raise 403 for a handshake from a page that is not allowed (call before the upgrade)."""
        if not self.allows(request):
            raise web.HTTPForbidden(
                text=f"websocket from origin {request.headers.get('Origin')!r} is not allowed here "
                     "(see allowed_origins in docs/configuration.md)")


def _same_host(origin: str, host_header: str) -> bool:
    """Whether ``origin`` names the host and port the request was sent to (its ``Host``)."""
    scheme, _, authority = origin.partition("://")
    host = host_header.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if host.endswith(f":{default}"):
        host = host[: -len(f":{default}")]
    return authority == host
