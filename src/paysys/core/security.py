"""FastAPI dependencies for the caller's identity: `CurrentUser`, `AdminUser`, `require_role`.

`authenticate` verifies the bearer token (`core.tokens`, cached per process) and checks it was
not revoked (`core.revocation`: Redis, or the database while Redis is down).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from redis.exceptions import RedisError

from paysys.core.errors import AppError, Forbidden, Unauthorized
from paysys.core.revocation import RevocationFallback, is_revoked
from paysys.core.tokens import Principal, TokenCodec, VerifiedTokens


def get_codec(request: Request) -> TokenCodec:
    return verified_tokens(request).codec


def verified_tokens(request: Request) -> VerifiedTokens:
    tokens: VerifiedTokens | None = getattr(request.app.state, "verified_tokens", None)
    if tokens is None:
        tokens = VerifiedTokens(TokenCodec(request.app.state.settings))
        request.app.state.verified_tokens = tokens
    return tokens


async def authenticate(request: Request) -> Principal:
    principal = verified_tokens(request).principal(request.headers.get("authorization"))
    state = request.app.state
    try:
        revoked = await is_revoked(state.hot_redis, principal)
    except RedisError:
        fallback: RevocationFallback | None = getattr(
            request.app.state, "revocation_fallback", None
        )
        if fallback is None:
            raise AppError("SERVICE_UNAVAILABLE", "Cannot verify the token right now") from None
        revoked = await fallback(request, principal)
    if revoked:
        raise Unauthorized("TOKEN_INVALID", "Token has been revoked")
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(authenticate)]


def require_role(*roles: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(principal: CurrentUser) -> Principal:
        if principal.role not in roles:
            raise Forbidden("This action requires role " + " or ".join(roles))
        return principal

    return dependency


AdminUser = Annotated[Principal, Depends(require_role("ADMIN"))]
