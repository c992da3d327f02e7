"""Real-time pieces without I/O: the event → message mapping (api-contracts §9.4), rooms and
fan-out, event-id dedupe, the inbound message rate, SSE framing and replay filtering."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from paysys.cli.events import socket_view
from paysys.core.events.envelope import EventEnvelope
from paysys.core.logging import redact_text as redact
from paysys.core.tokens import Principal
from paysys.gateway.realtime.handshake import Refusal
from paysys.gateway.realtime.hub import Connection, Hub, RecentIds
from paysys.gateway.realtime.limits import MessageRate
from paysys.gateway.realtime.messages import (
    AUDIT_CREATED,
    EVENT_TYPES,
    encode,
    map_event,
    revoked_user,
    rooms_for,
)
from paysys.gateway.realtime.sse import SseConnection, frame, parse_request, replayed_frames
from paysys.gateway.realtime.stream import stream_id_key

SENDER = str(uuid.uuid4())
RECIPIENT = str(uuid.uuid4())
PAYMENT = str(uuid.uuid4())


def envelope(type_: str, data: dict[str, Any], actor: str | None = None) -> dict[str, Any]:
    return EventEnvelope(type=type_, source="test", data=data, actor_id=actor).to_wire()


def payment(**extra: Any) -> dict[str, Any]:
    return {
        "id": PAYMENT,
        "senderId": SENDER,
        "recipientId": RECIPIENT,
        "amount": "100.00",
        "currency": "USD",
        "status": "pending",
        "type": "instant",
        "description": "secret note",
        "metadata": {"k": "v"},
        "sender": {"id": SENDER, "email": "s@example.com", "name": "S"},
        "failureReason": None,
        "updatedAt": "2026-01-01T00:00:05.120Z",
        **extra,
    }


def status_changed(**extra: Any) -> dict[str, Any]:
    return {
        "paymentId": PAYMENT,
        "senderId": SENDER,
        "recipientId": RECIPIENT,
        "oldStatus": "processing",
        "newStatus": "completed",
        "reason": None,
        **extra,
    }


def principal(role: str = "CUSTOMER", user_id: str | None = None) -> Principal:
    return Principal(
        id=uuid.UUID(user_id) if user_id else uuid.uuid4(),
        email="u@example.com",
        name="U",
        role=role,
        jti=str(uuid.uuid4()),
        sid=None,
        issued_at_ms=0,
        expires_at=2**40,
    )


class Recorder(Connection):
    transport = "test"
    __slots__ = ("closed", "got")

    def __init__(self, role: str = "CUSTOMER", user_id: str | None = None) -> None:
        super().__init__(str(uuid.uuid4()), principal(role, user_id))
        self.got: list[tuple[str, str, dict[str, Any]]] = []
        self.closed: list[int] = []

    def deliver(self, stream_id: str, event_type: str, text: str) -> None:
        self.got.append((stream_id, event_type, json.loads(text)))

    def close(self, code: int, error_code: str | None = None, message: str = "") -> None:
        self.closed.append(code)


def entry(raw: dict[str, Any]) -> dict[str, str]:
    return {"id": raw["id"], "type": raw["type"], "event": json.dumps(raw)}


# -- mapping -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event_type", "client_type"),
    [
        ("payment.created", "payment:created"),
        ("payment.completed", "payment:completed"),
        ("payment.failed", "payment:failed"),
        ("payment.cancelled", "payment:cancelled"),
    ],
)
def test_payment_snapshot_events_map_to_a_summary_for_the_parties_and_admins(
    event_type: str, client_type: str
) -> None:
    raw = envelope(event_type, {"payment": payment(failureReason="declined")}, SENDER)
    first, audit = map_event(raw)
    assert first.event_type == client_type
    assert first.rooms == (f"user:{SENDER}", f"user:{RECIPIENT}", "role:admin")
    message = json.loads(first.text)
    assert message["type"] == "event" and message["id"] == raw["id"]
    assert message["timestamp"] == raw["occurredAt"]
    assert message["payload"]["eventType"] == client_type
    assert message["payload"]["data"] == {
        "paymentId": PAYMENT,
        "senderId": SENDER,
        "recipientId": RECIPIENT,
        "userId": SENDER,
        "status": "pending",
        "amount": "100.00",
        "currency": "USD",
        "type": "instant",
        "failureReason": "declined",
        "updatedAt": "2026-01-01T00:00:05.120Z",
    }  # no description, metadata or email: clients refetch over REST
    assert audit.event_type == AUDIT_CREATED and audit.rooms == ("role:admin",)
    action = json.loads(audit.text)["payload"]["data"]["action"]
    assert action == event_type.replace(".", "_").upper()  # e.g. PAYMENT_CREATED


def test_status_changed_maps_to_payment_updated_with_previous_status_and_reason() -> None:
    raw = envelope("payment.status_changed", status_changed(reason="PSP said so"))
    updated, audit = map_event(raw)
    data = json.loads(updated.text)["payload"]["data"]
    assert updated.event_type == "payment:updated"
    assert data["status"] == "completed" and data["previousStatus"] == "processing"
    assert data["reason"] == "PSP said so" and data["paymentId"] == PAYMENT
    assert data["updatedAt"] == raw["occurredAt"]  # not in the event: its occurredAt
    assert updated.rooms == (f"user:{SENDER}", f"user:{RECIPIENT}", "role:admin")
    audit_data = json.loads(audit.text)["payload"]["data"]
    assert audit_data == {
        "eventId": raw["id"],
        "action": "PAYMENT_STATUS_CHANGED",
        "actorId": None,
        "resourceType": "payment",
        "resourceId": PAYMENT,
        "occurredAt": raw["occurredAt"],
    }


def test_a_status_change_without_its_parties_reaches_admins_only() -> None:
    data = status_changed()
    del data["senderId"], data["recipientId"]  # written before they were added
    raw = envelope("payment.status_changed", data)
    updated, _ = map_event(raw)
    assert updated.rooms == ("role:admin",) and not updated.parties_known


def test_a_payment_without_recipient_goes_to_its_sender_and_admins() -> None:
    (created, _) = map_event(envelope("payment.created", {"payment": payment(recipientId=None)}))
    assert created.rooms == (f"user:{SENDER}", "role:admin")


def test_catalogue_events_become_audit_messages_and_others_nothing() -> None:
    user = str(uuid.uuid4())
    (login,) = map_event(envelope("user.logged_in", {"userId": user, "ip": "1.2.3.4"}))
    data = json.loads(login.text)["payload"]["data"]
    assert data["action"] == "USER_LOGIN" and data["actorId"] == user  # self-acted
    assert data["resourceType"] == "user" and data["resourceId"] == user
    assert map_event(envelope("thing.unknown", {"x": 1})) == []
    assert map_event({"type": "payment.created"}) == []  # not an envelope
    assert map_event({"garbage": True}) == []


def test_event_types_never_collide_with_the_reference_clients_local_events() -> None:
    reserved = {"status", "connected", "disconnected", "error", "message", "max_reconnect_attempts"}
    assert not EVENT_TYPES & reserved


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        ("user.logged_out", {"userId": SENDER, "allSessions": False}, SENDER),
        ("user.password_changed", {"userId": SENDER}, SENDER),
        ("user.role_changed", {"userId": SENDER, "oldRole": "A", "newRole": "B"}, SENDER),
        ("user.status_changed", {"userId": SENDER, "isActive": False}, SENDER),
        ("user.status_changed", {"userId": SENDER, "isActive": True}, None),
        ("user.deleted", {"userId": SENDER}, SENDER),
        ("user.logged_in", {"userId": SENDER}, None),
        ("user.deleted", {"userId": "not-a-uuid"}, None),
    ],
)
def test_revocation_events_name_the_user_to_recheck(
    type_: str, data: dict[str, Any], expected: str | None
) -> None:
    assert revoked_user(envelope(type_, data)) == expected
    assert revoked_user({"type": "user.deleted", "data": "nope"}) is None


def test_encode_and_rooms() -> None:
    message = json.loads(encode("pong", id="abc", timestamp="2026-01-01T00:00:00.000Z"))
    assert message == {"type": "pong", "id": "abc", "timestamp": "2026-01-01T00:00:00.000Z"}
    assert json.loads(encode("pong"))["timestamp"].endswith("Z")
    assert rooms_for(SENDER, "VENDOR") == (f"user:{SENDER}", "role:vendor", "broadcast")


# -- dedupe, rate ----------------------------------------------------------------------------------
def test_recent_ids_drop_duplicates_for_ten_minutes_and_stay_bounded() -> None:
    now = [0.0]
    recent = RecentIds(ttl=600, max_size=3, clock=lambda: now[0])
    assert recent.add("a") and not recent.add("a")
    now[0] = 599.0
    assert not recent.add("a")
    now[0] = 600.0
    assert recent.add("a")  # forgotten after 10 minutes
    assert recent.add("b") and recent.add("c") and recent.add("d")
    assert len(recent) == 3  # "a" (oldest) dropped at the bound
    assert recent.add("a")


def test_message_rate_allows_20_per_10_s_and_closes_on_the_third_breach() -> None:
    rate = MessageRate(0.0)
    assert [rate.hit(0.0) for _ in range(20)] == ["ok"] * 20
    assert rate.hit(0.0) == "limited"
    assert rate.hit(0.5) == "ok"  # 2 per second refill
    assert rate.hit(0.5) == "limited"
    assert rate.hit(0.5) == "close"  # third breach within 60 s
    later = MessageRate(0.0)
    for _ in range(20):
        later.hit(0.0)
    assert later.hit(0.0) == "limited"
    assert later.hit(0.1) == "limited"
    for _ in range(20):
        assert later.hit(70.0) in ("ok",)  # refilled; old breaches are out of the window
    assert later.hit(70.0) == "limited"


# -- hub -----------------------------------------------------------------------------------------
def test_hub_sends_each_event_once_to_the_parties_and_admins_only() -> None:
    hub = Hub()
    sender, recipient = Recorder(user_id=SENDER), Recorder(user_id=RECIPIENT)
    stranger, admin = Recorder(), Recorder("ADMIN")
    admin_party = Recorder("ADMIN", user_id=SENDER)  # an admin who also sent it: once
    for connection in (sender, recipient, stranger, admin, admin_party):
        hub.add(connection)
    raw = envelope("payment.created", {"payment": payment()})
    assert hub.dispatch("1-0", entry(raw)) == 4 + 2  # payment:created to 4, audit to 2
    assert [t for _, t, _ in sender.got] == ["payment:created"]
    assert [t for _, t, _ in recipient.got] == ["payment:created"]
    assert stranger.got == []
    assert [t for _, t, _ in admin.got] == ["payment:created", AUDIT_CREATED]
    assert [t for _, t, _ in admin_party.got] == ["payment:created", AUDIT_CREATED]
    assert hub.dispatch("2-0", entry(raw)) == 0  # the same event id again: dropped
    assert len(sender.got) == 1
    hub.remove(sender)
    hub.remove(sender)  # twice: harmless
    assert hub.count_user(SENDER) == 1 and hub.user_connections(RECIPIENT) == [recipient]


def test_hub_asks_for_a_recheck_of_a_user_with_connections_and_skips_what_nobody_gets() -> None:
    hub = Hub()
    asked: list[str] = []
    hub.on_revocation = asked.append
    user = Recorder(user_id=SENDER)
    hub.add(user)
    hub.dispatch("1-0", entry(envelope("user.password_changed", {"userId": SENDER})))
    hub.dispatch("2-0", entry(envelope("user.password_changed", {"userId": RECIPIENT})))
    assert asked == [SENDER]  # nobody of RECIPIENT's is connected here
    # No admin connected: an audit-only event is not even decoded.
    assert hub.dispatch("3-0", {"id": "x", "type": "config.updated", "event": "{not json"}) == 0
    hub.add(Recorder("ADMIN"))
    assert hub.dispatch("4-0", {"id": "y", "type": "config.updated", "event": "{not json"}) == 0
    assert hub.dispatch("5-0", {"id": "z", "type": "config.updated", "event": "[1]"}) == 0
    assert hub.dispatch("6-0", {"type": "config.updated"}) == 0  # no id
    assert hub.empty.is_set() is False


# -- SSE -----------------------------------------------------------------------------------------
def scope(query: str = "", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"query_string": query.encode(), "headers": headers or [], "path": "/x"}


def test_sse_request_parsing() -> None:
    assert parse_request(scope()) == (None, None)
    types, last = parse_request(
        scope("types=payment:created,%20payment:updated", [(b"last-event-id", b"12-3")])
    )
    assert types == {"payment:created", "payment:updated"} and last == "12-3"
    assert parse_request(scope("lastEventId=5-0"))[1] == "5-0"
    for bad in ("types=payment:nope", "types=,", "lastEventId=abc", "lastEventId=1-x"):
        with pytest.raises(Refusal) as caught:
            parse_request(scope(bad))
        assert caught.value.status == 400 and caught.value.code == "VALIDATION_ERROR"


async def test_sse_replay_filters_for_the_callers_identity_and_types() -> None:
    own = envelope("payment.created", {"payment": payment()})
    other = envelope(
        "payment.created", {"payment": payment(senderId=str(uuid.uuid4()), recipientId=None)}
    )
    audit = envelope("config.updated", {"key": "k"})
    entries = [
        ("1-0", entry(own)),
        ("2-0", entry(other)),
        ("3-0", entry(audit)),
        ("4-0", entry(own)),
    ]
    mine = SseConnection("c", principal(user_id=SENDER), None, "s")
    frames = replayed_frames(mine, [*entries, ("5-0", {"id": "bad", "event": "{"})])
    assert frames == [frame("payment:created", map_event(own)[0].text, "1-0")]  # dup skipped
    admin = SseConnection("a", principal("ADMIN"), frozenset({AUDIT_CREATED}), "s")
    assert [f.split("\n")[1] for f in replayed_frames(admin, entries)] == [
        f"event: {AUDIT_CREATED}"
    ] * 3


def test_stream_ids_compare_as_numbers() -> None:
    assert stream_id_key("10-0") > stream_id_key("9-5")
    assert stream_id_key("7") == (7, 0)
    for bad in ("", "a-1", "1-b"):
        with pytest.raises(ValueError):
            stream_id_key(bad)


def test_tokens_in_query_strings_are_redacted() -> None:
    assert redact("/ws?token=abc.def&x=1") == "/ws?token=[REDACTED]&x=1"
    assert redact('"WebSocket /ws?a=1&TOKEN=zzz" 401') == '"WebSocket /ws?a=1&TOKEN=[REDACTED]" 401'
    assert (
        redact("/api/events/stream?access_token=q") == "/api/events/stream?access_token=[REDACTED]"
    )
    assert redact("/ws?mytoken=x") == "/ws?mytoken=[REDACTED]"  # any *token* parameter


def test_events_tail_view_of_a_users_socket() -> None:
    view = socket_view(SENDER, "CUSTOMER")
    created = envelope("payment.created", {"payment": payment()})
    assert [json.loads(t)["payload"]["eventType"] for t in view(created)] == ["payment:created"]
    assert view(envelope("config.updated", {"key": "k"})) == []
    admin = socket_view(str(uuid.uuid4()), "ADMIN")
    assert len(admin(created)) == 2


def test_a_failed_transition_carries_its_reason_as_failure_reason() -> None:
    raw = envelope(
        "payment.status_changed",
        status_changed(newStatus="failed", reason="card declined", amount="5.00", currency="EUR"),
    )
    (updated,) = map_event(raw, audit=False)  # no admin listening: no audit message
    data = json.loads(updated.text)["payload"]["data"]
    assert data["failureReason"] == "card declined" and data["status"] == "failed"
    assert (data["amount"], data["currency"]) == ("5.00", "EUR")


def test_uvicorns_own_log_lines_lose_their_tokens() -> None:
    import logging

    from paysys.core.logging import RedactingFilter

    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/ws?token=eyJ.secret.sig"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "WebSocket /ws?token=[REDACTED]" [accepted]'
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "GET %s", ("/health",), None)
    RedactingFilter().filter(plain)
    assert plain.getMessage() == "GET /health" and plain.args == ("/health",)


async def test_a_resumed_stream_never_repeats_what_its_replay_covered() -> None:
    connection = SseConnection("c", principal(user_id=SENDER), None, "s")
    connection.after = (5, 0)
    for stream_id in ("4-0", "5-0", "6-0", "7-0"):  # the reader catching up after the replay
        connection.deliver(stream_id, "payment:created", "{}")
    assert [f.split("\n")[0] for f in connection.frames] == ["id: 6-0", "id: 7-0"]
    assert connection.after is None  # passed: no more comparisons
