"""May this caller see that payment? Asked of the payments service itself (§9.3 `subscribe` to
`payment:<id>`): `GET /api/payments/{id}` with the caller's own token, so the answer follows
§4 visibility exactly (sender, recipient, ADMIN) and a payment that does not exist looks the
same as one the caller may not see. The gateway has no database."""

from __future__ import annotations

import uuid

import aiohttp

from paysys.gateway.upstreams import ServicePool


class PaymentLookup:
    def __init__(self, timeout: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None
        self.pool: ServicePool | None = None

    async def visible(self, payment_id: str, token: str, request_id: str) -> bool | None:
        """True: the caller may see it; False: not found for this caller; None: cannot tell
        now (payments unreachable or its circuit open)."""
        try:
            uuid.UUID(payment_id)
        except ValueError:
            return False
        if self.session is None or self.pool is None:
            return None
        upstream = self.pool.choose()
        if upstream is None:
            return None
        headers = {"authorization": f"Bearer {token}", "x-request-id": request_id}
        try:
            async with self.session.get(
                f"{upstream.base}/api/payments/{payment_id}", headers=headers, timeout=self.timeout
            ) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            upstream.failure()
            return None
        except BaseException:
            upstream.release()
            raise
        upstream.success()
        if status == 200:
            return True
        if status in (401, 403, 404):
            return False
        return None
