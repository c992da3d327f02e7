"""`paysys db seed`: the audit rows of §8 match the seed data, and seeding is idempotent."""

from __future__ import annotations

from paysys.core.config import get_settings
from paysys.db.seed import seed_all
from tests.support.admin import fetch


async def counts() -> dict[str, int]:
    rows = await fetch("SELECT action, count(*) AS n FROM audit_logs GROUP BY action")
    return {r["action"]: int(r["n"]) for r in rows}


async def test_seed_builds_matching_audit_rows_idempotently(clean_state) -> None:  # type: ignore[no-untyped-def]
    done = await seed_all(get_settings())
    assert done[-1] == "admin"
    first = await counts()
    assert first["USER_CREATED"] == 3
    payments = (await fetch("SELECT count(*) AS n FROM payments"))[0]["n"]
    assert payments > 0 and first["PAYMENT_CREATED"] == payments
    # One audit row per event in the outbox, each linked by its event id.
    outbox = await fetch("SELECT id FROM outbox ORDER BY seq")
    audit = await fetch("SELECT event_id FROM audit_logs")
    assert sorted(r["id"] for r in outbox) == sorted(r["event_id"] for r in audit)
    # Seed users' rows name their resource and the seeded user.
    rows = await fetch(
        "SELECT a.resource_id, u.email FROM audit_logs a JOIN users u ON u.id::text = a.resource_id"
        " WHERE a.action = 'USER_CREATED' ORDER BY u.email"
    )
    assert [r["email"] for r in rows] == [
        "admin@example.com",
        "customer@example.com",
        "vendor@example.com",
    ]

    await seed_all(get_settings())
    assert await counts() == first
    assert len(await fetch("SELECT id FROM outbox")) == len(outbox)

    # The consumer delivering the same events later changes nothing either.
    from paysys.admin.consumer import handlers
    from paysys.core.db import create_engine, create_sessionmaker
    from paysys.core.events.envelope import EventEnvelope

    engine = create_engine(get_settings())
    try:
        sessionmaker = create_sessionmaker(engine)
        for row in await fetch("SELECT payload FROM outbox ORDER BY seq"):
            import json

            event = EventEnvelope.model_validate(json.loads(row["payload"]))
            async with sessionmaker() as session, session.begin():
                assert await handlers.dispatch(session, event)
    finally:
        await engine.dispose()
    assert await counts() == first
