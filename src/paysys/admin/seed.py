"""Seed audit rows of api-contracts §8 (development and test only; idempotent).

The other seeds (auth → profile → payments) create their data through the normal code paths,
which write events into the outbox. The audit log is built only from events, so this seed runs
the admin consumer's own handler (`record_audit`) over the events already in the outbox: the
audit rows match the seed data exactly and exist right after `paysys db seed`, before any
service has run. Rows are keyed by event id, so a second run adds nothing, and the consumer
delivering the same events later adds nothing either.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.admin.audit import record_audit
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.models import OutboxEvent
from paysys.core.logging import get_logger

log = get_logger("paysys.admin.seed")
BATCH = 500


async def seed(session: AsyncSession) -> None:
    last_seq = 0
    recorded = 0
    while True:
        rows = (
            await session.execute(
                select(OutboxEvent.seq, OutboxEvent.payload)
                .where(OutboxEvent.seq > last_seq)
                .order_by(OutboxEvent.seq)
                .limit(BATCH)
            )
        ).all()
        if not rows:
            break
        for seq, payload in rows:
            last_seq = seq
            try:
                event = EventEnvelope.model_validate(payload)
            except ValueError:
                log.warning("seed: skipping a malformed outbox row", seq=seq)
                continue
            await record_audit(session, event)
            recorded += 1
    await session.commit()
    log.info("seed: audit log built from outbox events", events=recorded)
