"""HTTP routes of the profile service (parse, authorise, call the service layer, shape)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security import HTTPBearer

from paysys.core.db import SessionDep
from paysys.core.envelope import ok
from paysys.core.errors import NotFound
from paysys.core.http import parse_uuid
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


# --- the public avatar image ------------------------------------------------------------------

# No bearer scheme: an `<img>` cannot send a token (api-contracts §2 and §6).
public_router = APIRouter(prefix="/api/profile", tags=["profile"], route_class=JsonBodyRoute)

AVATAR_CACHE = "public, max-age=86400"
_AVATAR_HEADERS = {
    "ETag": {
        "description": "Quoted content hash (also the `v` of `avatarUrl`)",
        "schema": {"type": "string"},
    },
    "Cache-Control": {"description": AVATAR_CACHE, "schema": {"type": "string"}},
}


# One answer for a malformed id, an unknown or deleted user and a user without an upload: the
# public route does not tell which ids exist.
AVATAR_NOT_FOUND = ("NOT_FOUND", "Avatar not found")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against a list of entity tags, or `*`."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    quoted = f'"{etag}"'
    return any(tag.strip().removeprefix("W/") == quoted for tag in if_none_match.split(","))


@public_router.get(
    "/avatar/{userId}",
    summary="A user's uploaded avatar (public: no token)",
    operation_id="get_avatar",
    description=(
        "The image stored by an avatar upload (`avatarUrl` as a data URL), re-encoded to WebP "
        "of at most 512x512 without metadata. Public, cacheable for a day, versioned by "
        "`avatarUrl`'s `?v=`; served with `Content-Security-Policy: default-src 'none'` and "
        "`X-Content-Type-Options: nosniff`."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The avatar",
            "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}},
            "headers": _AVATAR_HEADERS,
        },
        304: {"description": "`If-None-Match` matches the ETag", "headers": _AVATAR_HEADERS},
        404: {
            "model": ErrorEnvelope,
            "description": "NOT_FOUND: no avatar uploaded, unknown or deleted user, or an id "
            "that is not a UUID",
        },
        503: _ERRORS[503],
        "default": _ERRORS["default"],
    },
)
async def get_avatar(
    request: Request,
    session: SessionDep,
    user_id: Annotated[str, Path(alias="userId", description="The user's id (a UUID)")],
) -> Response:
    found = await service.find_avatar(session, parse_uuid(user_id, *AVATAR_NOT_FOUND))
    if found is None:
        raise NotFound(*AVATAR_NOT_FOUND)
    image, etag = found
    headers = {"ETag": f'"{etag}"', "Cache-Control": AVATAR_CACHE}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(content=image, media_type="image/webp", headers=headers)
