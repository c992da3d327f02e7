"""HTTP routes of the profile service (parse, authorise, call the service layer, shape)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer

from paysys.core.db import SessionDep
from paysys.core.envelope import ok
from paysys.core.routing import JsonBodyRoute
from paysys.core.schemas import ErrorEnvelope
from paysys.core.security import CurrentUser
from paysys.profile import service
from paysys.profile.schemas import (
    PreferencesEnvelope,
    PreferencesUpdate,
    ProfileEnvelope,
    ProfileUpdate,
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "Missing, invalid, expired or revoked token"},
    404: {"model": ErrorEnvelope, "description": "USER_NOT_FOUND: the account no longer exists"},
    503: {"model": ErrorEnvelope, "description": "A dependency is unavailable"},
    "default": {"model": ErrorEnvelope, "description": "Any other error, same envelope"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "VALIDATION_ERROR or INVALID_JSON"},
    **_ERRORS,
    413: {
        "model": ErrorEnvelope,
        "description": "Body over 1 MiB (8 MiB for PUT/PATCH /api/profile: avatar data URLs)",
    },
}

# HTTPBearer(auto_error=False) only documents the scheme; `CurrentUser` does the checking.
router = APIRouter(
    prefix="/api/profile",
    tags=["profile"],
    dependencies=[Depends(HTTPBearer(auto_error=False, scheme_name="bearerAuth"))],
    route_class=JsonBodyRoute,
)


@router.get(
    "",
    summary="The caller's profile (created on first read if needed)",
    response_model=None,
    responses={200: {"model": ProfileEnvelope}, **_ERRORS},
)
async def get_profile(request: Request, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return ok(await service.get_profile(session, request.app.state.redis, user.id))


async def _update_profile(
    request: Request, user: CurrentUser, session: SessionDep, body: ProfileUpdate
) -> dict[str, Any]:
    return ok(await service.update_profile(session, request.app.state.redis, user.id, body))


router.add_api_route(
    "",
    _update_profile,
    methods=["PUT"],
    summary="Update the caller's profile (absent: unchanged; null or empty: cleared)",
    operation_id="put_profile",
    response_model=None,
    responses={200: {"model": ProfileEnvelope}, **_WRITE_ERRORS},
)
router.add_api_route(
    "",
    _update_profile,
    methods=["PATCH"],
    summary="Update the caller's profile (same as PUT)",
    operation_id="patch_profile",
    response_model=None,
    responses={200: {"model": ProfileEnvelope}, **_WRITE_ERRORS},
)


@router.get(
    "/preferences",
    summary="The caller's preferences (defaults filled in)",
    response_model=None,
    responses={200: {"model": PreferencesEnvelope}, **_ERRORS},
)
async def get_preferences(
    request: Request, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    return ok(await service.get_preferences(session, request.app.state.redis, user.id))


async def _update_preferences(
    request: Request, user: CurrentUser, session: SessionDep, body: PreferencesUpdate
) -> dict[str, Any]:
    return ok(await service.update_preferences(session, request.app.state.redis, user.id, body))


router.add_api_route(
    "/preferences",
    _update_preferences,
    methods=["PUT"],
    summary="Update preferences (merged deeply; null restores a default)",
    operation_id="put_preferences",
    response_model=None,
    responses={200: {"model": PreferencesEnvelope}, **_WRITE_ERRORS},
)
router.add_api_route(
    "/preferences",
    _update_preferences,
    methods=["PATCH"],
    summary="Update preferences (same as PUT)",
    operation_id="patch_preferences",
    response_model=None,
    responses={200: {"model": PreferencesEnvelope}, **_WRITE_ERRORS},
)
