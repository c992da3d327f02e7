"""Access and refresh tokens: issue, verify, and the per-process cache of verified tokens.

Access and refresh tokens are HS256 JWTs (algorithm pinned) with `type`, `iss`, `aud`, `exp`,
`jti`, `sub`; access tokens also carry `ver`, the user's token version when they were issued
(api-contracts §1.5). Pure CPU, no I/O: cheap enough for the gateway's hot path. Whether a
verified token was revoked since is `core.revocation`'s question (an integer comparison of
`ver` with the user's current version: no clocks of different hosts are ever compared).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from paysys.core.config import Settings
from paysys.core.errors import Unauthorized

ALGORITHM = "HS256"
ROLES = ("CUSTOMER", "VENDOR", "ADMIN")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as stated by a verified access token."""

    id: uuid.UUID
    email: str
    name: str
    role: str
    jti: str
    sid: str | None
    token_version: int  # the `ver` claim
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


Clock = Callable[[], int]
"""Epoch milliseconds. Injected where tests need another host's clock (`TokenCodec(clock=)`)."""


class TokenCodec:
    """Issue and verify tokens. Pure: no I/O, so it is cheap on the gateway's hot path.

    `clock` is this process's time for issuing (`iat`, `exp`) and for the auth service's other
    time-keeping (lockout); tests inject a skewed one."""

    def __init__(self, settings: Settings, clock: Clock = now_ms) -> None:
        self.settings = settings
        self.clock = clock
        self.access_ttl = int(settings.access_ttl.total_seconds())
        self.refresh_ttl = int(settings.refresh_ttl.total_seconds())

    def _claims(
        self,
        kind: str,
        sub: str,
        ttl: int,
        extra: dict[str, Any],
        issued_ms: int | None = None,
        jti: str | None = None,
    ) -> dict[str, Any]:
        issued_ms = self.clock() if issued_ms is None else issued_ms
        return {
            "sub": sub,
            "type": kind,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": issued_ms // 1000,
            "exp": issued_ms // 1000 + ttl,
            "jti": jti or str(uuid.uuid4()),
            **extra,
        }

    def issue_access(
        self,
        *,
        user_id: uuid.UUID,
        email: str,
        name: str,
        role: str,
        sid: str,
        token_version: int = 0,
        issued_ms: int | None = None,
        jti: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """`issued_ms`/`jti` make issuance deterministic (refresh grace replays the same pair);
        `token_version` is the user's current version (`ver`)."""
        sub = str(user_id)
        claims = self._claims(
            "access",
            sub,
            self.access_ttl,
            {
                "email": email,
                "name": name,
                "role": role,
                "sid": sid,
                "ver": token_version,
                "userId": sub,
            },
            issued_ms,
            jti,
        )
        token = jwt.encode(
            claims, self.settings.jwt_access_secret, ALGORITHM, headers={"typ": "JWT"}
        )
        return token, claims

    def issue_refresh(
        self,
        *,
        user_id: uuid.UUID,
        family: str,
        issued_ms: int | None = None,
        jti: str | None = None,
        ttl: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """`ttl` (seconds) shortens the token below `JWT_REFRESH_EXPIRY`: a session's absolute
        lifetime (`SESSION_MAX_AGE`) ends it sooner."""
        lifetime = self.refresh_ttl if ttl is None else max(0, min(ttl, self.refresh_ttl))
        claims = self._claims("refresh", str(user_id), lifetime, {"fam": family}, issued_ms, jti)
        token = jwt.encode(claims, self.settings.jwt_refresh_secret, ALGORITHM)
        return token, claims

    def _decode(self, token: str, secrets: tuple[str, ...], kind: str) -> dict[str, Any]:
        """Verify with the signing secret, then with each verify-only one (a rotation)."""
        for secret in secrets:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    audience=self.settings.jwt_audience,
                    issuer=self.settings.jwt_issuer,
                    # `iat` is required but not held against this host's clock: a token
                    # from an auth host whose clock runs ahead is valid here at once.
                    options={
                        "require": ["exp", "iat", "iss", "aud", "sub", "jti"],
                        "verify_iat": False,
                    },
                )
            except jwt.InvalidSignatureError:
                continue  # maybe signed with a previous secret
            except jwt.ExpiredSignatureError:
                raise Unauthorized("TOKEN_EXPIRED", "Token has expired") from None
            except jwt.PyJWTError:
                raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None
            if claims.get("type") != kind:
                raise Unauthorized("TOKEN_INVALID", "Token is invalid")
            return claims
        raise Unauthorized("TOKEN_INVALID", "Token is invalid")

    def decode_access(self, token: str) -> Principal:
        claims = self._decode(token, self.settings.access_secrets, "access")
        try:
            return Principal(
                id=uuid.UUID(claims["sub"]),
                email=str(claims["email"]),
                name=str(claims["name"]),
                role=str(claims["role"]),
                jti=str(claims["jti"]),
                sid=claims.get("sid"),
                token_version=_version(claims["ver"]),
                expires_at=int(claims["exp"]),
            )
        except (KeyError, ValueError, TypeError):
            # No `ver` (a token from before versions) or a malformed one: refresh to get one.
            raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None

    def decode_refresh(self, token: str) -> dict[str, Any]:
        claims = self._decode(token, self.settings.refresh_secrets, "refresh")
        if not isinstance(claims.get("fam"), str):
            raise Unauthorized("TOKEN_INVALID", "Token is invalid")
        return claims


def _version(value: object) -> int:
    if type(value) is not int or value < 0:  # bool is an int subclass, not a version
        raise ValueError("ver must be a non-negative integer")
    return value


def bearer_token(authorization: str | None) -> str:
    """`Authorization: Bearer <token>` → token; anything else → 401 UNAUTHORIZED."""
    if not authorization:
        raise Unauthorized("UNAUTHORIZED", "Missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("UNAUTHORIZED", "Authorization header must be 'Bearer <token>'")
    return token


def token_hash(token: str) -> str:
    """Refresh tokens are stored only as this hash (they carry 256+ bits, no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


class VerifiedTokens:
    """Access tokens already verified in this process, by the exact Authorization header, so a
    client's next requests skip the JWT signature check (the largest CPU cost of an
    authenticated request). The token's own expiry is checked on every hit; revocation is
    not cached (callers check it on every request). Bounded: cleared when full."""

    MAX_ENTRIES = 10_000

    def __init__(self, codec: TokenCodec) -> None:
        self.codec = codec
        self._cache: dict[str | bytes, Principal] = {}

    def principal(self, authorization: str | bytes | None) -> Principal:
        if authorization is not None:
            cached = self._cache.get(authorization)
            if cached is not None:
                if cached.expires_at > time.time():
                    return cached
                del self._cache[authorization]
        header = authorization
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        principal = self.codec.decode_access(bearer_token(header))
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        self._cache[authorization] = principal  # type: ignore[index]
        return principal
