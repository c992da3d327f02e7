"""Event catalogue, envelope, handler registry and small helpers (no servers)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from paysys.cli.events import _patterns, format_event
from paysys.core.events import catalogue
from paysys.core.events.catalogue import (
    CATALOGUE,
    UnknownEventType,
    find_secret_keys,
    model_for,
    parse,
    validate_data,
)
from paysys.core.events.consumer import EventHandlers, _id_key, consumer_name
from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.outbox import emit
from paysys.core.events.transport import Backoff, channel, stream_fields

USER = {
    "id": str(uuid.uuid4()),
    "email": "a@example.com",
    "name": "A",
    "role": "CUSTOMER",
    "isActive": True,
    "emailVerified": False,
    "createdAt": "2026-01-01T00:00:00.000Z",
    "updatedAt": "2026-01-01T00:00:00.000Z",
}
PAYMENT = {
    "id": str(uuid.uuid4()),
    "status": "pending",
    "amount": 1234,
    "currency": "USD",
    "senderId": str(uuid.uuid4()),
    "recipientId": str(uuid.uuid4()),
    "type": "instant",
    "description": "rent",
}
UID = str(uuid.uuid4())

VALID: dict[str, dict[str, Any]] = {
    "user.created": {"user": USER, "via": "register"},
    "user.updated": {"user": USER, "changes": {"name": {"old": "A", "new": "B"}}},
    "user.role_changed": {"userId": UID, "oldRole": "CUSTOMER", "newRole": "VENDOR"},
    "user.status_changed": {"userId": UID, "isActive": False, "reason": "fraud"},
    "user.deleted": {"userId": UID},
    "user.logged_in": {"userId": UID, "ip": "127.0.0.1", "userAgent": "curl"},
    "user.logged_out": {"userId": UID, "allSessions": True},
    "user.login_failed": {"email": "a@example.com", "ip": "127.0.0.1", "reason": "bad"},
    "user.password_changed": {"userId": UID},
    "payment.created": {"payment": PAYMENT},
    "payment.status_changed": {
        "paymentId": PAYMENT["id"],
        "oldStatus": "pending",
        "newStatus": "processing",
        "reason": None,
    },
    "payment.completed": {"payment": {**PAYMENT, "status": "completed"}},
    "payment.failed": {"payment": {**PAYMENT, "status": "failed"}},
    "payment.cancelled": {"payment": {**PAYMENT, "status": "cancelled"}},
    "profile.updated": {"userId": UID, "changes": {"bio": "hi"}},
    "config.updated": {"key": "payment.maxAmount", "oldValue": 100, "newValue": 200},
}


def test_catalogue_covers_every_type_of_events_md() -> None:
    assert catalogue.event_types() == set(VALID)
    assert all(version == 1 for _, version in CATALOGUE)


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_each_type_accepts_its_documented_shape(event_type: str) -> None:
    model = validate_data(event_type, 1, VALID[event_type])
    assert isinstance(model, model_for(event_type))


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("user.created", {"user": USER, "via": "signup"}),  # not register|admin
        ("user.created", {"user": {"email": "x@example.com"}, "via": "admin"}),  # no id
        ("user.role_changed", {"userId": "not-a-uuid", "oldRole": "A", "newRole": "B"}),
        ("user.status_changed", {"userId": UID}),  # isActive missing
        ("payment.created", {"payment": {"id": PAYMENT["id"]}}),  # status/amount missing
        ("config.updated", {}),
    ],
)
def test_wrong_shapes_are_rejected(event_type: str, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_data(event_type, 1, data)


@pytest.mark.parametrize(
    "data",
    [
        {"user": {**USER, "passwordHash": "$argon2id$..."}, "via": "register"},
        {"user": {**USER, "password_hash": "x"}, "via": "admin"},
        {"user": USER, "via": "register", "refreshToken": "abc"},
        {"user": USER, "via": "register", "extra": [{"secret": "s"}]},
    ],
)
def test_secrets_never_travel_in_events(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must not carry secrets"):
        validate_data("user.created", 1, data)


def test_find_secret_keys_reports_paths() -> None:
    assert find_secret_keys({"a": {"Password": 1}, "b": [{"api_key": 2}], "token_x": 3}) == [
        "data.a.Password",
        "data.b[0].api_key",
    ]


def test_adding_a_field_is_compatible_and_python_names_work() -> None:
    model = validate_data("user.deleted", 1, {"userId": UID, "hard": False})
    assert str(model.user_id) == UID  # type: ignore[attr-defined]
    assert validate_data("user.deleted", 1, {"user_id": UID})


def test_unknown_type_or_version_is_an_error() -> None:
    with pytest.raises(UnknownEventType, match=r"user\.creatd"):
        validate_data("user.creatd", 1, {})
    with pytest.raises(UnknownEventType, match="version 2"):
        model_for("user.created", 2)
    with pytest.raises(UnknownEventType):
        catalogue.require_known_type("nope")
    catalogue.require_known_type("user.created")


def test_new_versions_are_registered_next_to_old_ones() -> None:
    class UserDeletedV2(catalogue.EventData):
        user_id: uuid.UUID
        hard: bool

    catalogue.register("user.deleted", 2, UserDeletedV2)
    try:
        assert model_for("user.deleted", 2) is UserDeletedV2
        assert model_for("user.deleted", 1) is catalogue.UserDeletedV1
        with pytest.raises(ValidationError):
            validate_data("user.deleted", 2, {"userId": UID})
    finally:
        del CATALOGUE[("user.deleted", 2)]


def test_parse_gives_the_typed_model_back() -> None:
    event = EventEnvelope(
        type="user.logged_out", source="auth-service", data=VALID["user.logged_out"]
    )
    parsed = parse(event)
    assert isinstance(parsed, catalogue.UserLoggedOutV1) and parsed.all_sessions is True


class _NoSession:
    """emit must validate before touching the database."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"session.{name} used for an invalid event")


async def test_emit_rejects_unknown_types_and_bad_data_before_writing() -> None:
    with pytest.raises(UnknownEventType):
        await emit(_NoSession(), "payment.complete", {"payment": PAYMENT})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await emit(_NoSession(), "user.deleted", {"user": UID})  # type: ignore[arg-type]


def test_plain_sql_rows_are_validated_like_emit() -> None:
    """OutboxRows (the asyncpg statements' outbox rows) go through the same catalogue check."""
    from paysys.core.events.outbox import OutboxRows

    with pytest.raises(UnknownEventType):
        OutboxRows.of([("payment.complete", {"payment": PAYMENT})], actor_id=None)
    with pytest.raises(ValidationError):
        OutboxRows.of([("user.deleted", {"user": UID})], actor_id=None)
    rows = OutboxRows.of(
        [("user.deleted", {"userId": UID}), ("user.deleted", {"userId": UID})], actor_id=None
    )
    assert len(set(rows.ids)) == 2 and rows.types == ["user.deleted"] * 2
    payload = json.loads(rows.payloads[0])
    assert payload["id"] == rows.ids[0] and payload["actorId"] is None
    assert payload["data"] == {"userId": UID}


# -- envelope ---------------------------------------------------------------------------------
def test_envelope_wire_format() -> None:
    event = EventEnvelope(
        type="user.deleted",
        source="admin-service",
        occurred_at=datetime(2026, 1, 1, 12, 30, 45, 123456, tzinfo=UTC),
        data={"userId": UID},
    )
    wire = event.to_wire()
    assert wire["occurredAt"] == "2026-01-01T12:30:45.123Z"
    assert wire["actorId"] is None and wire["correlationId"] is None
    assert EventEnvelope.model_validate(wire).id == event.id


# -- handler registry -------------------------------------------------------------------------
def test_handlers_register_by_type_several_types_and_any() -> None:
    handlers = EventHandlers("admin")
    assert not handlers

    async def a(session: Any, event: EventEnvelope) -> None: ...

    async def b(session: Any, event: EventEnvelope) -> None: ...

    async def audit(session: Any, event: EventEnvelope) -> None: ...

    assert handlers.on("user.created")(a) is a
    handlers.on("user.created", "user.deleted")(b)
    assert handlers.on_any(audit) is audit
    assert handlers
    assert handlers.handlers_for("user.created") == [a, b, audit]
    assert handlers.handlers_for("user.deleted") == [b, audit]
    assert handlers.handlers_for("payment.created") == [audit]
    assert handlers.event_types == {"user.created", "user.deleted"}


def test_handler_registration_catches_typos() -> None:
    handlers = EventHandlers("profile")
    with pytest.raises(UnknownEventType):
        handlers.on("user.create")
    with pytest.raises(ValueError, match="at least one"):
        handlers.on()
    with pytest.raises(ValueError):
        EventHandlers("two words")
    with pytest.raises(ValueError):
        EventHandlers("")


# -- helpers ----------------------------------------------------------------------------------
def test_backoff_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[5:])
    backoff.reset()
    assert backoff.next() <= 0.1


def test_stream_names_and_ids() -> None:
    assert channel("user.created") == "events.user.created"
    assert stream_fields("i", "t", "{}") == {"id": "i", "type": "t", "event": "{}"}
    assert sorted(["10-1", "9-5", "10-0"], key=_id_key) == ["9-5", "10-0", "10-1"]
    name = consumer_name("admin")
    assert name.startswith("admin:") and name != consumer_name("admin")


def test_tail_formatting_and_patterns() -> None:
    assert _patterns(None) == ["events.*"]
    assert _patterns(["payment.*", "user.created"]) == ["events.payment.*", "events.user.created"]
    line = format_event(
        {
            "id": "e1",
            "type": "user.deleted",
            "source": "admin-service",
            "occurredAt": "2026-01-01T12:30:45.123Z",
            "actorId": None,
            "data": {"userId": "u"},
        }
    )
    assert line.startswith("12:30:45.123  user.deleted")
    assert "actor=-" in line and '{"userId":"u"}' in line


def test_cli_registers_worker_and_events() -> None:
    from typer.testing import CliRunner

    from paysys.cli.main import app

    runner = CliRunner()
    worker = runner.invoke(app, ["worker", "--help"])
    assert worker.exit_code == 0 and "relay" in worker.output
    tail = runner.invoke(app, ["events", "tail", "--help"])
    assert tail.exit_code == 0 and "--type" in tail.output
    unknown = runner.invoke(app, ["worker", "nosuch"])
    assert unknown.exit_code == 2 and "unknown service" in unknown.output


def test_worker_options_may_follow_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from paysys.cli import worker
    from paysys.cli.main import app

    called: dict[str, Any] = {}

    async def fake_run_workers(service: str, settings: Any = None, **kwargs: Any) -> None:
        called.update(service=service, **kwargs)

    monkeypatch.setattr(worker, "run_workers", fake_run_workers)
    result = CliRunner().invoke(app, ["worker", "payments", "--no-relay"])
    assert result.exit_code == 0, result.output
    assert called == {"service": "payments", "relay": False}
    assert "paysys worker payments: stopped" in result.output
