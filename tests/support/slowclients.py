"""The slow-client attack of api-contracts §2.1 and the normal client it must not hurt.

Shared by the e2e drill (`tests/e2e/test_edge_drills.py`) and the benchmark
(`bench/slow_clients.py`). The attacker runs as its own process, so its work never delays the
normal client's measurements inside the caller's event loop:

    python -m tests.support.slowclients --target http://127.0.0.1:PORT --source 127.0.0.2 \\
        --connections 1000 --seconds 20 --logins 100

- `connections` sockets from the `source` address: half stall inside the request headers,
  half inside a small body to `POST /api/payments/webhooks/psp` (no token needed); each sends
  one more byte every `interval` seconds. A socket the server closes is opened again after a
  pause (an attacker keeps up the pressure), at most once per `interval` per slot.
- `logins` failed logins from the same address, spread over the attack (10x the default
  `AUTH_RATE_LIMIT_MAX` of 10 per minute by default).
- Prints `READY <open>` once every socket has been opened once, then a JSON summary at the end:
  sockets opened, closed by the server, the statuses the server answered on them, the login
  statuses. Bounded by `seconds`; loopback (or the project's own test addresses) only.

The normal client (`measure`) sends authenticated GETs one after another from its own address
and records each latency and status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

WEBHOOK = "/api/payments/webhooks/psp"
BODY_SIZE = 512  # the small body the body-stallers announce (and never finish)


def raise_open_files(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed) to at least `wanted`; → the new soft
    limit. Child processes inherit it: call before starting the servers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


@dataclass
class AttackStats:
    opened: int = 0
    closed_by_server: int = 0
    connect_errors: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # status lines seen on stalled sockets
    logins: Counter[str] = field(default_factory=Counter)
    open_now: int = 0
    peak_open: int = 0


class Attack:
    def __init__(self, host: str, port: int, source: str, interval: float, stop_at: float) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.interval = interval
        self.stop_at = stop_at
        self.stats = AttackStats()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, local_addr=(self.source, 0))

    async def stall(self, slot: int, in_body: bool, first: asyncio.Event) -> None:
        """One slot: a request that never completes, one byte per interval, reopened if closed."""
        loop = asyncio.get_running_loop()
        while loop.time() < self.stop_at:
            try:
                reader, writer = await self.connect()
            except OSError:
                self.stats.connect_errors += 1
                first.set()
                await asyncio.sleep(self.interval)
                continue
            self.stats.opened += 1
            self.stats.open_now += 1
            self.stats.peak_open = max(self.stats.peak_open, self.stats.open_now)
            first.set()
            try:
                await self._trickle(reader, writer, in_body)
            finally:
                self.stats.open_now -= 1
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            await asyncio.sleep(self.interval)  # pause before reopening: bounded pressure

    async def _trickle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, in_body: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        if in_body:
            head = (
                f"POST {WEBHOOK} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {BODY_SIZE}\r\n\r\n{{"
            ).encode()
            drip = b" "
        else:
            head = f"GET /api/payments HTTP/1.1\r\nHost: {self.host}\r\nX-Pad: ".encode()
            drip = b"a"
        try:
            writer.write(head)
            await writer.drain()
            sent = 0
            while loop.time() < self.stop_at and sent < BODY_SIZE - 2:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.interval)
                except TimeoutError:
                    writer.write(drip)
                    await writer.drain()
                    sent += 1
                    continue
                if not line:  # closed by the server
                    self.stats.closed_by_server += 1
                    return
                if line.startswith(b"HTTP/1.1 "):
                    self.stats.answers[line[9:12].decode()] += 1
        except (OSError, asyncio.IncompleteReadError):
            self.stats.closed_by_server += 1

    async def login(self, index: int) -> None:
        body = json.dumps({"email": f"nobody{index}@example.com", "password": "Wrong-pass1!"})
        request = (
            f"POST /api/auth/login HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        ).encode()
        try:
            reader, writer = await self.connect()
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 15)
            self.stats.logins[status[9:12].decode() or "closed"] += 1
            writer.close()
        except (OSError, TimeoutError) as exc:
            self.stats.logins[type(exc).__name__] += 1


async def attack(
    target: str, source: str, connections: int, seconds: float, logins: int, interval: float
) -> AttackStats:
    url = urlsplit(target)
    loop = asyncio.get_running_loop()
    runner = Attack(url.hostname or "127.0.0.1", url.port or 80, source, interval, 0.0)
    runner.stop_at = loop.time() + seconds
    firsts = [asyncio.Event() for _ in range(connections)]
    slots = []
    for slot in range(connections):
        slots.append(asyncio.create_task(runner.stall(slot, slot % 2 == 1, firsts[slot])))
        if slot % 50 == 49:
            await asyncio.sleep(0.01)  # a fast ramp, not one burst of SYNs
    await asyncio.gather(*(event.wait() for event in firsts))
    print(f"READY {runner.stats.open_now}", flush=True)
    flood = []
    spread = max(0.0, runner.stop_at - loop.time() - 2) / max(1, logins)
    for index in range(logins):
        flood.append(asyncio.create_task(runner.login(index)))
        await asyncio.sleep(spread)
    await asyncio.gather(*flood)
    await asyncio.gather(*slots)
    return runner.stats


@dataclass
class Sample:
    latencies_ms: list[float]
    statuses: Counter[int]
    errors: list[str]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(client: httpx.AsyncClient, path: str, count: int) -> Sample:
    """`count` GETs one after another; latency of each (ms), statuses, errors."""
    sample = Sample([], Counter(), [])
    for _ in range(count):
        started = time.perf_counter()
        try:
            response = await client.get(path)
        except httpx.HTTPError as exc:
            sample.errors.append(repr(exc))
            continue
        sample.latencies_ms.append((time.perf_counter() - started) * 1000)
        sample.statuses[response.status_code] += 1
        if response.status_code != 200:
            sample.errors.append(f"{response.status_code} {response.text[:200]}")
    return sample


def normal_client(base_url: str, source: str, token: str) -> httpx.AsyncClient:
    """The other client: its own source address, one keep-alive connection at a time."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        transport=httpx.AsyncHTTPTransport(local_address=source, retries=0),
        limits=httpx.Limits(max_connections=1, keepalive_expiry=2.0),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.slowclients")
    parser.add_argument("--target", required=True, help="the gateway, e.g. http://127.0.0.1:3000")
    parser.add_argument("--source", default="127.0.0.2", help="the attacker's own address")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between bytes")
    args = parser.parse_args(argv)
    raise_open_files(args.connections + 256)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        pass
    stats = asyncio.run(
        attack(args.target, args.source, args.connections, args.seconds, args.logins, args.interval)
    )
    summary = {
        "opened": stats.opened,
        "peak_open": stats.peak_open,
        "closed_by_server": stats.closed_by_server,
        "connect_errors": stats.connect_errors,
        "answers": dict(stats.answers),
        "logins": dict(stats.logins),
    }
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
