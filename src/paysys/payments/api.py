"""HTTP routes of the payments service (parse, authorise, call the service layer, shape)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError as PydanticValidationError

from paysys.core import jsonbody
from paysys.core.envelope import ok, page_of
from paysys.core.errors import ValidationFailed
from paysys.core.http import parse_uuid
from paysys.core.querydates import DateRange, parse_end, parse_start
from paysys.core.routing import JsonBodyRoute, path_parameter, plain_route
from paysys.core.schemas import UuidPath
from paysys.core.security import CurrentUser, authenticate, require_role
from paysys.core.tokens import Principal
from paysys.payments import service, webhooks
from paysys.payments.db import connect, dumps
from paysys.payments.limits import AmountLimits
from paysys.payments.schemas import (
    CREATE_RULES,
    CancelInput,
    CreateInput,
    PaymentListQuery,
    RecipientsQuery,
    ReportQuery,
    StatusInput,
    WebhookInput,
    parse_create,
    validation_failed,
)

router = APIRouter(prefix="/api/payments", tags=["payments"], route_class=JsonBodyRoute)

ReportViewer = Annotated[Principal, Depends(require_role("VENDOR", "ADMIN"))]
REPORT_DEFAULT_DAYS = 30
MAX_IDEMPOTENCY_KEY = 255


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        dumps(ok(data)).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _engine(request: Request) -> Any:
    return request.app.state.runtime.engine


def _limits(request: Request) -> AmountLimits:
    limits: AmountLimits | None = getattr(request.app.state, "payment_limits", None)
    if limits is None:
        limits = AmountLimits()
        request.app.state.payment_limits = limits
    return limits


_CREATE_SCHEMA = CreateInput.model_json_schema(by_alias=True)


VALIDATION_RESPONSE = {400: {"description": "VALIDATION_ERROR or INVALID_JSON"}}
IDEMPOTENCY_KEY_DOC = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-255 characters",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
}
PAYMENT_ID_DOC = path_parameter("payment_id", "The payment's id", format="uuid")

# The hot paths (create, list, get) are plain routes (core.routing): no per-request dependency
# solving; each endpoint authenticates and parses for itself.


@plain_route(
    router,
    "",
    "POST",
    status_code=201,
    summary="Create a payment (idempotent with Idempotency-Key)",
    description=CREATE_RULES
    + " With `Idempotency-Key`: a repeat with the same body within 24 h replays the first "
    "answer (`Idempotent-Replayed: true`); a different body → 422 IDEMPOTENCY_KEY_REUSED; "
    "while the first runs → 409 IDEMPOTENCY_IN_PROGRESS.",
    openapi_extra={
        "parameters": [IDEMPOTENCY_KEY_DOC],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _CREATE_SCHEMA}},
        },
    },
    responses={
        201: {"description": "The payment (`Idempotent-Replayed: true` on a replay)"},
        **VALIDATION_RESPONSE,
        409: {"description": "IDEMPOTENCY_IN_PROGRESS"},
        422: {"description": "IDEMPOTENCY_KEY_REUSED"},
    },
)
async def create_payment(request: Request) -> Response:
    principal = await authenticate(request)
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise ValidationFailed("Idempotency-Key", "must be 1-255 characters")
    body = jsonbody.read_json(await request.body(), exact=True)
    data = parse_create(body)
    settings = request.app.state.settings
    limits = await _limits(request).get(request.app.state.sessionmaker)
    async with connect(_engine(request)) as conn:
        created = await service.create_payment(
            conn,
            principal,
            data,
            idempotency_key=idempotency_key,
            request_fingerprint=service.fingerprint(body) if idempotency_key else "",
            wait_ms=settings.idempotency_wait_ms,
            limits=limits,
        )
    headers = {"Idempotent-Replayed": "true"} if created.replayed else None
    return Response(
        created.body, status_code=created.status, media_type="application/json", headers=headers
    )


@plain_route(
    router,
    "",
    "GET",
    query=PaymentListQuery,
    summary="List visible payments (filters, sorts, pagination)",
    responses=VALIDATION_RESPONSE,
)
async def list_payments(request: Request) -> Response:
    principal = await authenticate(request)
    query = PaymentListQuery.parse(request.query_params).to_list_query()
    async with connect(_engine(request)) as conn:
        items, total = await service.list_payments(conn, query, principal)
    return json_response(
        page_of("payments", items, page=query.page, limit=query.limit, total=total)
    )


@router.get(
    "/recipients",
    summary="Recipient lookup (a bare array, at most 100)",
    description="Active CUSTOMER and VENDOR accounts other than the caller, sorted by name; "
    "ADMIN accounts are never listed.",
    openapi_extra={"parameters": RecipientsQuery.openapi_parameters()},
)
async def recipients(request: Request, principal: CurrentUser) -> Response:
    query = RecipientsQuery.parse(request.query_params)
    async with connect(_engine(request)) as conn:
        items = await service.recipients(conn, principal, query.q or None, query.limit)
    return json_response(items)


@router.get(
    "/reports",
    summary="Report per status, type and currency (VENDOR, ADMIN)",
    openapi_extra={"parameters": ReportQuery.openapi_parameters()},
)
async def reports(request: Request, principal: ReportViewer) -> Response:
    query = ReportQuery.parse(request.query_params)
    (start, start_field), (end, end_field) = query.bounds()
    upper = parse_end(end, end_field) if end else datetime.now(UTC)
    lower = (
        parse_start(start, start_field) if start else upper - timedelta(days=REPORT_DEFAULT_DAYS)
    )
    if lower >= upper:
        raise ValidationFailed(start_field, f"must not be after {end_field}")
    async with connect(_engine(request)) as conn:
        data = await service.report(conn, principal, DateRange(lower, upper), query.currency)
    return json_response(data)


WEBHOOK_DOC = {
    "security": [],
    "parameters": [
        {
            "name": webhooks.HEADER,
            "in": "header",
            "required": True,
            "description": '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with '
            "PSP_WEBHOOK_SECRET>`",
            "schema": {
                "type": "string",
                "pattern": r"^t=[0-9]{1,12},v1=[0-9a-f]{64}$",
                "maxLength": 200,
            },
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WebhookInput.model_json_schema(by_alias=True)}},
    },
}


@router.post(
    "/webhooks/psp",
    summary="PSP webhook (PSP-Signature; no bearer token)",
    description="Rules JSON Schema cannot state (api-contracts §10): the signature must be the "
    "HMAC of this body with the shared secret and `t` within 300 s of now, else 400 "
    "INVALID_SIGNATURE; the same `eventId` twice changes nothing the second time; the status "
    "change follows the state machine (else 409 INVALID_STATUS_TRANSITION); an unknown payment "
    "is 404 PAYMENT_NOT_FOUND.",
    openapi_extra=WEBHOOK_DOC,
)
async def psp_webhook(request: Request) -> Response:
    raw = await request.body()
    webhooks.verify(
        raw, request.headers.get(webhooks.HEADER), request.app.state.settings.psp_webhook_secret
    )
    body = jsonbody.read_json(raw)
    try:
        event = WebhookInput.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_failed(exc) from None
    async with connect(_engine(request)) as conn:
        await service.apply_psp_event(
            conn,
            event_id=event.eventId,
            payment_id=event.paymentId,
            status=event.status,
            psp_transaction_id=event.pspTransactionId or None,
            failure_reason=event.failureReason or None,
        )
    return json_response({"received": True})


@plain_route(
    router,
    "/{payment_id}",
    "GET",
    summary="A payment with its history (oldest first)",
    openapi_extra={"parameters": [PAYMENT_ID_DOC]},
)
async def get_payment(request: Request) -> Response:
    principal = await authenticate(request)
    pid = parse_uuid(request.path_params["payment_id"], "PAYMENT_NOT_FOUND", "Payment not found")
    async with connect(_engine(request)) as conn:
        data = await service.get_payment(conn, principal, pid)
    return json_response(data)


@router.patch("/{payment_id}/status", summary="Change a payment's status (state machine)")
async def change_status(
    payment_id: UuidPath, body: StatusInput, request: Request, principal: CurrentUser
) -> Response:
    pid = parse_uuid(payment_id, "PAYMENT_NOT_FOUND", "Payment not found")
    async with connect(_engine(request)) as conn:
        data = await service.change_status(conn, principal, pid, body.status, body.reason)
    return json_response(data)


@router.post("/{payment_id}/cancel", summary="Cancel a pending payment (sender or ADMIN)")
async def cancel(
    payment_id: UuidPath,
    request: Request,
    principal: CurrentUser,
    body: CancelInput | None = None,
) -> Response:
    pid = parse_uuid(payment_id, "PAYMENT_NOT_FOUND", "Payment not found")
    reason = body.reason if body is not None else None
    async with connect(_engine(request)) as conn:
        data = await service.change_status(conn, principal, pid, "cancelled", reason)
    return json_response(data)
