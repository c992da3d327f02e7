"""The payments seed: several statuses and currencies, idempotent."""

from __future__ import annotations

from paysys.core.db import create_engine, create_sessionmaker
from paysys.payments import seed as payments_seed
from tests.support.payments import count, make_user, pg


async def test_seed_is_idempotent(settings) -> None:
    async with pg() as conn:
        await conn.execute(
            "DELETE FROM payment_transactions WHERE payment_id IN (SELECT id FROM payments p "
            "WHERE p.metadata->>'seed' = 'true')"
        )
        await conn.execute("DELETE FROM payments WHERE metadata->>'seed' = 'true'")
        existing = await conn.fetch(
            "SELECT email FROM users WHERE email IN ('customer@example.com', 'vendor@example.com')"
        )
    have = {r["email"] for r in existing}
    if "customer@example.com" not in have:
        await make_user("CUSTOMER", email="customer@example.com", name="Customer User")
    if "vendor@example.com" not in have:
        await make_user("VENDOR", email="vendor@example.com", name="Vendor User")
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    try:
        for _ in range(2):
            async with sessionmaker() as session:
                await payments_seed.seed(session)
                await session.commit()
    finally:
        await engine.dispose()
    seeded = "SELECT count(*) FROM payments WHERE metadata->>'seed' = 'true'"
    assert await count(seeded) == len(payments_seed.SEED_PAYMENTS)
    statuses = "SELECT count(DISTINCT status) FROM payments WHERE metadata->>'seed' = 'true'"
    assert await count(statuses) == 5
    currencies = "SELECT count(DISTINCT currency) FROM payments WHERE metadata->>'seed' = 'true'"
    assert await count(currencies) >= 3
    created_events = (
        "SELECT count(*) FROM outbox WHERE type = 'payment.created' "
        "AND payload->'data'->'payment'->>'id' = ANY($1::text[])"
    )
    ids = [
        str(payments_seed.uuid.uuid5(payments_seed.NAMESPACE, s[0]))
        for s in payments_seed.SEED_PAYMENTS
    ]
    assert await count(created_events, ids) == len(ids)
