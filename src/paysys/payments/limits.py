"""The payment amount limits per currency from the system config (owned by admin), cached.

`payment.minAmount.<CUR>` / `payment.maxAmount.<CUR>`, and the unsuffixed keys for USD only
(api-contracts §10), read through `paysys.core.sysconfig.amount_limits` as minor units per
currency, kept for `TTL` seconds per process, and dropped at once when this service's consumer
sees `config.updated` for any limit key (other replicas pick the change up within the TTL).
"""

from __future__ import annotations

import time

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from paysys.core import sysconfig
from paysys.core.events.envelope import EventEnvelope
from paysys.core.logging import get_logger
from paysys.core.money import MoneyError

log = get_logger("paysys.payments.limits")

TTL = 5.0
DEFAULTS: sysconfig.Limits = sysconfig.effective_limits(
    {key: sysconfig.KEYS[key].default for key in sysconfig.LIMIT_BASES}
)


class AmountLimits:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._value: sysconfig.Limits | None = None
        self._loaded_at = 0.0

    def invalidate(self) -> None:
        self._value = None

    async def get(self, sessionmaker: async_sessionmaker[AsyncSession]) -> sysconfig.Limits:
        now = time.monotonic()
        if self._value is not None and now - self._loaded_at < self.ttl:
            return self._value
        try:
            async with sessionmaker() as session:
                value = await sysconfig.amount_limits(session)
        except (SQLAlchemyError, MoneyError):
            # Config unreadable (or a stored value edited by hand past the rules): keep the
            # last known limits, or the contract's defaults.
            log.warning("payment limits unreadable; using last known values")
            value = self._value or DEFAULTS
        self._value, self._loaded_at = value, now
        return value

    async def on_config_updated(self, session: AsyncSession, event: EventEnvelope) -> None:
        """Consumer handler for `config.updated` (runs in the consumer's transaction)."""
        if sysconfig.is_limit_key(event.data.get("key")):
            self.invalidate()
