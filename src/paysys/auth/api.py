"""HTTP routes of the auth service (parse, authorise, call the service layer, shape)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.security import HTTPBearer

from paysys.auth import service
from paysys.auth.schemas import (
    AuthResponse,
    LoginRequest,
    LogoutRequest,
    MessageResponse,
    PasswordChangeRequest,
    RefreshRequest,
    RegisterRequest,
    SessionsResponse,
    TokenPairResponse,
    UserResponse,
)
from paysys.auth.throttle import Throttles
from paysys.core.clientip import client_ip
from paysys.core.db import SessionDep
from paysys.core.envelope import ok
from paysys.core.http import parse_uuid
from paysys.core.openapi import PUBLIC
from paysys.core.passwords import PASSWORD_RULES
from paysys.core.routing import JsonBodyRoute
from paysys.core.schemas import ErrorEnvelope, UuidPath
from paysys.core.security import CurrentUser, get_codec

_ERRORS: dict[int | str, dict[str, Any]] = {
    "default": {"model": ErrorEnvelope, "description": "Any error, in the error envelope"},
}
router = APIRouter(prefix="/api/auth", tags=["auth"], responses=_ERRORS, route_class=JsonBodyRoute)
# Only documents the scheme on Bearer routes; `CurrentUser` does the checking.
_BEARER = [Depends(HTTPBearer(auto_error=False, scheme_name="bearerAuth"))]


def client_info(request: Request) -> service.ClientInfo:
    """The caller's IP (`core.clientip`: the right-most untrusted `X-Forwarded-For` hop when
    the peer is in `TRUSTED_PROXIES`, e.g. the gateway) and user agent."""
    return service.ClientInfo.of(client_ip(request), request.headers.get("user-agent"))


def throttles(request: Request) -> Throttles:
    """The process's lockout and password-change quota (made at first use, with the codec's
    clock)."""
    state = request.app.state
    made: Throttles | None = getattr(state, "throttles", None)
    if made is None:
        made = state.throttles = Throttles.from_settings(
            state.redis, state.sessionmaker, state.settings, get_codec(request).clock
        )
    return made


@router.post(
    "/register",
    status_code=201,
    summary="Create an account (CUSTOMER or VENDOR) and sign in",
    response_description="`{user, accessToken, refreshToken, expiresIn}`",
    description=PASSWORD_RULES,
    responses={201: {"model": AuthResponse}},
    openapi_extra=PUBLIC,
)
async def register(body: RegisterRequest, request: Request, session: SessionDep) -> Any:
    data = await service.register(
        session,
        get_codec(request),
        email=body.email,
        password=body.password,
        name=body.name,
        role=body.role,
        client=client_info(request),
    )
    return ok(data)


@router.post(
    "/login",
    summary="Sign in",
    description="Unknown email, wrong password and deactivated account all answer 401 "
    "INVALID_CREDENTIALS; repeated failures lock the account for the caller's address (423).",
    responses={200: {"model": AuthResponse}},
    openapi_extra=PUBLIC,
)
async def login(body: LoginRequest, request: Request, session: SessionDep) -> Any:
    data = await service.login(
        session,
        get_codec(request),
        throttles(request),
        email=body.email,
        password=body.password,
        client=client_info(request),
    )
    return ok(data)


@router.post(
    "/refresh",
    summary="Rotate a refresh token",
    responses={200: {"model": TokenPairResponse}},
    openapi_extra=PUBLIC,
)
async def refresh(body: RefreshRequest, request: Request, session: SessionDep) -> Any:
    data = await service.refresh(
        session,
        request.app.state.redis,
        get_codec(request),
        token=body.refresh_token,
        client=client_info(request),
    )
    return ok(data)


@router.post(
    "/logout",
    dependencies=_BEARER,
    summary="End a session or all",
    responses={200: {"model": MessageResponse}},
)
async def logout(
    principal: CurrentUser,
    request: Request,
    session: SessionDep,
    body: Annotated[LogoutRequest | None, Body()] = None,
) -> Any:
    body = body or LogoutRequest()
    await service.logout(
        session,
        request.app.state.redis,
        get_codec(request),
        principal,
        refresh_token=body.refresh_token,
        all_sessions=body.all_sessions,
    )
    message = "Logged out of all sessions" if body.all_sessions else "Logged out"
    return ok({"message": message})


@router.get(
    "/me",
    dependencies=_BEARER,
    summary="The signed-in user",
    responses={200: {"model": UserResponse}},
)
async def me(principal: CurrentUser, session: SessionDep) -> Any:
    return ok(await service.me(session, principal))


@router.post(
    "/password",
    dependencies=_BEARER,
    summary="Change the password (ends every session; limited per user, then 429)",
    description=PASSWORD_RULES + " `newPassword` must differ from `currentPassword`; a wrong "
    "`currentPassword` is 401 INVALID_CREDENTIALS.",
    responses={200: {"model": MessageResponse}},
)
@router.put(
    "/password",
    dependencies=_BEARER,
    summary="Change the password (ends every session; limited per user, then 429)",
    description=PASSWORD_RULES + " `newPassword` must differ from `currentPassword`; a wrong "
    "`currentPassword` is 401 INVALID_CREDENTIALS.",
    responses={200: {"model": MessageResponse}},
)
async def change_password(
    body: PasswordChangeRequest, principal: CurrentUser, request: Request, session: SessionDep
) -> Any:
    await service.change_password(
        session,
        request.app.state.redis,
        throttles(request),
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
        client=client_info(request),
    )
    return ok({"message": "Password changed; please sign in again"})


@router.get(
    "/sessions",
    dependencies=_BEARER,
    summary="Active sessions",
    responses={200: {"model": SessionsResponse}},
)
async def sessions(principal: CurrentUser, request: Request, session: SessionDep) -> Any:
    return ok(await service.list_sessions(session, get_codec(request), principal))


@router.delete(
    "/sessions/{session_id}",
    dependencies=_BEARER,
    status_code=204,
    summary="End one session",
    response_class=Response,
)
async def revoke_session(
    session_id: UuidPath, principal: CurrentUser, request: Request, session: SessionDep
) -> Response:
    sid = parse_uuid(session_id, "SESSION_NOT_FOUND", "Session not found")
    await service.revoke_one_session(
        session, request.app.state.redis, get_codec(request), principal, sid
    )
    return Response(status_code=204)
