"""HTTP routes of the admin service (parse, authorise, call the service layer, shape).

Every route requires a Bearer token with role ADMIN (`AdminUser`): 401 without a valid token,
403 `FORBIDDEN` for any other role.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from paysys.admin import audit, service
from paysys.admin.queries import AuditLogQuery, StatsQuery, UserDetailQuery, UserListQuery
from paysys.admin.schemas import (
    AuditActionsResponse,
    AuditLogListResponse,
    CreateUserBody,
    RoleBody,
    StatusBody,
    UpdateUserBody,
)
from paysys.core import jsonbody, sysconfig
from paysys.core.db import SessionDep
from paysys.core.envelope import ok, page_of
from paysys.core.errors import ValidationFailed
from paysys.core.http import parse_uuid
from paysys.core.passwords import PASSWORD_RULES
from paysys.core.routing import JsonBodyRoute
from paysys.core.schemas import UuidPath
from paysys.core.security import AdminUser
from paysys.payments import service as payments_service
from paysys.payments.db import connect, dumps
from paysys.payments.schemas import PaymentListQuery

router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=JsonBodyRoute)


def _user_id(value: str) -> uuid.UUID:
    return parse_uuid(value, "USER_NOT_FOUND", "User not found")


# --- users (reads) ------------------------------------------------------------------------------


@router.get(
    "/users",
    summary="List, search, filter and sort users",
    openapi_extra={"parameters": UserListQuery.openapi_parameters()},
)
async def list_users(request: Request, admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    query = UserListQuery.parse(request.query_params)
    filters = service.UserFilters(
        role=query.role,
        is_active=query.active,
        search=query.search or None,
        include_deleted=query.with_deleted,
    )
    users, total = await service.list_users(
        session, filters, page=query.page, limit=query.limit, sort=query.sort, order=query.order
    )
    return ok(page_of("users", users, page=query.page, limit=query.limit, total=total))


@router.get(
    "/users/{user_id}",
    summary="A user with profile and payment counts",
    description="A soft-deleted user answers 404 USER_NOT_FOUND unless `includeDeleted=true`.",
    openapi_extra={"parameters": UserDetailQuery.openapi_parameters()},
)
async def get_user(
    user_id: UuidPath, request: Request, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    query = UserDetailQuery.parse(request.query_params)
    detail = await service.user_detail(
        session, _user_id(user_id), include_deleted=query.with_deleted
    )
    return ok(detail)


# --- users (writes: paysys.users.accounts, the code path auth uses) -----------------------------


@router.post(
    "/users",
    status_code=201,
    summary="Create a user (same policy as registration)",
    description=PASSWORD_RULES,
)
async def create_user(
    body: CreateUserBody, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    return ok(await service.create_user(session, body, actor_id=admin.id))


async def _update_user(
    user_id: UuidPath, body: UpdateUserBody, admin: AdminUser, session: SessionDep, request: Request
) -> dict[str, Any]:
    user = await service.update_user(
        session,
        request.app.state.redis,
        _user_id(user_id),
        actor_id=admin.id,
        name=body.name,
        email=body.email,
    )
    return ok(user)


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
    user_id: UuidPath, body: RoleBody, admin: AdminUser, session: SessionDep, request: Request
) -> dict[str, Any]:
    user = await service.change_role(
        session, request.app.state.redis, _user_id(user_id), body.role, actor_id=admin.id
    )
    return ok(user)


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
    user_id: UuidPath, body: StatusBody, admin: AdminUser, session: SessionDep, request: Request
) -> dict[str, Any]:
    user = await service.set_status(
        session,
        request.app.state.redis,
        _user_id(user_id),
        body.is_active,
        actor_id=admin.id,
        reason=body.reason,
    )
    return ok(user)


@router.delete(
    "/users/{user_id}", status_code=204, response_class=Response, summary="Soft-delete a user"
)
async def delete_user(
    user_id: UuidPath, admin: AdminUser, session: SessionDep, request: Request
) -> Response:
    await service.delete_user(
        session, request.app.state.redis, _user_id(user_id), actor_id=admin.id
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


@router.get(
    "/audit-logs",
    summary="The audit trail (built from events)",
    description="The rows are under `auditLogs` and, for the reference admin UI, also under "
    "`data`; each row also carries `userId`, `userName`, `userEmail`, `ipAddress`, "
    "`timestamp` (api-contracts §5). `userId` filters like its alias `actorId`.",
    response_model=None,
    responses={200: {"model": AuditLogListResponse}},
    openapi_extra={"parameters": AuditLogQuery.openapi_parameters()},
)
async def list_audit_logs(
    request: Request, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    query = AuditLogQuery.parse(request.query_params)
    action = query.action.upper() if query.action else None
    if action and action not in await service.audit_actions(session):
        raise ValidationFailed("action", "must be one of GET /api/admin/audit-logs/actions")
    period = query.dates()
    filters = audit.AuditFilters(
        action=action,
        actor_id=query.actor(),
        resource_type=query.resource_type.lower() if query.resource_type else None,
        resource_id=query.resource_id or None,
        start=period.start,
        end=period.end_exclusive,
    )
    page, limit = query.page, query.limit
    logs, total = await service.list_audit_logs(
        session, filters, page=page, limit=limit, sort=query.sort, order=query.order
    )
    listed = page_of("auditLogs", logs, page=page, limit=limit, total=total)
    # api-contracts §5 compatibility: the reference admin UI reads the rows from `data.data`.
    return ok({"auditLogs": logs, "data": logs, "pagination": listed["pagination"]})


@router.get(
    "/audit-logs/actions",
    summary="Every audit action (a lookup list: `data` is the array)",
    response_model=None,
    responses={200: {"model": AuditActionsResponse}},
)
async def audit_actions(admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    return ok(await service.audit_actions(session))


# --- stats --------------------------------------------------------------------------------------


@router.get(
    "/stats",
    summary="Users, payments and a daily series",
    openapi_extra={"parameters": StatsQuery.openapi_parameters()},
)
async def stats(request: Request, admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    query = StatsQuery.parse(request.query_params)
    return ok(await service.stats(session, query.days))


# --- system health ------------------------------------------------------------------------------


@router.get("/health", summary="Health of the whole system (always 200)")
async def health(request: Request, admin: AdminUser) -> dict[str, Any]:
    app = request.app
    return ok(
        await service.health(app.state.runtime, app.state.settings, app.state.health.started_at)
    )


# --- configuration ------------------------------------------------------------------------------


@router.get("/config", summary="Every configuration key with its value")
async def get_config(admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    return ok({"config": await service.config_list(session)})


# Rules JSON Schema cannot express (api-contracts §10), named in the operations' descriptions.
_CONFIG_MAP_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": sysconfig.config_map_schema(),
                "example": {
                    "payment.minAmount": "1.00",
                    "payment.maxAmount": "50000.00",
                    "payment.maxAmount.KWD": "15000.000",
                },
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
                    "properties": {"value": sysconfig.any_value_schema()},
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
    description=sysconfig.CONFIG_RULES,
    openapi_extra=_CONFIG_MAP_DOC,
)
async def put_config(request: Request, admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    body = jsonbody.read_json(await request.body(), exact=True)
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be an object of configuration keys and values")
    entries = await service.update_config(session, body, admin.id)
    return ok({"config": entries})


ConfigKeyPath = Annotated[str, Path(json_schema_extra=sysconfig.key_schema())]


@router.get("/config/{key}", summary="One configuration key")
async def get_config_key(
    key: ConfigKeyPath, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    return ok(await service.config_entry(session, key))


@router.put(
    "/config/{key}",
    summary="Set one configuration key",
    description=sysconfig.CONFIG_RULES,
    openapi_extra=_CONFIG_VALUE_DOC,
)
async def put_config_key(
    key: ConfigKeyPath, request: Request, admin: AdminUser, session: SessionDep
) -> dict[str, Any]:
    service.require_config_key(key)
    body = jsonbody.read_json(await request.body(), exact=True)
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be an object with a value")
    unknown = sorted(set(body) - {"value"})
    if unknown:
        raise ValidationFailed(unknown[0], "unknown field")
    if "value" not in body:
        raise ValidationFailed("value", "is required")
    entries = await service.update_config(session, {key: body["value"]}, admin.id)
    return ok(entries[0])
