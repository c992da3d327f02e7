"""Tokens and revocation, shared by every service and the gateway.

Access and refresh tokens are HS256 JWTs (algorithm pinned) with `typ`/`type`, `iss`, `aud`,
`exp`, `jti`, `sub`. Revocation is checked on every authenticated request with one Redis round
trip (MGET of the token's `jti` mark and the user's "not before" instant, in milliseconds so a
token issued in the same second after a password change stays valid). When Redis is down a
service falls back to the database (see `RevocationFallback`); the gateway then leaves the check
to the services, which always check again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from paysys.core.config import Settings
from paysys.core.errors import AppError, Forbidden, Unauthorized

ALGORITHM = "HS256"
ROLES = ("CUSTOMER", "VENDOR", "ADMIN")

REVOKED_JTI_KEY = "auth:revoked:jti:{}"
NOT_BEFORE_KEY = "auth:nbf:{}"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as stated by a verified access token."""

    id: uuid.UUID
    email: str
    name: str
    role: str
    jti: str
    sid: str | None
    issued_at_ms: int
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TokenCodec:
    """Issue and verify tokens. Pure: no I/O, so it is cheap on the gateway's hot path."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.access_ttl = int(settings.access_ttl.total_seconds())
        self.refresh_ttl = int(settings.refresh_ttl.total_seconds())

    def _claims(self, kind: str, sub: str, ttl: int, extra: dict[str, Any]) -> dict[str, Any]:
        issued_ms = now_ms()
        return {
            "sub": sub,
            "type": kind,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": issued_ms // 1000,
            "iatMs": issued_ms,
            "exp": issued_ms // 1000 + ttl,
            "jti": str(uuid.uuid4()),
            **extra,
        }

    def issue_access(
        self, *, user_id: uuid.UUID, email: str, name: str, role: str, sid: str
    ) -> tuple[str, dict[str, Any]]:
        sub = str(user_id)
        claims = self._claims(
            "access",
            sub,
            self.access_ttl,
            {"email": email, "name": name, "role": role, "sid": sid, "userId": sub},
        )
        token = jwt.encode(
            claims, self.settings.jwt_access_secret, ALGORITHM, headers={"typ": "JWT"}
        )
        return token, claims

    def issue_refresh(self, *, user_id: uuid.UUID, family: str) -> tuple[str, dict[str, Any]]:
        claims = self._claims("refresh", str(user_id), self.refresh_ttl, {"fam": family})
        token = jwt.encode(claims, self.settings.jwt_refresh_secret, ALGORITHM)
        return token, claims

    def _decode(self, token: str, secret: str, kind: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("TOKEN_EXPIRED", "Token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None
        if claims.get("type") != kind:
            raise Unauthorized("TOKEN_INVALID", "Token is invalid")
        return claims

    def decode_access(self, token: str) -> Principal:
        claims = self._decode(token, self.settings.jwt_access_secret, "access")
        try:
            return Principal(
                id=uuid.UUID(claims["sub"]),
                email=str(claims["email"]),
                name=str(claims["name"]),
                role=str(claims["role"]),
                jti=str(claims["jti"]),
                sid=claims.get("sid"),
                issued_at_ms=int(claims.get("iatMs", int(claims["iat"]) * 1000)),
                expires_at=int(claims["exp"]),
            )
        except (KeyError, ValueError, TypeError):
            raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None

    def decode_refresh(self, token: str) -> dict[str, Any]:
        claims = self._decode(token, self.settings.jwt_refresh_secret, "refresh")
        if not isinstance(claims.get("fam"), str):
            raise Unauthorized("TOKEN_INVALID", "Token is invalid")
        return claims


def bearer_token(authorization: str | None) -> str:
    """`Authorization: Bearer <token>` → token; anything else → 401 UNAUTHORIZED."""
    if not authorization:
        raise Unauthorized("UNAUTHORIZED", "Missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("UNAUTHORIZED", "Authorization header must be 'Bearer <token>'")
    return token


# --- revocation -------------------------------------------------------------------------

# Called when Redis cannot answer: (principal) -> True when revoked. Installed by services that
# have the database (auth's session and user tables); None means "cannot tell here".
RevocationFallback = Callable[[Request, Principal], Awaitable[bool]]


async def revoke_token(redis: Redis, jti: str, expires_at: int) -> None:
    ttl = max(1, expires_at - int(time.time()) + 1)
    await redis.set(REVOKED_JTI_KEY.format(jti), "1", ex=ttl)


async def revoke_user_tokens_before(redis: Redis, user_id: uuid.UUID, at_ms: int, ttl: int) -> None:
    """Every token of this user issued before `at_ms` stops working (kept while any could live)."""
    await redis.set(NOT_BEFORE_KEY.format(user_id), str(at_ms), ex=ttl)


async def is_revoked(redis: Redis, principal: Principal) -> bool:
    """One round trip. Raises RedisError when Redis is unreachable (the caller decides)."""
    jti_mark, not_before = await redis.mget(
        REVOKED_JTI_KEY.format(principal.jti), NOT_BEFORE_KEY.format(principal.id)
    )
    if jti_mark is not None:
        return True
    return not_before is not None and principal.issued_at_ms < int(not_before)


def get_codec(request: Request) -> TokenCodec:
    codec = getattr(request.app.state, "token_codec", None)
    if codec is None:
        codec = TokenCodec(request.app.state.settings)
        request.app.state.token_codec = codec
    return codec


async def authenticate(request: Request) -> Principal:
    principal = get_codec(request).decode_access(bearer_token(request.headers.get("authorization")))
    try:
        revoked = await is_revoked(request.app.state.redis, principal)
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
