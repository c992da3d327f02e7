"""What every paysys HTTP server refuses before the app sees a request (api-contracts §2.1).

The limits themselves (`EdgeLimits`, from `Settings`), the client identity connections are
counted under (`core.clientip.client_key`), and the raw enveloped answers the protocol writes
when it refuses a request (`refusal`). The enforcement lives in
`core.serving.CoalescingHttpToolsProtocol`.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from prometheus_client import Counter

from paysys.core.clientip import TrustedProxies, client_key, normalise
from paysys.core.config import Settings, get_settings
from paysys.core.middleware import API_CSP, SECURITY_HEADERS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED = Counter(
    "paysys_http_refused_total",
    "Connections or requests refused by the HTTP server before the app saw them",
    ["reason"],  # per_client, busy, header_timeout, body_timeout, headers_too_large
)


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout: float = 10.0  # request line + headers, from connect / first byte (s)
    body_timeout: float = 30.0  # the whole body, from the end of the headers (s)
    max_header_bytes: int = 16 * 1024
    max_connections_per_client: int = 256
    uncapped: tuple[Network, ...] = ()  # peers never capped per client (trusted proxies)

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            header_timeout=settings.request_header_timeout,
            body_timeout=settings.request_body_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_connections_per_client=settings.max_connections_per_client,
            uncapped=TrustedProxies(settings.trusted_proxies).networks,
        )

    def client_of(self, peer: str) -> str | None:
        """The key a peer's connections are counted under; None when it is not capped."""
        ip = normalise(peer)
        if ip is not None and self.uncapped:
            address = ipaddress.ip_address(ip)
            if any(address in net for net in self.uncapped):
                return None
        return client_key(peer)


@lru_cache(maxsize=1)
def settings_limits() -> EdgeLimits:
    """The limits of this process's settings (`get_settings()`)."""
    return EdgeLimits.from_settings(get_settings())


def error_response(
    status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an enveloped error that closes the connection, for answers made by
    the server itself (no app, no middleware: the security headers are added here)."""
    request_id = str(uuid.uuid4())
    error = {"code": code, "message": message, "requestId": request_id}
    body = json.dumps({"success": False, "error": error}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
        (b"x-request-id", request_id.encode()),
        *SECURITY_HEADERS,
        (b"content-security-policy", API_CSP),
    ]
    return headers, body


def refusal(status: int, code: str, message: str) -> bytes:
    """`error_response` as the raw HTTP/1.1 bytes the protocol writes to the socket."""
    headers, body = error_response(status, code, message)
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def server_busy(scope: Any, receive: Any, send: Any) -> None:
    """503 SERVICE_UNAVAILABLE for a request over the process-wide cap (in place of uvicorn's
    plain-text `service_unavailable`)."""
    headers, body = error_response(
        503,
        "SERVICE_UNAVAILABLE",
        "The server is at its connection limit, retry later",
        [(b"retry-after", b"1")],
    )
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
