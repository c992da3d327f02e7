"""One upstream pool per service (api-contracts §2.1): a slow service never starves the others.

Each service gets its own aiohttp session and connector (its own keep-alive connections) and at
most `size` requests in flight from this gateway process. A request that finds every slot busy
waits at most `wait` seconds for one (then the proxy answers 503 `SERVICE_UNAVAILABLE`,
`Retry-After: 1`). A slot is held from just before the upstream request starts until its
response has been relayed; the proxy takes one only once the client's body has arrived (see
`gateway.bodies`), so a client that is still sending never holds one.

Why an explicit semaphore rather than the connector's own `limit` with `ClientTimeout.connect`:
aiohttp's `connect` timeout covers both waiting for a pooled connection and opening a new one,
and raises the same `ConnectionTimeoutError` for both, so "the pool is full" (503, the service
is busy) could not be told from "the service does not accept connections" (502). A free slot is
taken without a coroutine (`try_acquire`); the connector keeps `limit=size` as a backstop.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiohttp
from aiohttp import ClientRequest
from prometheus_client import Gauge

POOL_SIZE = Gauge(
    "paysys_gateway_pool_size", "Request slots of a service's upstream pool", ["service"]
)
POOL_IN_FLIGHT = Gauge(
    "paysys_gateway_pool_in_flight", "Requests holding a slot of a service's pool", ["service"]
)

# Below uvicorn's 5 s keep-alive, so a pool never reuses a socket the service is closing.
UPSTREAM_KEEPALIVE = 4.0


class ServiceClient:
    """The HTTP client of one service: its session (own connector) and its request slots."""

    __slots__ = ("free", "in_flight", "name", "session", "size", "wait", "waiters")

    def __init__(self, name: str, size: int, wait: float) -> None:
        self.name = name
        self.size = size
        self.wait = wait
        self.free = size
        self.in_flight = 0  # slots taken now
        # Requests waiting for a slot, first come first served; a freed slot is handed to the
        # first one still waiting (never to a newcomer that happens to run first).
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.session: aiohttp.ClientSession | None = None
        POOL_SIZE.labels(name).set(size)
        POOL_IN_FLIGHT.labels(name).set_function(lambda: self.in_flight)  # read when scraped

    def start(
        self, request_class: type[ClientRequest], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientSession:
        self.session = proxy_session(self.size, request_class, timeout)
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def try_acquire(self) -> bool:
        """Take a free slot now (the hot path: no coroutine, no suspension)."""
        if self.free and not self.waiters:
            self.free -= 1
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> bool:
        """Take a slot, waiting at most `wait` seconds for one (→ False: none freed in time)."""
        if self.try_acquire():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except TimeoutError:
            if waiter.cancelled():
                self.waiters.remove(waiter)
                return False
            # The slot was handed over just as the wait ran out: take it after all.
        except BaseException:  # the request itself is going away (client gone, shutdown)
            if waiter.cancelled():
                self.waiters.remove(waiter)
            else:  # handed a slot it will not use: pass it on
                self.in_flight += 1
                self.release()
            raise
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():  # a waiter cancelled by its request's end is skipped
                waiter.set_result(None)  # the slot goes straight to it
                return
        self.free += 1


def proxy_session(
    limit: int, request_class: type[ClientRequest], timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    """An aiohttp session as the proxy needs it: pooled keep-alive connections, no cookies kept
    (one client's never reach another), bodies passed through as encoded, no proxy from the
    environment."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        keepalive_timeout=UPSTREAM_KEEPALIVE,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        request_class=request_class,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        timeout=timeout,
    )


def build_clients(sizes: dict[str, int], wait: float) -> dict[str, ServiceClient]:
    return {name: ServiceClient(name, size, wait) for name, size in sizes.items()}
