"""Drills of issue 13 (api-contracts §2.1, §7): the API stays available to everyone.

(a) slow clients: 1,000 connections from one address stalled inside their headers or a small
    body, plus a login flood at 10x the limit, while another client's authenticated GETs keep
    their p99 under 2x its quiet value with zero errors;
(b) Redis stopped for 15 s: payments created and listed through the gateway all along, and every
    process stays ready (degraded);
(c) kill -9 of the payments service under load: every payment reaches a final state, no
    payment is processed or published twice.

Real processes on loopback. Distinct client addresses come from the loopback range itself
(127.0.0.0/8 is all local on Linux): the attacker connects from 127.0.0.2, the normal client
from 127.0.0.3, both to the gateway's listen address, so the gateway sees two socket peers
exactly as it would see two hosts. The numbers are printed (run with `-s`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from paysys.core.config import Settings
from tests.support import payments as support
from tests.support.servers import RedisServer, Stack, free_port
from tests.support.slowclients import Sample, measure, normal_client, raise_open_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ATTACKER = "127.0.0.2"
CLIENT = "127.0.0.3"
LIST = "/api/payments?limit=5"
SAMPLES = 300
ROUNDS = 3


async def start_attack(
    gateway: str, connections: int, seconds: float, logins: int
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.slowclients",
        *("--target", gateway, "--source", ATTACKER, "--connections", str(connections)),
        *("--seconds", str(seconds), "--logins", str(logins)),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    assert line.startswith(b"READY"), line
    return process


async def attack_summary(process: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    out = await asyncio.wait_for(process.stdout.read(), timeout)
    await process.wait()
    for line in out.decode().splitlines():
        if line.startswith("SUMMARY "):
            return dict(json.loads(line[8:]))
    raise AssertionError(f"no summary from the attacker: {out[-2000:]!r}")


def pool_in_flight(metrics: str, service: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'paysys_gateway_pool_in_flight{{service="{service}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("paysys_gateway_pool_in_flight not exported")


def describe(sample: Sample) -> dict[str, Any]:
    return {
        "requests": len(sample.latencies_ms),
        "p50_ms": round(sample.percentile(0.50), 2),
        "p99_ms": round(sample.percentile(0.99), 2),
        "max_ms": round(max(sample.latencies_ms), 2),
        "statuses": dict(sample.statuses),
        "errors": len(sample.errors),
    }


async def slow_client_round(
    client: httpx.AsyncClient, gateway: str, logins: int
) -> tuple[Sample, Sample, float, dict[str, Any]]:
    """Quiet GETs, then the same GETs under attack; → quiet, attacked, the payments pool's
    slots in use mid-attack, the attacker's summary."""
    quiet = await measure(client, LIST, SAMPLES)
    attacker = await start_attack(gateway, connections=1000, seconds=12, logins=logins)
    try:
        await asyncio.sleep(2)  # the login flood and the drip under way
        attacked = await measure(client, LIST, SAMPLES)
        # Mid-attack: the stalled bodies hold no slot of the payments pool.
        held = pool_in_flight((await client.get("/metrics")).text, "payments")
    finally:
        summary = await attack_summary(attacker, 60)
    return quiet, attacked, held, summary


async def test_slow_clients_and_a_login_flood_leave_others_served(
    make_stack: Callable[..., Stack],
) -> None:
    """Drill (a), api-contracts §2.1 "Target". The machine is shared, so a round whose p99 is
    spoiled by someone else's load is measured again (at most `ROUNDS`, each quiet first);
    every round must be free of errors and one must meet the p99 bound."""
    raise_open_files(8192)  # the gateway (a child) holds the attacker's sockets
    stack = make_stack(RATE_LIMIT_MAX="100000", BACKGROUND_WORKERS="false")
    await asyncio.to_thread(stack.start)
    gateway = stack.url("gateway")
    user = await support.make_user()
    limit = Settings().auth_rate_limit_max
    rounds: list[dict[str, Any]] = []
    async with normal_client(gateway, CLIENT, user.token) as client:
        await measure(client, LIST, 50)  # warm up: connections, caches
        for _ in range(ROUNDS):
            quiet, attacked, held, summary = await slow_client_round(client, gateway, 10 * limit)
            met = attacked.percentile(0.99) < 2 * quiet.percentile(0.99)
            rounds.append(
                {
                    "quiet": describe(quiet),
                    "attacked": describe(attacked),
                    "p99_within_2x": met,
                    "payments_pool_in_flight_mid_attack": held,
                    "attacker": summary,
                }
            )
            print("\nSLOW-CLIENT DRILL " + json.dumps(rounds[-1], indent=2))
            assert not quiet.errors and not attacked.errors, attacked.errors[:5]
            assert attacked.statuses == Counter({200: SAMPLES})
            # The attack was real: hundreds of sockets held open at once from one address (the
            # server may close those over its per-client connection cap), none of them holding
            # a slot of the payments pool. Of the login flood at most the limit reached auth:
            # the rest was refused at the edge (429, or the connection refused by the caps).
            assert summary["peak_open"] >= 250, summary
            assert held == 0
            logins = Counter(summary["logins"])
            assert sum(logins.values()) == 10 * limit, logins
            reached_auth = sum(n for code, n in logins.items() if code.isdigit() and code != "429")
            assert reached_auth <= limit, logins
            if met:
                break
    assert rounds[-1]["p99_within_2x"], rounds


async def create_and_list(
    client: httpx.AsyncClient, recipient: support.TestUser, seconds: float
) -> tuple[Counter[str], list[str]]:
    """Creates (each with its Idempotency-Key) and lists, one after another, for `seconds`."""
    seen: Counter[str] = Counter()
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        created = await client.post(
            "/api/payments",
            json=support.body(recipient, description="redis drill"),
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        seen[f"create {created.status_code}"] += 1
        if created.status_code != 201:
            failures.append(f"create {created.status_code} {created.text[:200]}")
        listed = await client.get(LIST)
        seen[f"list {listed.status_code}"] += 1
        if listed.status_code != 200:
            failures.append(f"list {listed.status_code} {listed.text[:200]}")
        await asyncio.sleep(0.1)
    return seen, failures


async def admin_report_with_redis_down(client: httpx.AsyncClient) -> dict[str, Any]:
    """`GET /api/admin/health` through the gateway once every service reports itself degraded
    (each shares its readiness for 1 s); bounded to 15 s."""
    admin = await support.make_user("ADMIN")
    services = ("authService", "paymentsService", "adminService", "profileService")
    deadline = time.monotonic() + 15
    while True:
        r = await client.get("/api/admin/health", headers=admin.headers)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        assert data["services"]["redis"] == "unhealthy", data
        if all(data["services"][name] == "degraded" for name in services):
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.2)


async def test_redis_down_for_15_s_keeps_payments_working_and_everyone_ready(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """Drill (b), api-contracts §7: Redis down makes a process degraded, never unready."""
    redis = RedisServer(free_port(), tmp_path / "redis")
    redis.start()
    try:
        stack = make_stack(REDIS_URL=redis.url, RATE_LIMIT_MAX="100000")
        await asyncio.to_thread(stack.start)
        alice, bob = await support.make_user(), await support.make_user()
        async with httpx.AsyncClient(
            base_url=stack.url("gateway"), headers=alice.headers, timeout=30
        ) as client:
            _, failures = await create_and_list(client, bob, 1.0)
            assert not failures, failures
            await asyncio.to_thread(redis.stop)
            down_since = time.monotonic()
            readiness: Counter[str] = Counter()
            seen: Counter[str] = Counter()
            while time.monotonic() - down_since < 15:
                more, failures = await create_and_list(client, bob, 2.0)
                seen.update(more)
                assert not failures, failures
                for name, service in stack.services.items():
                    ready = await client.get(f"{service.url}/health/ready")
                    readiness[f"{name} {ready.status_code}"] += 1
                    assert ready.status_code == 200, (name, ready.text)
                    assert ready.json()["data"]["checks"]["redis"]["status"] == "down"
            # The admin's system report agrees (it said `unhealthy` before).
            report = await admin_report_with_redis_down(client)
            assert report["status"] == "degraded", report
            assert report["services"]["database"] == "healthy"
            await asyncio.to_thread(redis.start)
            _, failures = await create_and_list(client, bob, 1.0)
            assert not failures, failures
        print("\nREDIS-DOWN DRILL " + json.dumps({"during": seen, "ready": readiness}))
        assert seen["create 201"] >= 10 and seen["list 200"] >= 10
    finally:
        redis.stop()


@pytest.fixture
def shared_processor_paused(stack: Stack) -> Any:
    """The shared e2e stack's processor would take this drill's payments (same database)."""
    stack.services["payments"].stop()
    try:
        yield
    finally:
        stack.start("payments")
        stack.services["gateway"].wait_ready()


@pytest.mark.usefixtures("shared_processor_paused")
async def test_kill_9_of_payments_under_load_loses_and_repeats_nothing(
    make_stack: Callable[..., Stack],
) -> None:
    """Drill (c): SIGKILL of the payments service with creates in flight through the gateway;
    clients retry with their Idempotency-Key. Afterwards every payment is final, each processed
    once (history pending → processing → final, one applied webhook), each event in the outbox
    once per payment and audited once."""
    stack = make_stack(
        PROCESSOR_DELAY_MS="300",
        PROCESSOR_LEASE_MS="2000",
        RATE_LIMIT_MAX="100000",
        UPSTREAM_PROBE_INTERVAL="0.5",
        CIRCUIT_OPEN_SECONDS="1",
    )
    await asyncio.to_thread(stack.start)
    recipient = await support.make_user()
    senders = [await support.make_user() for _ in range(6)]
    answered: dict[str, str] = {}  # Idempotency-Key → payment id the client was answered with
    attempts: Counter[str] = Counter()
    stop = asyncio.Event()

    async def sender(user: support.TestUser) -> None:
        async with httpx.AsyncClient(
            base_url=stack.url("gateway"), headers=user.headers, timeout=30
        ) as client:
            while not stop.is_set():
                key = str(uuid.uuid4())
                deadline = time.monotonic() + 30
                while True:
                    try:
                        r = await client.post(
                            "/api/payments",
                            json=support.body(recipient, description=f"kill drill {key}"),
                            headers={"Idempotency-Key": key},
                        )
                        status = str(r.status_code)
                    except httpx.TransportError as exc:
                        r, status = None, type(exc).__name__
                    attempts[status] += 1
                    if r is not None and r.status_code == 201:
                        answered[key] = r.json()["data"]["id"]
                        break
                    assert time.monotonic() < deadline, f"create {key} never succeeded: {status}"
                    await asyncio.sleep(0.2)

    runners = [asyncio.create_task(sender(user)) for user in senders]
    try:
        await asyncio.sleep(3)
        in_flight = await support.count(
            "SELECT count(*) FROM payments WHERE description LIKE 'kill drill %' "
            "AND status IN ('pending', 'processing')"
        )
        stack.services["payments"].kill()  # SIGKILL, creates and processing in flight
        await asyncio.sleep(1)
        await asyncio.to_thread(stack.start, "payments")
        await asyncio.sleep(3)
    finally:
        stop.set()
        await asyncio.gather(*runners)

    ids = list(answered.values())
    final = await support.wait_for_statuses(ids, {"completed", "failed"}, timeout=60)
    async with support.pg() as conn:
        by_key = await conn.fetch(
            "SELECT description, count(*) AS n FROM payments "
            "WHERE description LIKE 'kill drill %' GROUP BY description"
        )
        histories = await conn.fetch(
            "SELECT payment_id::text AS pid, array_agg(status ORDER BY seq) AS statuses "
            "FROM payment_transactions WHERE payment_id = ANY($1::uuid[]) GROUP BY payment_id",
            [uuid.UUID(i) for i in ids],
        )
        webhooks = await conn.fetch(
            "SELECT payment_id::text AS pid, count(*) AS n FROM payment_webhook_events "
            "WHERE payment_id = ANY($1::uuid[]) GROUP BY payment_id",
            [uuid.UUID(i) for i in ids],
        )
        events = await conn.fetch(
            "SELECT id, type, payload->'data'->>'newStatus' AS to_status, "
            "COALESCE(payload->'data'->'payment'->>'id', payload->'data'->>'paymentId') AS pid "
            "FROM outbox "
            "WHERE type LIKE 'payment.%' AND COALESCE(payload->'data'->'payment'->>'id', "
            "payload->'data'->>'paymentId') = ANY($1::text[])",
            ids,
        )
    print(
        "\nKILL-9 DRILL "
        + json.dumps(
            {
                "payments": len(ids),
                "in_flight_at_kill": in_flight,
                "attempts": attempts,
                "final": Counter(final.values()),
            }
        )
    )
    assert len(ids) >= 20 and in_flight > 0
    # One payment per key, and it is the one the client was answered with.
    assert all(row["n"] == 1 for row in by_key) and len(by_key) >= len(answered)
    for row in histories:
        assert list(row["statuses"]) == ["pending", "processing", final[row["pid"]]], row
    assert len(histories) == len(ids)
    assert {w["pid"]: w["n"] for w in webhooks} == dict.fromkeys(ids, 1)
    # Each payment's events, each exactly once: created, → processing, → final, the outcome.
    per_payment: dict[str, Counter[str]] = {pid: Counter() for pid in ids}
    for event in events:
        to_status = f" {event['to_status']}" if event["to_status"] else ""
        per_payment[event["pid"]][event["type"] + to_status] += 1
    for pid in ids:
        expected = Counter(
            [
                "payment.created",
                "payment.status_changed processing",
                f"payment.status_changed {final[pid]}",
                f"payment.{final[pid]}",
            ]
        )
        assert per_payment[pid] == expected, (pid, per_payment[pid])
    await _every_event_audited_once([e["id"] for e in events])


async def _every_event_audited_once(event_ids: list[uuid.UUID]) -> None:
    """The admin consumer applies each published event once, however often the relay (killed
    between publishing and marking) delivered it: at-least-once delivery, exactly-once effect."""
    deadline = time.monotonic() + 30
    while True:
        async with support.pg() as conn:
            rows = await conn.fetch(
                "SELECT event_id, count(*) AS n FROM audit_logs "
                "WHERE event_id = ANY($1::uuid[]) GROUP BY event_id",
                event_ids,
            )
        counts = {r["event_id"]: r["n"] for r in rows}
        if len(counts) == len(event_ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert all(n == 1 for n in counts.values()), counts
    assert len(counts) == len(event_ids)
