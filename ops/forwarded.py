"""Who the client is, behind a reverse proxy: the one place X-Forwarded-For and
X-Forwarded-Proto are read.

    application = TrustedProxies(ProtocolTypeRouter(...))   # steerlab_site/asgi.py

daphne reports the connection's peer as `scope["client"]`. When that peer is one of
`STEERLAB_TRUSTED_PROXIES` (addresses or CIDR networks), the middleware rewrites the scope
before anything else sees it:

- `scope["client"]` becomes the rightmost address of the X-Forwarded-For chain that is not a
  trusted proxy (each trusted proxy appends the address it saw, so everything left of the first
  untrusted hop could have been written by the client). A chain of trusted hops only gives its
  leftmost; an entry that is not an address ends the walk at the last hop read.
- `scope["scheme"]` follows X-Forwarded-Proto (the nearest proxy's value, `http` or `https`;
  `ws`/`wss` for websockets), which is what Django's `request.scheme`, `is_secure()` and the
  HTTPS redirect read.

From any other peer both headers, and the other forwarding headers (Forwarded, X-Real-IP, the
header SECURE_PROXY_SSL_HEADER names), are dropped from the scope, so no code below can trust
them by mistake: the client is the peer, whatever it writes. That is what the log-in and
sign-up throttles count (`ops.throttling.client_address` reads REMOTE_ADDR, which Django takes
from `scope["client"]`). daphne runs without `--proxy-headers`, which trusted the leftmost
X-Forwarded-For from anyone.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

FORWARDED_FOR = b"x-forwarded-for"
FORWARDED_PROTO = b"x-forwarded-proto"
# Dropped from untrusted peers: headers other code or libraries read as proxy statements.
FORWARDING_HEADERS = frozenset({FORWARDED_FOR, FORWARDED_PROTO, b"forwarded", b"x-real-ip"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(configured: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in configured)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it in X-Forwarded-For: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
    `[::1]:5678`; None for anything else (`unknown`, garbage)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client reaching an IPv6 socket shows as ::ffff:a.b.c.d: the same client.
    return getattr(address, "ipv4_mapped", None) or address


def is_trusted(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in networks)


def forwarded_client(peer: Address, chain: list[str], networks: tuple[Network, ...]) -> Address:
    """The client behind trusted `peer`: the rightmost hop of `chain` (X-Forwarded-For, left to
    right) that is not itself a trusted proxy."""
    client = peer
    for hop in reversed(chain):
        address = parse_address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address, networks):
            break
    return client


class TrustedProxies:
    """ASGI middleware: the client address and scheme from a trusted proxy's forwarding
    headers, and from nobody else's (the module's docstring has the rule)."""

    def __init__(self, app) -> None:
        self.app = app

    def __getattr__(self, name):
        # The wrapped router's own attributes (application_mapping) stay where callers look.
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        return await self.app(self.rewrite(scope), receive, send)

    @staticmethod
    def rewrite(scope: dict) -> dict:
        networks = _networks(tuple(settings.STEERLAB_TRUSTED_PROXIES))
        client = scope.get("client")
        peer = parse_address(str(client[0])) if client else None
        headers = list(scope.get("headers") or [])
        if not is_trusted(peer, networks):
            dropped = FORWARDING_HEADERS | _ssl_header()
            return {**scope, "headers": [(k, v) for k, v in headers if k.lower() not in dropped]}
        scope = dict(scope)
        chain = [hop for k, v in headers if k.lower() == FORWARDED_FOR for hop in v.decode("latin-1").split(",")]
        if chain:
            scope["client"] = [str(forwarded_client(peer, chain, networks)), 0]
        protos = [v.decode("latin-1") for k, v in headers if k.lower() == FORWARDED_PROTO]
        proto = protos[-1].split(",")[-1].strip().lower() if protos else ""
        if proto in ("http", "https"):
            secure = proto == "https"
            scope["scheme"] = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
        return scope


def _ssl_header() -> frozenset[bytes]:
    """The header SECURE_PROXY_SSL_HEADER names, as it arrives ("HTTP_X_FOO" → b"x-foo")."""
    named = settings.SECURE_PROXY_SSL_HEADER
    if not named:
        return frozenset()
    return frozenset({named[0].removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")})
