"""The action, resource and actor of every event type (events.md → api-contracts §5)."""

from __future__ import annotations

import uuid

import pytest

from paysys.admin.audit import ACTIONS, classify
from paysys.core.events.catalogue import event_types
from tests.support.admin import event

USER = str(uuid.uuid4())
ADMIN = str(uuid.uuid4())
PAYMENT = str(uuid.uuid4())

CASES = [
    (
        "user.created",
        {"user": {"id": USER}, "via": "register"},
        None,
        ("USER_REGISTERED", "user", USER, USER),
    ),
    (
        "user.created",
        {"user": {"id": USER}, "via": "admin"},
        ADMIN,
        ("USER_CREATED", "user", USER, ADMIN),
    ),
    (
        "user.updated",
        {"user": {"id": USER}, "changes": {}},
        ADMIN,
        ("USER_UPDATED", "user", USER, ADMIN),
    ),
    (
        "user.role_changed",
        {"userId": USER, "oldRole": "CUSTOMER", "newRole": "VENDOR"},
        ADMIN,
        ("USER_ROLE_CHANGED", "user", USER, ADMIN),
    ),
    (
        "user.status_changed",
        {"userId": USER, "isActive": False},
        ADMIN,
        ("USER_STATUS_CHANGED", "user", USER, ADMIN),
    ),
    ("user.deleted", {"userId": USER}, ADMIN, ("USER_DELETED", "user", USER, ADMIN)),
    ("user.logged_in", {"userId": USER}, None, ("USER_LOGIN", "user", USER, USER)),
    ("user.logged_out", {"userId": USER}, None, ("USER_LOGOUT", "user", USER, USER)),
    (
        "user.login_failed",
        {"email": "a@b.c", "reason": "x"},
        None,
        ("USER_LOGIN_FAILED", "user", None, None),
    ),
    (
        "user.password_changed",
        {"userId": USER},
        None,
        ("USER_PASSWORD_CHANGED", "user", USER, USER),
    ),
    (
        "payment.created",
        {"payment": {"id": PAYMENT}},
        USER,
        ("PAYMENT_CREATED", "payment", PAYMENT, USER),
    ),
    (
        "payment.status_changed",
        {"paymentId": PAYMENT},
        None,
        ("PAYMENT_STATUS_CHANGED", "payment", PAYMENT, None),
    ),
    (
        "payment.completed",
        {"payment": {"id": PAYMENT}},
        None,
        ("PAYMENT_COMPLETED", "payment", PAYMENT, None),
    ),
    (
        "payment.failed",
        {"payment": {"id": PAYMENT}},
        None,
        ("PAYMENT_FAILED", "payment", PAYMENT, None),
    ),
    (
        "payment.cancelled",
        {"payment": {"id": PAYMENT}},
        USER,
        ("PAYMENT_CANCELLED", "payment", PAYMENT, USER),
    ),
    (
        "profile.updated",
        {"userId": USER, "changes": {}},
        None,
        ("PROFILE_UPDATED", "profile", USER, USER),
    ),
    (
        "config.updated",
        {"key": "payment.minAmount"},
        ADMIN,
        ("SYSTEM_CONFIG_CHANGED", "config", "payment.minAmount", ADMIN),
    ),
]


@pytest.mark.parametrize(("type_", "data", "actor", "expected"), CASES)
def test_classify(type_, data, actor, expected) -> None:  # type: ignore[no-untyped-def]
    entry = classify(event(type_, data, actor_id=actor))
    action, resource_type, resource_id, actor_id = expected
    assert entry.action == action
    assert entry.resource_type == resource_type
    assert entry.resource_id == resource_id
    assert entry.actor_id == (uuid.UUID(actor_id) if actor_id else None)


def test_every_catalogue_type_and_every_action_is_covered() -> None:
    assert {case[0] for case in CASES} == set(event_types())
    assert {case[3][0] for case in CASES} == set(ACTIONS)


def test_unknown_type_still_gets_a_row() -> None:
    entry = classify(event("invoice.paid", {"invoiceId": "i1"}, actor_id="not-a-uuid"))
    assert entry.action == "INVOICE_PAID"
    assert entry.resource_type == "invoice" and entry.actor_id is None
