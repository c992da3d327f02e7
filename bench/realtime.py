"""Real-time updates benchmark (api-contracts §9): what an idle WebSocket costs the gateway, and
how long an event takes from the Redis Stream to a socket, next to a bare `XREAD` of the same
stream measured in the same run.

    .venv/bin/python -m bench.realtime [--idle 2000] [--sockets 1000] [--rate 200] [--seconds 10]

A gateway process (`paysys serve gateway`, as production runs it) on a private redis-server; no
service and no database is needed (the gateway checks tokens itself and reads the stream).
Clients: the `websockets` library in this process, each socket signed in as its own user, sent
through `X-Forwarded-For` from an address of its own (the gateway trusts loopback as a
proxy here) so the per-IP handshake limit (30 / 60 s) admits them.

1. idle: `--idle` sockets open and idle; the gateway's RSS growth divided by their number
   (target ≤ 20 KiB per connection).
2. latency: `--rate` `payment.created` events per second for `--seconds`, XADDed into the stream
   as the outbox relay does, each between two random users of the first `--sockets` sockets
   (so each event goes to 2 sockets, plus every admin socket with `--admins`). Latency = the
   socket's receive time minus the time just before the XADD (target p99 ≤ 50 ms at 200 events/s
   to 1,000 sockets). Baseline: a separate process doing nothing but `XREAD BLOCK` on the same
   stream and printing each entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.support import Processes, cpu_seconds, free_port, private_redis, service_env

DEAD = "http://127.0.0.1:9"


def raise_fd_limit(needed: int) -> None:
    """1,000+ sockets in this process (and the gateway it starts: children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, needed))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        raise SystemExit(f"need {needed} open files, the hard limit is {hard} (ulimit -Hn)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# -- the bare XREAD baseline (a process of its own) ------------------------------------------------
def xread_main(url: str) -> None:
    """Print `<paymentId> <receive time>` for every new entry of the stream, as fast as it can."""
    import redis

    client: Any = redis.Redis.from_url(url, decode_responses=True)
    last = "$"
    newest = client.xrevrange("events", count=1)
    if newest:
        last = newest[0][0]
    print("ready", flush=True)
    while True:
        reply = client.xread({"events": last}, block=5000, count=500)
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id
                now = time.time()
                payment = json.loads(fields["event"])["data"]["payment"]["id"]
                print(payment, now, flush=False)
        sys.stdout.flush()


class Baseline:
    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.realtime", "--xread", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the XREAD baseline did not start")
        self.received: dict[str, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            payment, _, at = line.partition(" ")
            self.received[payment] = float(at)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the driver -----------------------------------------------------------------------------------
class Clients:
    """Signed-in sockets; each records when messages about a payment reach it."""

    def __init__(self, gateway: str, settings: Any) -> None:
        from paysys.core.tokens import TokenCodec

        self.url = gateway.replace("http://", "ws://") + "/ws"
        self.codec = TokenCodec(settings)
        self.sockets: list[Any] = []
        self.users: list[uuid.UUID] = []
        self.readers: list[asyncio.Task[None]] = []
        self.arrivals: dict[str, list[float]] = {}

    async def open(self, count: int, role: str = "CUSTOMER") -> list[uuid.UUID]:
        from websockets.asyncio.client import connect

        opened: list[uuid.UUID] = []
        batch = 50
        for start in range(0, count, batch):
            chunk = []
            for index in range(start, min(count, start + batch)):
                user = uuid.uuid4()
                token, _ = self.codec.issue_access(
                    user_id=user, email="b@example.com", name="B", role=role, sid=str(user)
                )
                serial = len(self.sockets) + index - start  # an address of its own
                address = f"10.{serial >> 12 & 255}.{serial >> 4 & 255}.{serial & 15}"
                headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
                chunk.append(
                    (
                        user,
                        connect(
                            self.url,
                            additional_headers=headers,
                            proxy=None,
                            compression=None,
                            open_timeout=30,
                            max_size=2**20,
                        ),
                    )
                )
            sockets = await asyncio.gather(*(c for _, c in chunk))
            for (user, _), socket in zip(chunk, sockets, strict=True):
                hello = json.loads(await socket.recv())
                assert hello["type"] == "connected", hello
                self.sockets.append(socket)
                self.users.append(user)
                opened.append(user)
        return opened

    def listen(self, sockets: list[Any]) -> None:
        for socket in sockets:
            self.readers.append(asyncio.create_task(self._read(socket)))

    async def _read(self, socket: Any) -> None:
        async for raw in socket:
            now = time.time()
            message = json.loads(raw)
            if message.get("type") == "event":
                payment = message["payload"]["data"].get("paymentId")
                if payment:
                    self.arrivals.setdefault(payment, []).append(now)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(s.close() for s in self.sockets), return_exceptions=True)


async def publish(redis_url: str, users: list[uuid.UUID], rate: int, seconds: float) -> dict:
    """XADD `rate` payment.created per second; returns payment id → the time before its XADD."""
    from redis.asyncio import Redis

    from paysys.core.events.envelope import EventEnvelope
    from paysys.core.events.transport import STREAM, stream_fields

    redis: Any = Redis.from_url(redis_url, decode_responses=True)
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    start = time.perf_counter()
    try:
        for index in range(total):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sender, recipient = random.sample(users, 2)
            payment = str(uuid.uuid4())
            data = {
                "payment": {
                    "id": payment,
                    "senderId": str(sender),
                    "recipientId": str(recipient),
                    "amount": "10.00",
                    "currency": "USD",
                    "status": "pending",
                    "type": "instant",
                }
            }
            event = EventEnvelope(type="payment.created", source="bench", data=data)
            fields = stream_fields(str(event.id), event.type, json.dumps(event.to_wire()))
            sent[payment] = time.time()
            await redis.xadd(STREAM, fields, maxlen=100_000, approximate=True)
    finally:
        await redis.aclose()
    return sent


async def run(args: argparse.Namespace, gateway: str, gateway_pid: int, redis_url: str) -> None:
    from paysys.core.config import Settings

    clients = Clients(gateway, Settings())
    # Warm-up: imports, the first handshake's allocations, JWT cache.
    await clients.open(10)
    await asyncio.sleep(0.5)
    before = rss_kib(gateway_pid)
    started = time.perf_counter()
    await clients.open(args.idle)
    opened_in = time.perf_counter() - started
    await asyncio.sleep(2.0)  # let allocations settle
    after = rss_kib(gateway_pid)
    per_connection = (after - before) / args.idle
    print(
        f"idle: {args.idle} sockets opened in {opened_in:.1f} s; gateway RSS {before / 1024:.1f}"
        f" → {after / 1024:.1f} MiB: {per_connection:.1f} KiB per connection (target ≤ 20)",
        flush=True,
    )

    listening = clients.sockets[: args.sockets]
    users = clients.users[: args.sockets]
    admins = await clients.open(args.admins, "ADMIN") if args.admins else []
    clients.listen(listening + clients.sockets[len(clients.sockets) - len(admins) :])
    baseline = Baseline(redis_url)
    try:
        cpu_before = cpu_seconds([gateway_pid])
        wall = time.perf_counter()
        sent = await publish(redis_url, users, args.rate, args.seconds)
        expected = 2 + len(admins)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            sum(len(v) for v in clients.arrivals.values()) < len(sent) * expected
            or len(baseline.received) < len(sent)
        ):
            await asyncio.sleep(0.1)
        wall = time.perf_counter() - wall
        cpu = cpu_seconds([gateway_pid]) - cpu_before
    finally:
        baseline.stop()
    latencies = [
        (at - sent[payment]) * 1000
        for payment, times in clients.arrivals.items()
        if payment in sent
        for at in times
    ]
    bare = [(at - sent[p]) * 1000 for p, at in baseline.received.items() if p in sent]
    delivered = len(latencies)
    missing = len(sent) * expected - delivered
    print(
        f"latency: {len(sent)} events at {args.rate}/s to {args.sockets} sockets"
        f" (+{len(admins)} admin sockets): {delivered} messages delivered, {missing} missing",
        flush=True,
    )
    for name, values in (("gateway → socket", latencies), ("bare XREAD (baseline)", bare)):
        if values:
            print(
                f"  {name:<22} p50 {statistics.median(values):6.1f} ms   p90"
                f" {percentile(values, 0.90):6.1f} ms   p99 {percentile(values, 0.99):6.1f} ms"
                f"   max {max(values):6.1f} ms",
                flush=True,
            )
    print(
        f"  gateway CPU: {cpu / wall * 100:.0f} % of a core,"
        f" {cpu / max(1, delivered) * 1e6:.0f} µs per delivered message",
        flush=True,
    )
    await clients.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.realtime",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--idle", type=int, default=2000, help="idle sockets (RSS per socket)")
    parser.add_argument("--sockets", type=int, default=1000, help="sockets the events go to")
    parser.add_argument("--admins", type=int, default=0, help="extra ADMIN sockets (all events)")
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to publish")
    parser.add_argument("--xread", metavar="REDIS_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.xread:
        xread_main(args.xread)
        return 0
    if args.sockets > args.idle:
        parser.error("--sockets must not exceed --idle (the events go to idle sockets)")
    raise_fd_limit(2 * (args.idle + args.admins) + 1000)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rt-")))
        redis_url = stack.enter_context(private_redis(workdir / "redis"))
        procs = stack.enter_context(Processes(workdir))
        port = free_port()
        env = service_env(
            "postgresql://unused@127.0.0.1:1/unused",
            redis_url,
            AUTH_SERVICE_URL=DEAD,
            PAYMENTS_SERVICE_URL=DEAD,
            ADMIN_SERVICE_URL=DEAD,
            PROFILE_SERVICE_URL=DEAD,
            TRUSTED_PROXIES="127.0.0.1",
            REALTIME_MAX_CONNECTIONS=str(args.idle + args.admins + 100),
        )
        gateway = procs.serve("gateway", port, env)
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready("gateway", f"{url}/health/live")
        asyncio.run(run(args, url, gateway.pid, redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
