"""Event hub against real PostgreSQL and Redis: outbox, relay, consumer groups, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY
from sqlalchemy import text

from paysys.cli.events import _dead, _status, tail_events
from paysys.core.db import SessionDep
from paysys.core.events.consumer import Consumer, EventHandlers
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.outbox import emit
from paysys.core.events.relay import run_relay
from paysys.core.events.transport import DEAD_STREAM, STREAM, stream_fields
from paysys.core.http import create_service_app
from paysys.core.routing import JsonBodyRoute
from tests.support.events import (
    Hub,
    HubUrls,
    config_data,
    open_hub,
    record_applied,
    recording_handlers,
    shared_hub_database,
    wait_for,
)
from tests.support.servers import RedisServer


@pytest.fixture(scope="module")
def hub_urls(request: pytest.FixtureRequest) -> HubUrls:
    return shared_hub_database(request.config)


@pytest.fixture
async def hub(hub_urls: HubUrls) -> AsyncIterator[Hub]:
    async with open_hub(hub_urls) as opened:
        yield opened


WIRE_KEYS = {
    "id",
    "type",
    "version",
    "occurredAt",
    "source",
    "correlationId",
    "actorId",
    "data",
}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- outbox + relay -----------------------------------------------------------------------
async def test_rollback_emits_nothing_and_uncommitted_is_invisible(hub: Hub) -> None:
    runtime = hub.runtime()
    relay = hub.relay(runtime)

    with contextlib.suppress(RuntimeError):
        async with runtime.sessionmaker() as session, session.begin():
            await emit(session, "config.updated", config_data())
            raise RuntimeError("the business change failed")
    assert await relay.drain() == 0
    assert await hub.conn.fetchval("SELECT count(*) FROM outbox") == 0

    # Written but not yet committed: the relay cannot see it, nothing reaches Redis.
    async with runtime.sessionmaker() as session, session.begin():
        event = await emit(session, "config.updated", config_data())
        assert await relay.drain() == 0
        assert await hub.redis.xlen(STREAM) == 0
        # committed now
    assert await relay.drain() == 1
    assert await hub.stream_ids() == [str(event.id)]
    row = await hub.conn.fetchrow("SELECT published_at, attempts FROM outbox")
    assert row["published_at"] is not None and row["attempts"] == 1


async def test_relay_publishes_oldest_first_to_stream_and_pubsub(hub: Hub) -> None:
    runtime = hub.runtime(events_relay_batch=3)
    pubsub = hub.redis.pubsub()
    await pubsub.psubscribe("events.*")
    try:
        await pubsub.get_message(timeout=1)  # the psubscribe confirmation
        ids = await hub.emit_many(runtime, 7, per_tx=2)
        assert await hub.relay(runtime).drain() == 7
        assert await hub.stream_ids() == [str(i) for i in ids]

        entries = await hub.redis.xrange(STREAM)
        wire = EventEnvelope.model_validate_json(entries[0][1]["event"])
        assert wire.type == "config.updated" and wire.data == config_data(0)
        assert entries[0][1]["type"] == "config.updated"

        received = []
        while len(received) < 7:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            assert message is not None, "pub/sub message missing"
            received.append(message)
        assert {m["channel"] for m in received} == {"events.config.updated"}
        assert [EventEnvelope.model_validate_json(m["data"]).id for m in received] == ids
    finally:
        await pubsub.aclose()


async def test_envelope_on_the_wire_follows_the_contract(hub: Hub) -> None:
    from paysys.core import context

    runtime = hub.runtime()
    actor = uuid.uuid4()
    token = context.request_id_var.set("req-123")
    try:
        async with runtime.sessionmaker() as session, session.begin():
            event = await emit(
                session,
                "user.deleted",
                {"userId": str(actor)},
                actor_id=actor,
                source="admin-service",
            )
    finally:
        context.request_id_var.reset(token)
    await hub.relay(runtime).drain()
    (_, fields), *_ = await hub.redis.xrange(STREAM)
    import json

    wire = json.loads(fields["event"])
    assert set(wire) == WIRE_KEYS
    assert wire["id"] == str(event.id) and wire["version"] == 1
    assert wire["source"] == "admin-service" and wire["correlationId"] == "req-123"
    assert wire["actorId"] == str(actor) and wire["data"] == {"userId": str(actor)}
    assert wire["occurredAt"].endswith("Z") and len(wire["occurredAt"]) == 24


async def test_plain_sql_statements_write_the_envelopes_emit_writes(hub: Hub) -> None:
    """The asyncpg hot paths write events through the same builder as emit (OutboxRows) and
    the same INSERT (insert_sql), inside their own statement; the relay publishes them alike."""
    import json

    from paysys.core import context
    from paysys.core.events.outbox import NOTIFY_SQL, OutboxRows, envelope, insert_sql
    from paysys.payments.db import connect

    runtime = hub.runtime()
    actor = uuid.uuid4()
    token = context.request_id_var.set("req-plain")
    try:
        rows = OutboxRows.of(
            [("user.deleted", {"userId": str(actor)}), ("config.updated", config_data())],
            actor_id=actor,
        )
        expected_source = envelope("user.deleted", {"userId": str(actor)}).source
    finally:
        context.request_id_var.reset(token)
    async with connect(runtime.engine) as conn:
        await conn.execute(
            f"WITH event AS ({insert_sql('$1', '$2', '$3')}) SELECT {NOTIFY_SQL}",
            rows.ids,
            rows.types,
            rows.payloads,
        )
    await hub.relay(runtime).drain()
    wires = [json.loads(fields["event"]) for _, fields in await hub.redis.xrange(STREAM)]
    wires = [wire for wire in wires if wire["id"] in rows.ids]
    assert [wire["id"] for wire in wires] == rows.ids  # in statement order
    assert [wire["type"] for wire in wires] == ["user.deleted", "config.updated"]
    for wire in wires:
        assert set(wire) == WIRE_KEYS
        assert wire["source"] == expected_source and wire["correlationId"] == "req-plain"
        assert wire["actorId"] == str(actor) and wire["occurredAt"].endswith("Z")
    assert wires[0]["data"] == {"userId": str(actor)}


async def test_relay_keeps_rows_while_redis_is_down(hub: Hub, redis_server: RedisServer) -> None:
    runtime = hub.runtime()
    relay = hub.relay(runtime)
    failures = metric("paysys_events_publish_failures_total")
    ids = await hub.emit_many(runtime, 3)
    redis_server.stop()
    try:
        with pytest.raises(ConnectionError):
            await relay.publish_batch()
    finally:
        redis_server.start()
    rows = await hub.conn.fetch("SELECT published_at, attempts FROM outbox ORDER BY seq")
    assert [(r["published_at"], r["attempts"]) for r in rows] == [(None, 1)] * 3
    assert metric("paysys_events_publish_failures_total") == failures + 1
    assert await relay.drain() == 3
    assert await hub.stream_ids() == [str(i) for i in ids]


async def test_relay_wakes_on_notify_without_waiting_for_the_poll(hub: Hub) -> None:
    # Poll every 30 s: only LISTEN/NOTIFY can make delivery prompt.
    runtime = hub.runtime(events_relay_poll_ms=30_000)
    relay = hub.relay(runtime)
    task = asyncio.create_task(relay.run())
    try:

        async def listening() -> bool:
            return relay._conn is not None

        await wait_for(listening, 20, message="relay LISTEN connection")
        await asyncio.sleep(0.05)  # let the first (empty) drain finish and the relay wait
        start = time.monotonic()
        (event_id,) = await hub.emit_many(runtime, 1)

        async def published() -> bool:
            return await hub.stream_ids() == [str(event_id)]

        await wait_for(published, 20, interval=0.005, message="prompt publish")
        assert time.monotonic() - start < 5.0  # far below the 30 s poll
    finally:
        runtime.stopping.set()
        await asyncio.wait_for(task, 20)
    assert relay._conn is None


async def test_prune_removes_only_old_published_rows(hub: Hub) -> None:
    runtime = hub.runtime(events_outbox_retention_hours=1)
    relay = hub.relay(runtime)
    await hub.emit_many(runtime, 4)
    await relay.drain()
    await hub.emit_many(runtime, 2, start=10)  # still pending
    await hub.conn.execute(
        "UPDATE outbox SET published_at = now() - interval '2 hours' WHERE seq IN (1, 2)"
    )
    assert await relay.prune() == 2
    left = await hub.conn.fetch("SELECT seq, published_at IS NULL AS pending FROM outbox")
    assert sorted((r["seq"], r["pending"]) for r in left) == [
        (3, False),
        (4, False),
        (5, True),
        (6, True),
    ]
    # The future moves on: rows published "now" are old enough three hours later.
    assert await relay.prune(now=datetime.now(UTC) + timedelta(hours=3)) == 2
    assert await hub.pending_outbox() == 2


# -- consumers ------------------------------------------------------------------------------
async def test_commit_delivers_exactly_once_in_order(hub: Hub) -> None:
    handlers = recording_handlers("once")
    runtime = hub.start([run_relay, handlers.run])
    handled = metric(
        "paysys_events_handled_total", consumer="once", type="config.updated", outcome="handled"
    )
    ids = await hub.emit_many(runtime, 30, per_tx=3)

    async def all_applied() -> bool:
        return await hub.applied_total("once") >= 30

    await wait_for(all_applied, 30, message="30 events applied")
    order = await hub.conn.fetch("SELECT event_id FROM events_test.applied ORDER BY n")
    assert [r["event_id"] for r in order] == ids

    # Redelivery of the same event (a relay that died before marking its rows) is harmless.
    entries = await hub.redis.xrange(STREAM, count=2)
    for _, fields in entries:
        await hub.redis.xadd(STREAM, fields)

    async def settled() -> bool:
        info = {g["name"]: g for g in await hub.redis.xinfo_groups(STREAM)}
        return info["once"]["lag"] == 0 and info["once"]["pending"] == 0

    await wait_for(settled, 30, message="duplicates consumed")
    assert await hub.applied("once") == dict.fromkeys(ids, 1)
    assert (
        await hub.conn.fetchval("SELECT count(*) FROM processed_events WHERE consumer = 'once'")
        == 30
    )
    labels = {"consumer": "once", "type": "config.updated"}
    assert metric("paysys_events_handled_total", outcome="handled", **labels) == handled + 30
    assert metric("paysys_events_handled_total", outcome="duplicate", **labels) >= 2


async def test_handlers_by_type_several_types_and_catch_all(hub: Hub) -> None:
    seen: list[tuple[str, str]] = []
    handlers = EventHandlers("typed")

    @handlers.on("user.deleted")
    async def deleted(session: Any, event: EventEnvelope) -> None:
        seen.append(("deleted", event.type))

    @handlers.on("user.logged_in", "user.logged_out")
    async def sessions(session: Any, event: EventEnvelope) -> None:
        seen.append(("sessions", event.type))

    @handlers.on_any
    async def audit(session: Any, event: EventEnvelope) -> None:
        seen.append(("any", event.type))
        await record_applied(session, "typed", event, "")

    runtime = hub.start([run_relay, handlers.run])
    uid = str(uuid.uuid4())
    async with runtime.sessionmaker() as session, session.begin():
        await emit(session, "user.deleted", {"userId": uid})
        await emit(session, "user.logged_in", {"userId": uid, "ip": "::1", "userAgent": "t"})
        await emit(session, "user.logged_out", {"userId": uid, "allSessions": True})
        await emit(session, "config.updated", config_data())

    async def four() -> bool:
        return await hub.applied_total("typed") == 4

    await wait_for(four, 30, message="4 events")
    assert seen == [
        ("deleted", "user.deleted"),
        ("any", "user.deleted"),
        ("sessions", "user.logged_in"),
        ("any", "user.logged_in"),
        ("sessions", "user.logged_out"),
        ("any", "user.logged_out"),
        ("any", "config.updated"),
    ]


async def test_events_without_a_handler_are_acknowledged(hub: Hub) -> None:
    calls: list[str] = []
    handlers = EventHandlers("picky")

    @handlers.on("user.deleted")
    async def deleted(session: Any, event: EventEnvelope) -> None:
        calls.append(event.type)

    runtime = hub.start([run_relay, handlers.run])
    await hub.emit_many(runtime, 3)
    async with runtime.sessionmaker() as session, session.begin():
        await emit(session, "user.deleted", {"userId": str(uuid.uuid4())})

    async def done() -> bool:
        return calls == ["user.deleted"]

    await wait_for(done, 30, message="user.deleted handled")

    async def drained() -> bool:
        groups = await hub.redis.xinfo_groups(STREAM)
        return groups[0]["lag"] == 0 and groups[0]["pending"] == 0

    await wait_for(drained, 30, message="everything acknowledged")
    # Ignored events leave no processed_events row (nothing to deduplicate).
    assert await hub.conn.fetchval("SELECT count(*) FROM processed_events") == 1


async def test_consumer_catches_up_on_events_published_before_it_started(hub: Hub) -> None:
    runtime = hub.runtime()
    ids = await hub.emit_many(runtime, 5)
    assert await hub.relay(runtime).drain() == 5  # published while the consumer was away
    handlers = recording_handlers("late")
    runtime.start_workers([handlers.run])

    async def caught_up() -> bool:
        return await hub.applied("late") == dict.fromkeys(ids, 1)

    await wait_for(caught_up, 30, message="catch-up")
    # Read as one batch, applied in ONE transaction (processed_at = its start time).
    stamps = await hub.conn.fetchval(
        "SELECT count(DISTINCT processed_at) FROM processed_events WHERE consumer = 'late'"
    )
    assert stamps == 1


async def test_consumer_recovers_when_redis_loses_its_data(hub: Hub) -> None:
    handlers = recording_handlers("amnesia")
    runtime = hub.start([run_relay, handlers.run])
    first = await hub.emit_many(runtime, 2)

    async def got(ids: list[uuid.UUID]) -> bool:
        applied = await hub.applied("amnesia")
        return all(applied.get(i) == 1 for i in ids)

    await wait_for(lambda: got(first), 30, message="first events")
    await hub.redis.flushdb()  # stream and group gone (NOGROUP on the next read)
    second = await hub.emit_many(runtime, 2, start=10)
    await wait_for(lambda: got(second), 30, message="events after the data loss")
    assert await hub.applied("amnesia") == dict.fromkeys(first + second, 1)


async def test_two_relays_and_two_consumers_handle_each_event_once(hub: Hub) -> None:
    emitter = hub.runtime()
    backlog = await hub.emit_many(emitter, 150, per_tx=5)  # both relays start on a backlog
    runtimes = [
        hub.start(
            [run_relay, recording_handlers("pair", worker=f"w{n}").run],
            events_relay_batch=10,
            events_consumer_batch=5,
        )
        for n in (1, 2)
    ]
    assert len(runtimes) == 2

    async def emit_some(start: int) -> list[uuid.UUID]:
        return await hub.emit_many(emitter, 50, start=start)

    batches = await asyncio.gather(*(emit_some(1000 * k) for k in range(1, 4)))
    ids = backlog + [i for batch in batches for i in batch]
    assert len(set(ids)) == 300

    async def all_applied() -> bool:
        return await hub.applied_total("pair") >= 300

    await wait_for(all_applied, 40, message="300 events applied")

    async def settled() -> bool:
        groups = await hub.redis.xinfo_groups(STREAM)
        return groups[0]["lag"] == 0 and groups[0]["pending"] == 0

    await wait_for(settled, 30, message="group settled")
    assert await hub.applied("pair") == dict.fromkeys(ids, 1)
    stream = await hub.stream_ids()
    assert sorted(stream) == sorted(str(i) for i in ids)  # each row published exactly once
    # One relay publishes at a time, in seq order: each emitter's events keep their order.
    position = {event_id: n for n, event_id in enumerate(stream)}
    for sequence in (backlog, *batches):
        places = [position[str(i)] for i in sequence]
        assert places == sorted(places)
    assert await hub.pending_outbox() == 0
    workers = await hub.conn.fetch(
        "SELECT worker, count(*) AS n FROM events_test.applied GROUP BY worker"
    )
    assert sum(r["n"] for r in workers) == 300


async def test_failing_handler_is_retried_then_applied_once(hub: Hub) -> None:
    attempts: list[int] = []
    handlers = EventHandlers("flaky")

    @handlers.on("config.updated")
    async def flaky(session: Any, event: EventEnvelope) -> None:
        await record_applied(session, "flaky", event, "")
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("transient")

    runtime = hub.start([run_relay, handlers.run], events_claim_idle_ms=100)
    (event_id,) = await hub.emit_many(runtime, 1)

    async def applied() -> bool:
        return await hub.applied("flaky") == {event_id: 1}

    await wait_for(applied, 30, message="applied after retries")
    assert len(attempts) == 3  # the two failed attempts were rolled back with their rows
    assert await hub.redis.xlen(DEAD_STREAM) == 0


async def test_always_failing_handler_ends_in_dead_letters(hub: Hub) -> None:
    attempts: list[uuid.UUID] = []
    handlers = EventHandlers("doomed")

    @handlers.on("config.updated")
    async def doomed(session: Any, event: EventEnvelope) -> None:
        attempts.append(event.id)
        raise ValueError("cannot apply this")

    before = metric("paysys_events_dead_letters_total", consumer="doomed", type="config.updated")
    runtime = hub.start([run_relay, handlers.run], events_claim_idle_ms=100)
    (event_id,) = await hub.emit_many(runtime, 1)

    async def dead() -> bool:
        return await hub.redis.xlen(DEAD_STREAM) == 1

    await wait_for(dead, 30, message="dead letter")
    ((_, fields),) = await hub.redis.xrange(DEAD_STREAM)
    assert fields["id"] == str(event_id) and fields["type"] == "config.updated"
    assert fields["group"] == "doomed" and fields["deliveries"] == "5"
    assert fields["error"] == "ValueError: cannot apply this"
    assert EventEnvelope.model_validate_json(fields["event"]).id == event_id
    assert attempts == [event_id] * 5
    assert await hub.group_pending("doomed") == 0
    assert await hub.conn.fetchval("SELECT count(*) FROM processed_events") == 0
    assert (
        metric("paysys_events_dead_letters_total", consumer="doomed", type="config.updated")
        == before + 1
    )
    # Visible through the CLI helpers too.
    (listed,) = await _dead(hub.settings(), 10)
    assert listed["group"] == "doomed" and listed["deliveries"] == "5"


async def test_entry_of_a_dead_consumer_is_reclaimed_or_dead_lettered(hub: Hub) -> None:
    """A consumer that took entries and vanished: others reclaim them once idle; an entry
    already delivered too often goes straight to events.dead."""
    runtime = hub.runtime()
    ids = await hub.emit_many(runtime, 2)
    await hub.relay(runtime).drain()
    await hub.redis.xgroup_create(STREAM, "orphans", id="0")
    taken = await hub.redis.xreadgroup("orphans", "ghost", {STREAM: ">"}, count=2)
    first_entry = taken[0][1][0][0]
    # Make the first entry look like it was delivered 5 times already.
    for _ in range(4):
        await hub.redis.xclaim(STREAM, "orphans", "ghost", 0, [first_entry])

    handlers = recording_handlers("orphans")
    consumer = Consumer(handlers, runtime, name="rescuer")
    await asyncio.sleep(0.35)  # the claim idle time of FAST settings (300 ms)
    assert await consumer.claim_stale() == 2
    assert await hub.applied("orphans") == {ids[1]: 1}
    ((_, dead),) = await hub.redis.xrange(DEAD_STREAM)
    assert dead["id"] == str(ids[0]) and dead["deliveries"] == "6"
    assert "died or stalled" in dead["error"]
    assert await hub.group_pending("orphans") == 0


async def test_malformed_entry_goes_to_dead_letters(hub: Hub) -> None:
    runtime = hub.runtime()
    handlers = recording_handlers("strict")
    consumer = Consumer(handlers, runtime, name="c1")
    await consumer.ensure_group()
    await hub.redis.xadd(STREAM, stream_fields("x", "config.updated", "{not json"))
    response = await hub.redis.xreadgroup("strict", "c1", {STREAM: ">"}, count=10)
    await consumer.process(response[0][1], {})
    ((_, dead),) = await hub.redis.xrange(DEAD_STREAM)
    assert dead["error"].startswith("malformed event")
    assert await hub.group_pending("strict") == 0


# -- inside a service app ---------------------------------------------------------------------
def _emitting_router() -> APIRouter:
    router = APIRouter(route_class=JsonBodyRoute)

    @router.post("/emit/{n}", status_code=201)
    async def emit_one(n: int, session: SessionDep) -> dict[str, str]:
        async with session.begin():
            event = await emit(session, "config.updated", config_data(n))
        return {"eventId": str(event.id)}

    return router


async def test_requests_succeed_while_redis_is_down_and_events_arrive_once_after(
    hub: Hub, redis_server: RedisServer
) -> None:
    handlers = recording_handlers("svc")
    app = create_service_app(
        "evtest", [_emitting_router()], settings=hub.settings(), handlers=handlers
    )
    assert run_relay in app.state.workers and handlers.run in app.state.workers
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.post("/emit/0")
            assert first.status_code == 201

            async def first_applied() -> bool:
                return await hub.applied_total("svc") == 1

            await wait_for(first_applied, 30, message="first event")

            ids = [uuid.UUID(first.json()["eventId"])]
            redis_server.stop()
            try:
                for n in range(1, 11):
                    response = await client.post(f"/emit/{n}")
                    assert response.status_code == 201, response.text
                    ids.append(uuid.UUID(response.json()["eventId"]))
                assert await hub.pending_outbox() == 10  # waiting in the outbox
            finally:
                redis_server.start()

            async def all_applied() -> bool:
                return await hub.applied_total("svc") >= 11

            await wait_for(all_applied, 40, message="events after Redis came back")
            assert await hub.applied("svc") == dict.fromkeys(ids, 1)
            assert await hub.pending_outbox() == 0

            metrics_text = (await client.get("/metrics")).text
            assert 'paysys_events_handled_total{consumer="svc"' in metrics_text
            assert "paysys_events_outbox_backlog" in metrics_text
            assert 'paysys_events_consumer_pending{consumer="svc"}' in metrics_text


async def test_app_without_handlers_still_runs_the_relay(hub: Hub) -> None:
    app = create_service_app("evtest", [_emitting_router()], settings=hub.settings())
    assert app.state.workers == [run_relay] and app.state.event_handlers is None
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            event_id = (await client.post("/emit/1")).json()["eventId"]

            async def published() -> bool:
                return await hub.stream_ids() == [event_id]

            await wait_for(published, 20, message="published by the app's relay")


# -- CLI helpers (in-process) ------------------------------------------------------------------
async def test_tail_prints_live_events_and_status_reports(hub: Hub) -> None:
    runtime = hub.runtime()
    out = io.StringIO()
    tail = asyncio.create_task(
        tail_events(hub.settings(), ["user.*"], raw_json=True, count=1, out=out)
    )

    async def subscribed() -> bool:
        return int(await hub.redis.execute_command("PUBSUB", "NUMPAT")) >= 1

    await wait_for(subscribed, 20, message="tail subscribed")
    await hub.emit_many(runtime, 1)  # config.updated: filtered out
    async with runtime.sessionmaker() as session, session.begin():
        event = await emit(session, "user.deleted", {"userId": str(uuid.uuid4())})
    await hub.relay(runtime).drain()
    assert await asyncio.wait_for(tail, 20) == 1
    assert EventEnvelope.model_validate_json(out.getvalue()).id == event.id

    await hub.redis.xgroup_create(STREAM, "status", id="0")
    info = await _status(hub.settings())
    assert info["outbox"]["pending"] == 0 and info["outbox"]["rows"] == 2
    assert info["stream"]["length"] == 2
    assert info["stream"]["groups"][0]["group"] == "status"
    assert info["stream"]["groups"][0]["lag"] == 2
    assert info["deadLetters"] == 0


async def test_relay_observes_backlog_metric(hub: Hub) -> None:
    runtime = hub.runtime()
    await hub.emit_many(runtime, 3)
    relay = hub.relay(runtime)
    await relay.observe()
    assert metric("paysys_events_outbox_backlog") == 3
    assert metric("paysys_events_outbox_oldest_pending_seconds") >= 0
    await relay.drain()
    await relay.observe()
    assert metric("paysys_events_outbox_backlog") == 0


async def test_every_transaction_notifies_the_relay(hub: Hub) -> None:
    from paysys.core.events.outbox import NOTIFY_CHANNEL

    notes: list[str] = []
    await hub.conn.add_listener(NOTIFY_CHANNEL, lambda *args: notes.append(args[2]))
    runtime = hub.runtime()
    try:
        async with runtime.sessionmaker() as session:
            async with session.begin():
                await emit(session, "config.updated", config_data(1))
                await emit(session, "config.updated", config_data(2))

            async def one() -> bool:
                return len(notes) == 1

            await wait_for(one, 20, message="first NOTIFY")
            async with session.begin():  # same session, next transaction: notifies again
                await emit(session, "config.updated", config_data(3))

            async def two() -> bool:
                return len(notes) == 2

            await wait_for(two, 20, message="second NOTIFY")
            rows = (await session.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        assert rows == 3
    finally:
        await hub.conn.remove_listener(NOTIFY_CHANNEL, notes.append)  # type: ignore[arg-type]


async def test_a_failing_event_in_a_batch_does_not_hold_back_the_others(hub: Hub) -> None:
    handlers = EventHandlers("batch")

    @handlers.on("config.updated")
    async def apply(session: Any, event: EventEnvelope) -> None:
        await record_applied(session, "batch", event, "")
        if event.data["key"] == "test.key2":
            raise ValueError("poison")

    runtime = hub.runtime(events_claim_idle_ms=100)
    ids = await hub.emit_many(runtime, 5, per_tx=5)
    await hub.relay(runtime).drain()  # all five are read as one batch
    runtime.start_workers([handlers.run])

    async def dead() -> bool:
        return await hub.redis.xlen(DEAD_STREAM) == 1

    await wait_for(dead, 30, message="the poison event dead-lettered")
    assert await hub.applied("batch") == {i: 1 for n, i in enumerate(ids) if n != 2}
    ((_, fields),) = await hub.redis.xrange(DEAD_STREAM)
    assert fields["id"] == str(ids[2]) and fields["error"] == "ValueError: poison"
    assert await hub.group_pending("batch") == 0


async def test_only_one_relay_publishes_at_a_time(hub: Hub) -> None:
    from paysys.core.events.relay import RELAY_LOCK_KEY

    runtime = hub.runtime()
    await hub.emit_many(runtime, 2)
    relay = hub.relay(runtime)
    await hub.conn.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK_KEY)  # "another relay"
    try:
        assert await relay.publish_batch() == 0
        assert await hub.pending_outbox() == 2
    finally:
        await hub.conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
    assert await relay.publish_batch() == 2


async def test_cli_status_and_dead_commands(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from paysys.cli.events import app as events_app
    from paysys.core.config import get_settings

    runtime = hub.runtime()
    await hub.emit_many(runtime, 2)
    await hub.relay(runtime).drain()
    await hub.emit_many(runtime, 1, start=5)  # one still pending
    await hub.redis.xgroup_create(STREAM, "cli", id="0")
    await hub.redis.xadd(
        DEAD_STREAM,
        {"group": "cli", "type": "config.updated", "id": "e1", "deliveries": "5", "error": "boom"},
    )
    for name, value in hub.urls.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        status = await asyncio.to_thread(runner.invoke, events_app, ["status"])
        dead = await asyncio.to_thread(runner.invoke, events_app, ["dead", "--limit", "5"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert status.exit_code == 0, status.output
    assert "outbox: 1 pending of 3 rows" in status.output
    assert "stream 'events': 2 entries; dead letters: 1" in status.output
    assert "cli" in status.output
    assert dead.exit_code == 0, dead.output
    assert "group=cli  type=config.updated  id=e1  deliveries=5  error=boom" in dead.output


async def test_replay_after_redis_lost_data_applies_nothing_twice(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from paysys.cli.events import app as events_app
    from paysys.core.config import get_settings

    handlers = recording_handlers("replay")
    runtime = hub.start([run_relay, handlers.run])
    ids = await hub.emit_many(runtime, 3)

    async def applied() -> bool:
        return await hub.applied("replay") == dict.fromkeys(ids, 1)

    await wait_for(applied, 30, message="first delivery")
    await hub.redis.flushdb()  # Redis restarted without its data
    for name, value in hub.urls.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        bad = await asyncio.to_thread(runner.invoke, events_app, ["replay", "--since", "soon"])
        ok = await asyncio.to_thread(runner.invoke, events_app, ["replay", "--since", "1h"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert bad.exit_code == 2
    assert ok.exit_code == 0 and "3 events marked for re-publishing" in ok.output, ok.output

    async def republished() -> bool:
        groups = await hub.redis.xinfo_groups(STREAM) if await hub.redis.exists(STREAM) else []
        return (
            await hub.redis.xlen(STREAM) == 3
            and bool(groups)
            and groups[0]["lag"] == 0
            and groups[0]["pending"] == 0
        )

    await wait_for(republished, 30, message="re-published and consumed")
    assert await hub.applied("replay") == dict.fromkeys(ids, 1)


async def test_graceful_shutdown_finishes_the_event_in_hand(hub: Hub) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    handlers = EventHandlers("graceful")

    @handlers.on("config.updated")
    async def slow(session: Any, event: EventEnvelope) -> None:
        entered.set()
        await release.wait()
        await record_applied(session, "graceful", event, "")

    runtime = hub.start([run_relay, handlers.run])
    (event_id,) = await hub.emit_many(runtime, 1)
    await asyncio.wait_for(entered.wait(), 30)
    closing = asyncio.create_task(runtime.close(grace=30))

    async def stopping() -> bool:
        return runtime.stopping.is_set()

    await wait_for(stopping, 10, message="shutdown started")
    release.set()  # the handler finishes after shutdown began: it must not be cut off
    await asyncio.wait_for(closing, 30)
    assert await hub.applied("graceful") == {event_id: 1}
    assert await hub.group_pending("graceful") == 0  # committed AND acknowledged before exit


async def test_dispatch_many_runs_each_new_event_once(hub: Hub) -> None:
    """One dedup statement for a batch: an event listed twice, or already processed, runs no
    handler again."""
    handlers = EventHandlers("many")
    ran: list[uuid.UUID] = []

    @handlers.on_any
    async def note(session: Any, event: EventEnvelope) -> None:
        ran.append(event.id)

    def config_event(key: str) -> EventEnvelope:
        return EventEnvelope(type="config.updated", source="test", data={"key": key, "value": 1})

    first, second = config_event("test.a"), config_event("test.b")
    runtime = hub.runtime()
    async with runtime.sessionmaker() as session, session.begin():
        assert await handlers.dispatch(session, first)
    async with runtime.sessionmaker() as session, session.begin():
        outcome = await handlers.dispatch_many(session, [first, second, second])
    assert outcome == [False, True, False]
    assert ran == [first.id, second.id]
