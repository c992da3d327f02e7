"""Seed payments of api-contracts §8: between the seeded customer and vendor, in several
statuses and currencies. Idempotent: ids are derived from a fixed namespace, so a second run
inserts nothing (and emits nothing). Runs after the auth seed created the users."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.core.events.outbox import emit
from paysys.core.logging import get_logger
from paysys.core.money import format_minor, to_minor
from paysys.core.timefmt import iso_z

log = get_logger("paysys.payments.seed")
NAMESPACE = uuid.UUID("6f0c1f3e-2b7a-4d55-9a51-3d0e1c7a9b10")

# (key, from, to, amount, currency, type, status, description, days ago)
SEED_PAYMENTS: list[tuple[str, str, str, str, str, str, str, str, int]] = [
    ("p1", "customer", "vendor", "120.00", "USD", "instant", "completed", "Handmade mug set", 12),
    ("p2", "customer", "vendor", "45.50", "EUR", "instant", "completed", "Leather wallet", 9),
    ("p3", "customer", "vendor", "15000", "JPY", "scheduled", "pending", "Tea ceremony kit", 3),
    ("p4", "customer", "vendor", "89.99", "GBP", "recurring", "failed", "Monthly FAIL box", 6),
    ("p5", "customer", "vendor", "30.00", "USD", "instant", "cancelled", "Duplicate order", 5),
    ("p6", "vendor", "customer", "12.00", "USD", "instant", "completed", "Refund: shipping", 2),
    ("p7", "customer", "vendor", "250.00", "USD", "scheduled", "processing", "Custom table", 1),
]
_PATHS = {
    "pending": ["pending"],
    "processing": ["pending", "processing"],
    "completed": ["pending", "processing", "completed"],
    "failed": ["pending", "processing", "failed"],
    "cancelled": ["pending", "cancelled"],
}


async def _users(session: AsyncSession) -> dict[str, Any]:
    rows = await session.execute(
        text(
            "SELECT id, email, name FROM users WHERE lower(email) IN "
            "('customer@example.com', 'vendor@example.com')"
        )
    )
    return {row.email.split("@")[0]: row for row in rows}


async def seed(session: AsyncSession) -> None:
    users = await _users(session)
    if {"customer", "vendor"} - set(users):
        log.warning("payments seed skipped: the seeded customer and vendor are missing")
        return
    now = datetime.now(UTC).replace(microsecond=0)
    for key, src, dst, amount, currency, kind, status, description, days in SEED_PAYMENTS:
        payment_id = uuid.uuid5(NAMESPACE, key)
        sender, recipient = users[src], users[dst]
        created = now - timedelta(days=days)
        minor = to_minor(amount, currency)
        inserted = await session.scalar(
            text(
                "INSERT INTO payments (id, sender_id, recipient_id, amount, currency, status, "
                "type, description, metadata, failure_reason, psp_transaction_id, completed_at, "
                "created_at, updated_at) VALUES (:id, :s, :r, :amount, :currency, :status, "
                ":type, :description, CAST(:metadata AS jsonb), :failure, :psp, :completed, "
                ":created, :updated) ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            {
                "id": payment_id,
                "s": sender.id,
                "r": recipient.id,
                "amount": minor,
                "currency": currency,
                "status": status,
                "type": kind,
                "description": description,
                "metadata": json.dumps({"seed": True, "ref": key}),
                "failure": "Declined by the simulated processor" if status == "failed" else None,
                "psp": f"sim_seed_{key}" if status in ("completed", "failed") else None,
                "completed": created + timedelta(minutes=1) if status == "completed" else None,
                "created": created,
                "updated": created + timedelta(minutes=1),
            },
        )
        if inserted is None:
            continue  # already seeded
        for step, state in enumerate(_PATHS[status]):
            await session.execute(
                text(
                    "INSERT INTO payment_transactions (id, payment_id, status, status_message, "
                    "created_at) VALUES (:id, :pid, :status, :message, :at)"
                ),
                {
                    "id": uuid.uuid5(NAMESPACE, f"{key}:{state}"),
                    "pid": payment_id,
                    "status": state,
                    "message": "Payment created" if step == 0 else "Seed data",
                    "at": created + timedelta(seconds=step * 30),
                },
            )
        payment = {
            "id": str(payment_id),
            "senderId": str(sender.id),
            "recipientId": str(recipient.id),
            "amount": format_minor(minor, currency),
            "currency": currency,
            "status": status,
            "type": kind,
            "description": description,
            "createdAt": iso_z(created),
        }
        await emit(
            session,
            "payment.created",
            {"payment": {**payment, "status": "pending"}},
            actor_id=sender.id,
        )
        previous = "pending"
        for state in _PATHS[status][1:]:
            await emit(
                session,
                "payment.status_changed",
                {
                    "paymentId": str(payment_id),
                    "senderId": str(sender.id),
                    "recipientId": str(recipient.id),
                    "oldStatus": previous,
                    "newStatus": state,
                    "reason": "Seed data",
                    "amount": payment["amount"],
                    "currency": currency,
                    "type": kind,
                },
            )
            previous = state
        if status in ("completed", "failed", "cancelled"):
            await emit(session, f"payment.{status}", {"payment": payment})
