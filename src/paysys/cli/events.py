"""`paysys events ...`: look at the event hub (live feed, dead letters, backlog)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import timedelta
from typing import Any

import typer

from paysys.cli.typerapp import typer_app
from paysys.core.config import Settings, get_settings

app = typer_app(help="Event hub: live feed, dead letters, outbox and consumer status.")


def _patterns(types: list[str] | None) -> list[str]:
    from paysys.core.events.transport import CHANNEL_PATTERN, channel

    return [channel(t) for t in types] if types else [CHANNEL_PATTERN]


def format_event(event: dict[str, Any]) -> str:
    """One readable line: time, type, source, id, actor, data."""
    occurred = str(event.get("occurredAt", ""))
    clock = occurred[11:23] if len(occurred) >= 23 else occurred
    data = json.dumps(event.get("data", {}), separators=(",", ":"), ensure_ascii=False)
    actor = event.get("actorId") or "-"
    return (
        f"{clock}  {event.get('type', '?'):<24} {event.get('source', '?'):<18} "
        f"{event.get('id', '?')}  actor={actor}  {data}"
    )


def socket_view(user_id: str, role: str) -> Any:
    """event envelope → the real-time messages (api-contracts §9.2) a WebSocket of this user
    would receive, one JSON text each: the gateway's own mapping and room rules."""
    from paysys.gateway.realtime.messages import map_event, rooms_for

    rooms = set(rooms_for(user_id, role))

    def view(event: dict[str, Any]) -> list[str]:
        return [out.text for out in map_event(event) if rooms.intersection(out.rooms)]

    return view


async def tail_events(
    settings: Settings,
    types: list[str] | None,
    *,
    raw_json: bool = False,
    count: int | None = None,
    out: Any = None,
    view: Any = None,
) -> int:
    """Print events from Pub/Sub `events.<type>` as they are published (reconnects on loss).
    With `view` (see `socket_view`), print what it makes of each event instead (events it
    makes nothing of are skipped; `count` counts the events seen)."""
    from redis.asyncio import Redis

    from paysys.core.events.transport import REDIS_DOWN, Backoff

    out = out or sys.stdout
    patterns = _patterns(types)
    seen = 0
    backoff = Backoff(base=0.2, cap=5.0)
    while count is None or seen < count:
        redis = Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=1)
        pubsub = redis.pubsub()
        try:
            await pubsub.psubscribe(*patterns)
            print(f"listening on {', '.join(patterns)}", file=sys.stderr, flush=True)
            backoff.reset()
            while count is None or seen < count:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                raw = message.get("data")
                try:
                    event = json.loads(raw)
                except (TypeError, ValueError):
                    event = {"type": message.get("channel"), "data": raw}
                if view is not None:
                    for line in view(event) if isinstance(event, dict) else ():
                        print(line, file=out, flush=True)
                else:
                    line = (
                        json.dumps(event, ensure_ascii=False) if raw_json else format_event(event)
                    )
                    print(line, file=out, flush=True)
                seen += 1
        except REDIS_DOWN as exc:
            print(f"redis unavailable ({exc}); retrying", file=sys.stderr, flush=True)
            await asyncio.sleep(backoff.next())
        finally:
            await pubsub.aclose()
            await redis.aclose()
    return seen


@app.command()
def tail(
    types: list[str] | None = typer.Option(
        None,
        "--type",
        "-t",
        help="Event type to show (repeatable; globs like 'payment.*'). Default: all.",
    ),
    raw_json: bool = typer.Option(False, "--json", help="One JSON envelope per line"),
    count: int | None = typer.Option(None, "--count", "-n", help="Exit after N events"),
    as_user: str | None = typer.Option(
        None,
        "--as-user",
        help="Show instead what this user's WebSocket (/ws) would receive: the gateway's "
        "messages, one JSON per line",
    ),
    role: str = typer.Option(
        "CUSTOMER", "--role", help="That user's role (with --as-user): CUSTOMER, VENDOR, ADMIN"
    ),
) -> None:
    """Print live events from Redis Pub/Sub `events.*` (Ctrl-C to stop)."""
    view = None
    if as_user is not None:
        import uuid

        try:
            user_id = str(uuid.UUID(as_user))
        except ValueError:
            raise typer.BadParameter("must be a user id (UUID)", param_hint="--as-user") from None
        if role.upper() not in ("CUSTOMER", "VENDOR", "ADMIN"):
            raise typer.BadParameter("CUSTOMER, VENDOR or ADMIN", param_hint="--role")
        view = socket_view(user_id, role.upper())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail_events(get_settings(), types, raw_json=raw_json, count=count, view=view))


async def _status(settings: Settings) -> dict[str, Any]:
    import asyncpg
    from redis.asyncio import Redis

    from paysys.core.db import raw_dsn
    from paysys.core.events.transport import DEAD_STREAM, STREAM

    conn = await asyncpg.connect(raw_dsn(settings.database_url))
    try:
        pending, oldest = await conn.fetchrow(
            "SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL"
        )
        total = await conn.fetchval("SELECT count(*) FROM outbox")
    finally:
        await conn.close()
    redis = Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=1)
    try:
        groups = []
        if await redis.exists(STREAM):
            for group in await redis.xinfo_groups(STREAM):
                groups.append(
                    {
                        "group": group["name"],
                        "consumers": group["consumers"],
                        "pending": group["pending"],
                        "lag": group.get("lag"),
                        "lastDeliveredId": group["last-delivered-id"],
                    }
                )
        return {
            "outbox": {
                "rows": total,
                "pending": pending,
                "oldestPending": oldest.isoformat() if oldest else None,
            },
            "stream": {"length": await redis.xlen(STREAM), "groups": groups},
            "deadLetters": await redis.xlen(DEAD_STREAM),
        }
    finally:
        await redis.aclose()


@app.command()
def status() -> None:
    """Outbox backlog, stream length, consumer groups (pending, lag) and dead letters."""
    from rich.console import Console
    from rich.table import Table

    info = asyncio.run(_status(get_settings()))
    console = Console()
    outbox, stream = info["outbox"], info["stream"]
    console.print(
        f"outbox: {outbox['pending']} pending of {outbox['rows']} rows"
        f" (oldest pending: {outbox['oldestPending'] or '-'})"
    )
    console.print(
        f"stream 'events': {stream['length']} entries; dead letters: {info['deadLetters']}"
    )
    table = Table("group", "consumers", "pending", "lag", "last delivered")
    for group in stream["groups"]:
        table.add_row(
            group["group"],
            str(group["consumers"]),
            str(group["pending"]),
            str(group["lag"]),
            group["lastDeliveredId"],
        )
    console.print(table)


async def _dead(settings: Settings, limit: int) -> list[dict[str, str]]:
    from redis.asyncio import Redis

    from paysys.core.events.transport import DEAD_STREAM

    redis = Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=1)
    try:
        entries: Any = await redis.xrevrange(DEAD_STREAM, count=limit)
    finally:
        await redis.aclose()
    return [{"deadId": entry_id, **fields} for entry_id, fields in entries]


@app.command()
def dead(limit: int = typer.Option(20, help="How many (newest first)")) -> None:
    """List dead-lettered events (`events.dead`): group, type, deliveries and the last error."""
    for entry in asyncio.run(_dead(get_settings(), limit)):
        typer.echo(
            f"{entry['deadId']}  group={entry.get('group')}  type={entry.get('type')}  "
            f"id={entry.get('id')}  deliveries={entry.get('deliveries')}  "
            f"error={entry.get('error')}"
        )


async def replay_since(settings: Settings, since: timedelta) -> int:
    """Mark rows published within `since` as pending again: the relays publish them anew and
    consumers skip what they already applied (recovery after Redis lost data)."""
    import asyncpg

    from paysys.core.db import raw_dsn
    from paysys.core.events.outbox import NOTIFY_CHANNEL

    conn = await asyncpg.connect(raw_dsn(settings.database_url))
    try:
        async with conn.transaction():
            status = await conn.execute(
                "UPDATE outbox SET published_at = NULL "
                "WHERE published_at IS NOT NULL AND published_at >= now() - $1::interval",
                since,
            )
            await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    finally:
        await conn.close()
    return int(status.split()[-1])


@app.command()
def replay(
    since: str = typer.Option(..., help="How far back, e.g. 30m, 2h, 1d (≤ the outbox retention)"),
) -> None:
    """Re-publish events published within SINCE (after Redis lost data); consumers deduplicate."""
    from paysys.core.config import parse_duration

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    count = asyncio.run(replay_since(get_settings(), window))
    typer.echo(f"{count} events marked for re-publishing")


if __name__ == "__main__":  # pragma: no cover
    app()
