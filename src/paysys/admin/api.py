"""HTTP routes of the admin service (parse, authorise, call the service layer, shape).

Every route requires a Bearer token with role ADMIN (`AdminUser`): 401 without a valid token,
403 `FORBIDDEN` for any other role.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from paysys.admin import audit, config_service, users_service
from paysys.admin.schemas import (
    AuditSort,
    CreateUserBody,
    Order,
    Role,
    RoleBody,
    StatusBody,
    UpdateUserBody,
    UserSort,
    parse_bool,
)
from paysys.admin.stats import system_stats
from paysys.admin.system_health import system_health
from paysys.auth import users as domain
from paysys.core import money
from paysys.core.db import SessionDep
from paysys.core.envelope import ok, page_of
from paysys.core.errors import AppError, ValidationFailed
from paysys.core.http import parse_uuid
from paysys.core.logging import get_logger
from paysys.core.querydates import parse_range
from paysys.core.security import AdminUser
from paysys.payments import service as payments_service
from paysys.payments.db import connect, dumps
from paysys.payments.schemas import PaymentListQuery

router = APIRouter(prefix="/api/admin", tags=["admin"])
log = get_logger("paysys.admin")
T = TypeVar("T")

Page = Annotated[int, Query(ge=1, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=100)]


def _user_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "USER_NOT_FOUND", "User not found")


# PostgreSQL aborts one of two transactions that lock the same admin rows in opposite order
# (e.g. two admins demoting each other at once): deadlock_detected / serialization_failure.
_RETRYABLE = {"40P01", "40001"}
_ATTEMPTS = 3


async def _write(session: AsyncSession, operation: Callable[[], Awaitable[T]]) -> T:
    """Run a user-domain write and commit; a deadlocked attempt is rolled back and redone
    (the retry re-reads everything, so guards see the winner's committed state)."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            result = await operation()
            await session.commit()
            return result
        except DBAPIError as exc:
            await session.rollback()
            if getattr(exc.orig, "sqlstate", None) not in _RETRYABLE or attempt == _ATTEMPTS:
                raise
            log.info("retrying admin write after a lock conflict", attempt=attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _known_params(request: Request, allowed: frozenset[str]) -> None:
    """Unknown query parameters → 400 (as in the payments list), never silently ignored."""
    for key in request.query_params:
        if key not in allowed:
            raise ValidationFailed(key, "unknown query parameter")


_USER_PARAMS = frozenset(
    {"page", "limit", "sort", "order", "role", "isActive", "search", "includeDeleted"}
)
_AUDIT_PARAMS = frozenset(
    {
        "page",
        "limit",
        "sort",
        "order",
        "action",
        "actorId",
        "resourceType",
        "resourceId",
        "startDate",
        "endDate",
    }
)


# --- users (reads) ------------------------------------------------------------------------------


@router.get("/users", summary="List, search, filter and sort users")
async def list_users(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    page: Page = 1,
    limit: Limit = 10,
    sort: UserSort = "createdAt",
    order: Order = "desc",
    role: Role | None = None,
    is_active: Annotated[str | None, Query(alias="isActive", max_length=5)] = None,
    search: Annotated[str | None, Query(max_length=254)] = None,
    include_deleted: Annotated[str | None, Query(alias="includeDeleted", max_length=5)] = None,
) -> dict[str, Any]:
    _known_params(request, _USER_PARAMS)
    users, total = await users_service.list_users(
        session,
        page=page,
        limit=limit,
        sort=sort,
        order=order,
        role=role,
        is_active=parse_bool("isActive", is_active),
        search=(search or "").strip() or None,
        include_deleted=bool(parse_bool("includeDeleted", include_deleted)),
    )
    return ok(page_of("users", users, page=page, limit=limit, total=total))


@router.get("/users/{user_id}", summary="A user with profile and payment counts")
async def get_user(user_id: str, admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    return ok(await users_service.user_detail(session, _user_id(user_id)))


# --- users (writes: the shared user domain of paysys.auth.users) ---------------------------------


@router.post("/users", status_code=201, summary="Create a user (same policy as registration)")
async def create_user(
    body: CreateUserBody, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    user = await domain.create_user(
        session,
        email=body.email,
        password=body.password,
        name=body.name,
        role=body.role,
        via="admin",
        actor_id=admin.id,
    )
    await session.commit()
    return ok(users_service.user_json(user))


async def _update_user(
    user_id: str, body: UpdateUserBody, admin: AdminUser, session: SessionDep, request: Request
) -> dict[str, Any]:
    target = _user_id(user_id)
    user = await _write(
        session,
        lambda: domain.update_user(
            session,
            request.app.state.redis,
            target,
            actor_id=admin.id,
            name=body.name,
            email=body.email,
        ),
    )
    return ok(users_service.user_json(user))


router.add_api_route(
    "/users/{user_id}", _update_user, methods=["PUT"], summary="Update a user's name or email"
)
router.add_api_route(
    "/users/{user_id}",
    _update_user,
    methods=["PATCH"],
    summary="Update a user's name or email",
    operation_id="patch_user",
)


async def _change_role(
    user_id: str, body: RoleBody, admin: AdminUser, session: SessionDep, request: Request
) -> dict[str, Any]:
    target = _user_id(user_id)
    user = await _write(
        session,
        lambda: domain.change_role(
            session, request.app.state.redis, target, body.role, actor_id=admin.id
        ),
    )
    return ok(users_service.user_json(user))


router.add_api_route(
    "/users/{user_id}/role", _change_role, methods=["PUT"], summary="Change a user's role"
)
router.add_api_route(
    "/users/{user_id}/role",
    _change_role,
    methods=["PATCH"],
    summary="Change a user's role",
    operation_id="patch_user_role",
)


@router.patch("/users/{user_id}/status", summary="Activate or deactivate a user")
async def set_status(
    user_id: str, body: StatusBody, admin: AdminUser, session: SessionDep, request: Request
) -> dict[str, Any]:
    target = _user_id(user_id)
    user = await _write(
        session,
        lambda: domain.set_active(
            session,
            request.app.state.redis,
            target,
            body.is_active,
            actor_id=admin.id,
            reason=body.reason,
        ),
    )
    return ok(users_service.user_json(user))


@router.delete(
    "/users/{user_id}", status_code=204, response_class=Response, summary="Soft-delete a user"
)
async def delete_user(
    user_id: str, admin: AdminUser, session: SessionDep, request: Request
) -> Response:
    target = _user_id(user_id)
    await _write(
        session,
        lambda: domain.delete_user(session, request.app.state.redis, target, actor_id=admin.id),
    )
    return Response(status_code=204)


# --- payments (the payments service's own list query, every user's payments) -----------------


@router.get(
    "/payments",
    summary="All payments (the filters, sorts and pagination of GET /api/payments)",
    openapi_extra={"parameters": PaymentListQuery.openapi_parameters()},
)
async def list_payments(request: Request, admin: AdminUser) -> Response:
    query = PaymentListQuery.parse(request.query_params).to_list_query()
    async with connect(request.app.state.runtime.engine) as conn:
        items, total = await payments_service.list_payments(conn, query, None)
    body = ok(page_of("payments", items, page=query.page, limit=query.limit, total=total))
    return Response(dumps(body).encode(), media_type="application/json")


# --- audit log ----------------------------------------------------------------------------------

_ACTION_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@router.get("/audit-logs", summary="The audit trail (built from events)")
async def list_audit_logs(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    page: Page = 1,
    limit: Limit = 10,
    sort: AuditSort = "createdAt",
    order: Order = "desc",
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor_id: Annotated[str | None, Query(alias="actorId", max_length=64)] = None,
    resource_type: Annotated[str | None, Query(alias="resourceType", max_length=32)] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId", max_length=255)] = None,
    start_date: Annotated[str | None, Query(alias="startDate", max_length=64)] = None,
    end_date: Annotated[str | None, Query(alias="endDate", max_length=64)] = None,
) -> dict[str, Any]:
    _known_params(request, _AUDIT_PARAMS)
    if action:
        action = action.strip().upper()
        if not _ACTION_RE.match(action) or action not in await audit.known_actions(session):
            raise ValidationFailed("action", "must be one of GET /api/admin/audit-logs/actions")
    actor = None
    if actor_id:
        try:
            actor = uuid.UUID(actor_id.strip())
        except ValueError:
            raise ValidationFailed("actorId", "must be a UUID") from None
    if resource_type:
        resource_type = resource_type.strip().lower()
        if resource_type not in audit.RESOURCE_TYPES:
            raise ValidationFailed(
                "resourceType", "must be one of " + ", ".join(audit.RESOURCE_TYPES)
            )
    period = parse_range(start_date, end_date)
    filters = audit.AuditFilters(
        action=action or None,
        actor_id=actor,
        resource_type=resource_type or None,
        resource_id=(resource_id or "").strip() or None,
        start=period.start,
        end=period.end_exclusive,
    )
    logs, total = await audit.list_audit_logs(
        session, filters, page=page, limit=limit, sort=sort, order=order
    )
    return ok(page_of("auditLogs", logs, page=page, limit=limit, total=total))


@router.get("/audit-logs/actions", summary="Every audit action")
async def audit_actions(admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    return ok({"actions": await audit.known_actions(session)})


# --- stats --------------------------------------------------------------------------------------


@router.get("/stats", summary="Users, payments and a daily series")
async def stats(
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> dict[str, Any]:
    _known_params(request, frozenset({"days"}))
    return ok(await system_stats(session, days))


# --- system health ------------------------------------------------------------------------------


@router.get("/health", summary="Health of the whole system (always 200)")
async def health(request: Request, admin: AdminUser) -> dict[str, Any]:
    app = request.app
    return ok(
        await system_health(app.state.runtime, app.state.settings, app.state.health.started_at)
    )


# --- configuration ------------------------------------------------------------------------------


@router.get("/config", summary="Every configuration key with its value")
async def get_config(admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    return ok({"config": await config_service.list_entries(session)})


async def _json_body(request: Request) -> Any:
    """The body parsed without floats (`paysys.core.money.loads`): amounts stay exact."""
    raw = await request.body()
    if not raw.strip():
        raise ValidationFailed("body", "is required")
    try:
        return money.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AppError("INVALID_JSON", "Request body is not valid JSON") from None


_CONFIG_MAP_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "configuration key → new value (all or nothing)",
                    "additionalProperties": True,
                },
                "example": {"payment.minAmount": "1.00", "payment.maxAmount": "50000.00"},
            }
        },
    }
}
_CONFIG_VALUE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["value"],
                    "properties": {"value": {}},
                    "additionalProperties": False,
                },
                "example": {"value": "50000.00"},
            }
        },
    }
}


@router.put(
    "/config",
    summary="Set several configuration keys at once (all or nothing)",
    openapi_extra=_CONFIG_MAP_DOC,
)
async def put_config(request: Request, admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be an object of configuration keys and values")
    entries = await config_service.update(session, body, admin.id)
    return ok({"config": entries})


@router.get("/config/{key}", summary="One configuration key")
async def get_config_key(key: str, admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    return ok(await config_service.get_entry(session, key))


@router.put("/config/{key}", summary="Set one configuration key", openapi_extra=_CONFIG_VALUE_DOC)
async def put_config_key(
    key: str, request: Request, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    config_service.require_key(key)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be an object with a value")
    unknown = sorted(set(body) - {"value"})
    if unknown:
        raise ValidationFailed(unknown[0], "unknown field")
    if "value" not in body:
        raise ValidationFailed("value", "is required")
    entries = await config_service.update(session, {key: body["value"]}, admin.id)
    return ok(entries[0])
