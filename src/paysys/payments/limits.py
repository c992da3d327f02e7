"""`payment.minAmount` / `payment.maxAmount` from the system config (owned by admin), cached.

Read through `paysys.core.sysconfig.amount_limits`, kept for `TTL` seconds per process, and
dropped at once when this service's consumer sees `config.updated` for one of the keys (other
replicas pick the change up within the TTL).
"""

from __future__ import annotations

import time
from decimal import Decimal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from paysys.core import sysconfig
from paysys.core.events.envelope import EventEnvelope
from paysys.core.logging import get_logger

log = get_logger("paysys.payments.limits")

TTL = 5.0
LIMIT_KEYS = frozenset({"payment.minAmount", "payment.maxAmount"})
DEFAULTS = (
    Decimal(sysconfig.KEYS["payment.minAmount"].default),
    Decimal(sysconfig.KEYS["payment.maxAmount"].default),
)


class AmountLimits:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._value: tuple[Decimal, Decimal] | None = None
        self._loaded_at = 0.0

    def invalidate(self) -> None:
        self._value = None

    async def get(self, sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[Decimal, Decimal]:
        now = time.monotonic()
        if self._value is not None and now - self._loaded_at < self.ttl:
            return self._value
        try:
            async with sessionmaker() as session:
                value = await sysconfig.amount_limits(session)
        except SQLAlchemyError:
            # Config unreadable: keep the last known limits (or the contract's defaults).
            log.warning("payment limits unreadable; using last known values")
            value = self._value or DEFAULTS
        self._value, self._loaded_at = value, now
        return value

    async def on_config_updated(self, session: AsyncSession, event: EventEnvelope) -> None:
        """Consumer handler for `config.updated` (runs in the consumer's transaction)."""
        if event.data.get("key") in LIMIT_KEYS:
            self.invalidate()
