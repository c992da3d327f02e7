"""The client's IP address: one rule for the gateway and every service (api-contracts §2.1).

The client is the socket peer, unless the peer is a trusted proxy (`TRUSTED_PROXIES`, a list
of IPs or CIDRs). In that case `X-Forwarded-For` is walked from right to left, skipping only
trusted addresses, and the first untrusted hop is the client. Hops left of it were written by
the client or by hosts nobody vouches for, so they are never believed. The left-most hop is
simply whatever the client chose to send.

- A hop that is not an IP address ends the walk. The client is then the trusted hop just
  right of it: the last address a trusted proxy vouched for. The client is always an address.
- When every hop is trusted, the left-most is the client (a caller inside the trusted network).
- Addresses are normalised: IPv6 compressed, IPv4-mapped IPv6 shown as IPv4, brackets and
  ports removed. An IPv6 zone (`%eth0`, free text to Python's `ipaddress`) makes a hop invalid.

Per-client limits key on `client_key(ip)`: the IPv4 address itself, or the /64 prefix of an
IPv6 address, since one subscriber usually holds a whole /64.

`RequestContextMiddleware` resolves every request once and keeps the result in the ASGI scope.
The gateway's proxy, `client_ip()` and the logs all read that one answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from starlette.requests import HTTPConnection
from starlette.types import Scope

from paysys.core.logging import get_logger

SCOPE_KEY = "paysys.client"
UNKNOWN_PEER = "unknown"  # no socket peer (e.g. a Unix socket): never trusted

log = get_logger("paysys.clientip")


@lru_cache(maxsize=4096)
def normalise(value: str) -> str | None:
    """An address as this module compares and shows it; None when `value` is not one."""
    text = value.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    if "%" in text:  # an IPv6 zone (`fe80::1%eth0`) is local to a host, and any text at all
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@lru_cache(maxsize=4096)
def client_key(ip: str) -> str:
    """The identity per-client limits count under: IPv4 as is (an IPv4-mapped IPv6 peer of a
    dual-stack socket is its IPv4 address), IPv6 by its /64."""
    normal = normalise(ip)
    if normal is None:
        return ip
    address = ipaddress.ip_address(normal)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return normal


class Forwarded(NamedTuple):
    ip: str  # the client
    forwarded_for: str  # X-Forwarded-For for the next hop: the client, the trusted hops, the peer
    via_proxy: bool  # the peer is trusted, so its X-Forwarded-Proto/-Host may be believed


class TrustedProxies:
    """`TRUSTED_PROXIES` and the walk over `X-Forwarded-For`; trust lookups are cached (the
    gateway asks on every request)."""

    def __init__(self, entries: Iterable[str]) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if not entry.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                log.warning("TRUSTED_PROXIES entry ignored: not an IP or CIDR", entry=entry)
        self.networks = tuple(networks)
        self.enabled = bool(networks)
        self.is_trusted = lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def resolve(self, peer: str, forwarded_for: str | None) -> Forwarded:
        """The client of a request from `peer` that carried `forwarded_for`."""
        peer = normalise(peer) or peer
        if not self.enabled or not self.is_trusted(peer):
            return Forwarded(peer, peer, False)
        chain = [peer]
        if forwarded_for:
            for entry in reversed(forwarded_for.split(",")):
                if not entry.strip():  # empty list members are allowed (RFC 9110 §5.6.1)
                    continue
                hop = normalise(entry)
                if hop is None:
                    break
                chain.append(hop)
                if not self.is_trusted(hop):
                    break
        chain.reverse()
        return Forwarded(chain[0], ", ".join(chain), True)


def forwarded_for_header(scope: Scope) -> str | None:
    """Every X-Forwarded-For field of the request, joined in order (one list, RFC 9110 §5.3)."""
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    return ", ".join(values) if values else None


def resolve_scope(scope: Scope, proxies: TrustedProxies) -> Forwarded:
    """The request's client, resolved once and kept in the scope."""
    resolved: Forwarded | None = scope.get(SCOPE_KEY)
    if resolved is None:
        client = scope.get("client")
        peer = client[0] if client else UNKNOWN_PEER
        forwarded = forwarded_for_header(scope) if proxies.enabled else None
        resolved = scope[SCOPE_KEY] = proxies.resolve(peer, forwarded)
    return resolved


def client_ip(connection: HTTPConnection) -> str | None:
    """The client IP of a service request (None when there is no socket peer)."""
    proxies: TrustedProxies = connection.app.state.trusted_proxies
    ip = resolve_scope(connection.scope, proxies).ip
    return None if ip == UNKNOWN_PEER else ip
