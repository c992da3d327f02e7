"""The payment processor worker (`PAYMENTS_PROCESSOR=simulated`, the default).

Life of a payment here:

1. **claim** — a payment `pending` for at least `PROCESSOR_DELAY_MS` (the window in which its
   sender can still cancel it) is locked with `FOR UPDATE SKIP LOCKED` (so any number of
   replicas share the queue without taking the same payment), moved to `processing` through
   the status machine (history row + events in the same transaction) and leased to this
   process for `PROCESSOR_LEASE_MS`;
2. **decide** — after `PROCESSOR_DELAY_MS` the simulated PSP decides: a description containing
   `FAIL` fails with a reason, anything else completes with a PSP transaction id;
3. **report** — the outcome goes through the same door a real PSP uses: a signed HTTP POST to
   the service's own `/api/payments/webhooks/psp` (on the port this very process serves, see
   `webhook_url`). Its `eventId` is derived from the payment and the outcome, so sending it
   again (a retry, a restart) changes nothing.

Restarts: on a graceful stop the leases of unfinished payments are released, so the next
process takes them over at once; after a crash the lease runs out and any processor takes
them over. A `processing` payment without a lease (e.g. set by an administrator) is taken over
too. Nothing is stuck, nothing is applied twice (state machine + webhook event ids).

A real PSP plugs in behind `Psp` (submit the payment in `decide`, report via its webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp

from paysys.core.config import Settings
from paysys.core.logging import get_logger
from paysys.core.runtime import Runtime
from paysys.payments import queries, webhooks
from paysys.payments.db import Conn, connect, dumps
from paysys.payments.service import apply_transition

log = get_logger("paysys.payments.processor")

BATCH = 50
MAX_INFLIGHT = 500
SEND_ATTEMPTS = 5
IDLE_POLL = 1.0
ERROR_POLL = 5.0
WEBHOOK_PATH = "/api/payments/webhooks/psp"
FAIL_MARKER = "FAIL"
SUBMITTED = "Submitted to the payment processor"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # completed | failed
    psp_transaction_id: str | None
    failure_reason: str | None


class Psp(Protocol):
    async def decide(self, payment: Any) -> Outcome: ...


class SimulatedPsp:
    """Deterministic: `FAIL` in the description → failed; otherwise completed."""

    async def decide(self, payment: Any) -> Outcome:
        payment_id = uuid.UUID(str(payment["id"]))
        psp_id = "sim_" + uuid.uuid5(payment_id, "psp").hex[:24]
        if FAIL_MARKER in payment["description"]:
            return Outcome(
                "failed", psp_id, "Declined by the simulated processor (description contains FAIL)"
            )
        return Outcome("completed", psp_id, None)


# (body, headers) → HTTP status of the webhook endpoint.
WebhookSender = Callable[[bytes, dict[str, str]], Awaitable[int]]


_ANY_INTERFACE = {"", "0.0.0.0", "::", "localhost"}


def webhook_url(settings: Settings) -> str:
    """Where the outcome is reported: PAYMENTS_WEBHOOK_URL (a base URL or the full webhook URL);
    else this very process, at the PORT/HOST `paysys serve` set to what it binds (never a fixed
    3002: another service there would get, and refuse, our webhooks); else, in a process that
    serves no HTTP (`paysys worker payments`), the first PAYMENTS_SERVICE_URL."""
    if settings.payments_webhook_url:
        base = settings.payments_webhook_url
    elif settings.port:
        host = (settings.host or "").strip()
        if host in _ANY_INTERFACE:
            host = "127.0.0.1"
        elif ":" in host:  # an IPv6 literal
            host = f"[{host.strip('[]')}]"
        base = f"http://{host}:{settings.port}"
    else:
        base = settings.payments_service_url[0]
    base = base.rstrip("/")
    return base if base.endswith(WEBHOOK_PATH) else base + WEBHOOK_PATH


class HttpSender:
    """POSTs webhooks over HTTP with one pooled aiohttp session."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, body: bytes, headers: dict[str, str]) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.post(self.url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def event_body(payment_id: uuid.UUID, outcome: Outcome) -> bytes:
    body: dict[str, Any] = {
        "eventId": f"sim_{payment_id}_{outcome.status}",
        "paymentId": str(payment_id),
        "status": outcome.status,
        "pspTransactionId": outcome.psp_transaction_id,
    }
    if outcome.failure_reason:
        body["failureReason"] = outcome.failure_reason
    return dumps(body).encode()


async def claim(conn: Conn, *, delay_s: float, lease_s: float, limit: int) -> list[Any]:
    """Lock due payments (skipping those another processor holds), move pending ones to
    processing, lease them all to this process; one transaction."""
    async with conn.transaction():
        ids = await queries.lock_due(conn, delay_s, limit)
        if not ids:
            return []
        rows = await queries.payments_by_id(conn, ids)
        lease_until = datetime.now(UTC) + timedelta(seconds=lease_s)
        for row in rows:
            if row["status"] == "pending":
                await apply_transition(
                    conn,
                    row,
                    "processing",
                    actor_id=None,
                    reason=SUBMITTED,
                    lease_until=lease_until,
                )
            else:
                await queries.renew_lease(conn, row["id"], lease_until)
    return list(rows)


async def release(conn: Conn, ids: list[uuid.UUID]) -> None:
    if ids:
        await queries.release_leases(conn, ids)


async def report(
    send: WebhookSender,
    secret: str,
    payment_id: uuid.UUID,
    outcome: Outcome,
    *,
    backoff: float = 0.2,
) -> bool:
    """Deliver the outcome webhook; True once the endpoint accepted or refused it for good
    (2xx, or a 4xx such as 409 when the payment moved on meanwhile)."""
    body = event_body(payment_id, outcome)
    for attempt in range(SEND_ATTEMPTS):
        headers = {
            "Content-Type": "application/json",
            webhooks.HEADER: webhooks.sign(body, secret),
        }
        try:
            status = await send(body, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("webhook delivery failed", payment_id=str(payment_id), error=repr(exc))
        else:
            if status < 300:
                return True
            if 400 <= status < 500:
                log.warning("webhook refused", payment_id=str(payment_id), status=status, body=body)
                return True
            log.warning("webhook answered with an error", payment_id=str(payment_id), status=status)
        await asyncio.sleep(backoff * 2**attempt)
    return False  # the lease runs out and a processor takes the payment over


class ProcessorWorker:
    """A runtime worker: `await ProcessorWorker(...)(runtime)` loops until the runtime stops."""

    def __init__(
        self,
        psp: Psp | None = None,
        sender: Callable[[], WebhookSender | None] | None = None,
    ) -> None:
        self.psp = psp or SimulatedPsp()
        self._sender_factory = sender
        self.inflight: dict[uuid.UUID, asyncio.Task[bool]] = {}

    async def __call__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        delay = max(0.0, settings.processor_delay_ms / 1000)
        lease = max(settings.processor_lease_ms / 1000, delay + 1.0)
        # Busy: poll often. Idle: back off (doubling up to IDLE_POLL) so a quiet replica costs
        # one small query a second, not dozens; errors back off further.
        busy_poll = min(0.25, max(0.02, delay / 2))
        poll = busy_poll
        http = HttpSender(webhook_url(settings))

        async def send(body: bytes, headers: dict[str, str]) -> int:
            custom = self._sender_factory() if self._sender_factory else None
            return await (custom or http)(body, headers)

        try:
            while not runtime.stopping.is_set():
                free = MAX_INFLIGHT - len(self.inflight)
                if free > 0:
                    try:
                        async with connect(runtime.engine) as conn:
                            rows = await claim(
                                conn, delay_s=delay, lease_s=lease, limit=min(BATCH, free)
                            )
                    except Exception:
                        log.exception("processor could not claim payments")
                        rows = []
                        poll = ERROR_POLL
                    else:
                        poll = busy_poll if rows else min(IDLE_POLL, max(busy_poll, poll * 2))
                    for row in rows:
                        payment_id = uuid.UUID(str(row["id"]))
                        if payment_id in self.inflight:  # pragma: no cover - lease renewed
                            continue
                        task = asyncio.create_task(
                            self._handle(runtime, send, row, delay, settings.psp_webhook_secret)
                        )
                        self.inflight[payment_id] = task
                        task.add_done_callback(self._forget(payment_id))
                if await runtime.sleep(poll):
                    break
        finally:
            await self._shutdown(runtime)
            await http.close()

    def _forget(self, payment_id: uuid.UUID) -> Callable[[asyncio.Task[bool]], None]:
        def done(_task: asyncio.Task[bool]) -> None:
            self.inflight.pop(payment_id, None)

        return done

    async def _handle(
        self, runtime: Runtime, send: WebhookSender, row: Any, delay: float, secret: str
    ) -> bool:
        await asyncio.sleep(delay)
        outcome = await self.psp.decide(row)
        return await report(send, secret, uuid.UUID(str(row["id"])), outcome)

    async def _shutdown(self, runtime: Runtime) -> None:
        """Stop in-flight work and hand its payments back (released leases)."""
        tasks = dict(self.inflight)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        unfinished = [
            pid
            for pid, task in tasks.items()
            if task.cancelled() or task.exception() is not None or not task.result()
        ]
        if unfinished:
            with contextlib.suppress(Exception):
                async with connect(runtime.engine) as conn:
                    await release(conn, unfinished)
            log.info("processor released unfinished payments", count=len(unfinished))
        self.inflight.clear()


async def idempotency_janitor(runtime: Runtime) -> None:
    """Deletes Idempotency-Key records past their 24 h (expired ones are already ignored)."""
    while not await runtime.sleep(60.0):
        try:
            async with connect(runtime.engine) as conn:
                await queries.delete_expired_keys(conn)
        except Exception:  # pragma: no cover - next round
            log.exception("idempotency cleanup failed")
