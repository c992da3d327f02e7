"""The slow-client attack of api-contracts §2.1 and the normal client it must not hurt.

Shared by the e2e drill (`tests/e2e/test_edge_drills.py`) and the benchmark
(`bench/slow_clients.py`). The attacker runs as its own process, so its work never delays the
normal client's measurements inside the caller's event loop:

    python -m tests.support.slowclients --target http://127.0.0.1:PORT --source 127.0.0.2 \\
        --connections 1000 --seconds 20 --logins 100

- `connections` sockets from the `source` address: half stall inside the request headers,
  half inside a small body to `POST /api/payments/webhooks/psp` (no token needed); each sends
  one more byte every `interval` seconds. A socket the server closes is opened again after
  `reopen` seconds (an attacker keeps up the pressure, as slowloris does).
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
import os
import re
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast
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
    answers: Counter[str] = field(default_factory=Counter)  # statuses seen on stalled sockets
    logins: Counter[str] = field(default_factory=Counter)
    peak_open: int = 0


_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class Stalled(asyncio.Protocol):
    """One stalled request: its head is sent at once, then one byte per drip, never the end."""

    def __init__(self, attack: Attack, slot: int) -> None:
        self.attack = attack
        self.slot = slot
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport = self.transport
        transport.write(self.attack.heads[self.slot % 2])
        self.attack.opened(self)

    def data_received(self, data: bytes) -> None:
        for status in _STATUS.findall(data):
            self.attack.stats.answers[status.decode()] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.attack.lost(self)


class Attack:
    """`connections` slots, each holding one stalled request open; a slot whose connection the
    server closed is opened again after `reopen` seconds (slowloris keeps its count up the same
    way), until `stop_at`. Protocols, not streams, and one drip pass for all sockets: the
    attacker shares the machine with what it attacks and must cost little itself."""

    def __init__(
        self, host: str, port: int, sources: list[str], reopen: float, stop_at: float
    ) -> None:
        self.host = host
        self.port = port
        self.sources = sources  # slot k connects from sources[k % len(sources)]
        self.reopen = reopen
        self.stop_at = stop_at
        self.stats = AttackStats()
        self.open: set[Stalled] = set()
        self.stopping = False
        self.pending = 0  # connects under way
        self.tasks: set[asyncio.Task[None]] = set()
        self.heads = (
            f"GET /api/payments HTTP/1.1\r\nHost: {host}\r\nX-Pad: ".encode(),
            (
                f"POST {WEBHOOK} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {BODY_SIZE}\r\n\r\n{{"
            ).encode(),
        )
        self.drips = (b"a", b" ")  # a header that never ends; a body that never ends

    def spawn(self, slot: int) -> None:
        task = asyncio.get_running_loop().create_task(self.connect(slot))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        self.pending += 1
        try:
            await loop.create_connection(
                lambda: Stalled(self, slot),
                self.host,
                self.port,
                local_addr=(self.sources[slot % len(self.sources)], 0),
            )
        except OSError:
            self.stats.connect_errors += 1
            self.schedule(slot)
        finally:
            self.pending -= 1

    def opened(self, protocol: Stalled) -> None:
        self.stats.opened += 1
        self.open.add(protocol)
        self.stats.peak_open = max(self.stats.peak_open, len(self.open))

    def lost(self, protocol: Stalled) -> None:
        self.open.discard(protocol)
        if not self.stopping:
            self.stats.closed_by_server += 1
            self.schedule(protocol.slot)

    def schedule(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        if not self.stopping and loop.time() + self.reopen < self.stop_at:
            loop.call_later(self.reopen, self.spawn, slot)

    async def drip(self, interval: float, slices: int = 20) -> None:
        """One byte per socket per `interval`, the sockets taken in `slices` groups spread over
        the interval (a thousand independent slow clients, not one synchronised burst)."""
        loop = asyncio.get_running_loop()
        step = interval / slices
        turn = 0
        while loop.time() < self.stop_at:
            await asyncio.sleep(step)
            for protocol in list(self.open):
                if protocol.slot % slices != turn:
                    continue
                if protocol.transport is not None and not protocol.transport.is_closing():
                    protocol.transport.write(self.drips[protocol.slot % 2])
            turn = (turn + 1) % slices

    def close(self) -> None:
        self.stopping = True
        for protocol in list(self.open):
            if protocol.transport is not None:
                protocol.transport.abort()

    async def login(self, index: int) -> None:
        body = json.dumps({"email": f"nobody{index}@example.com", "password": "Wrong-pass1!"})
        request = (
            f"POST /api/auth/login HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        ).encode()
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, local_addr=(self.sources[0], 0)
            )
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 15)
            self.stats.logins[status[9:12].decode() or "closed"] += 1
            writer.close()
        except (OSError, TimeoutError) as exc:
            self.stats.logins[type(exc).__name__] += 1


async def attack(
    target: str,
    source: str,
    connections: int,
    seconds: float,
    logins: int,
    interval: float,
    reopen: float,
) -> AttackStats:
    url = urlsplit(target)
    loop = asyncio.get_running_loop()
    sources = source.split(",")
    runner = Attack(url.hostname or "127.0.0.1", url.port or 80, sources, reopen, 0.0)
    runner.stop_at = loop.time() + seconds
    for slot in range(connections):
        runner.spawn(slot)
        if slot % 50 == 49:
            await asyncio.sleep(0.01)  # a fast ramp, not one burst of SYNs
    while runner.pending:
        await asyncio.sleep(0.01)
    print(f"READY {len(runner.open)}", flush=True)
    dripping = loop.create_task(runner.drip(interval))
    flood = []
    spread = max(0.0, runner.stop_at - loop.time() - 2) / max(1, logins)
    for index in range(logins):
        flood.append(loop.create_task(runner.login(index)))
        await asyncio.sleep(spread)
    await asyncio.gather(*flood)
    await dripping
    runner.close()
    await asyncio.sleep(0.1)
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
    parser.add_argument(
        "--source",
        default="127.0.0.2",
        help="the attacker's own address, or several (comma-separated): sockets take them in "
        "turn; the logins come from the first",
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between bytes")
    parser.add_argument(
        "--reopen", type=float, default=2.0, help="seconds before a closed slot is reopened"
    )
    args = parser.parse_args(argv)
    raise_open_files(args.connections + 256)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        pass
    stats = asyncio.run(
        attack(
            args.target,
            args.source,
            args.connections,
            args.seconds,
            args.logins,
            args.interval,
            args.reopen,
        )
    )
    summary = {
        "opened": stats.opened,
        "peak_open": stats.peak_open,
        "cpu_seconds": round(sum(os.times()[:2]), 2),
        "closed_by_server": stats.closed_by_server,
        "connect_errors": stats.connect_errors,
        "answers": dict(stats.answers),
        "logins": dict(stats.logins),
    }
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
