"""Tokens and revocation, shared by every service and the gateway.

Access and refresh tokens are HS256 JWTs (algorithm pinned) with `typ`/`type`, `iss`, `aud`,
`exp`, `jti`, `sub`. Revocation is checked on every authenticated request with one Redis round
trip (MGET of the token's `jti` mark and the user's "not before" instant, in milliseconds so a
token issued in the same second after a password change stays valid). When Redis is down a
service falls back to the database (see `RevocationFallback`, installed in every FastAPI service
by `create_service_app` as `db_revocation_fallback`); the gateway then leaves the check to the
services, which always check again.

Passwords: argon2id (m = 19 MiB, t = 2, p = 1), hashed and verified in a small dedicated thread
pool (never on the event loop), upgraded on login when the parameters change; the password
policy reports one `details` entry per failed rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import argon2
import jwt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text

from paysys.core.config import Settings
from paysys.core.errors import AppError, Forbidden, Unauthorized
from paysys.core.logging import get_logger
from paysys.core.redis import RedisPipe

ALGORITHM = "HS256"
ROLES = ("CUSTOMER", "VENDOR", "ADMIN")

REVOKED_JTI_KEY = "auth:revoked:jti:{}"
REVOKED_SID_KEY = "auth:revoked:sid:{}"
NOT_BEFORE_KEY = "auth:nbf:{}"

log = get_logger("paysys.security")


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

    def _claims(
        self,
        kind: str,
        sub: str,
        ttl: int,
        extra: dict[str, Any],
        issued_ms: int | None = None,
        jti: str | None = None,
    ) -> dict[str, Any]:
        issued_ms = now_ms() if issued_ms is None else issued_ms
        return {
            "sub": sub,
            "type": kind,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": issued_ms // 1000,
            "iatMs": issued_ms,
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
        issued_ms: int | None = None,
        jti: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """`issued_ms`/`jti` make issuance deterministic (refresh grace replays the same pair)."""
        sub = str(user_id)
        claims = self._claims(
            "access",
            sub,
            self.access_ttl,
            {"email": email, "name": name, "role": role, "sid": sid, "userId": sub},
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
    ) -> tuple[str, dict[str, Any]]:
        claims = self._claims(
            "refresh", str(user_id), self.refresh_ttl, {"fam": family}, issued_ms, jti
        )
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
                    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
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
                issued_at_ms=int(claims.get("iatMs", int(claims["iat"]) * 1000)),
                expires_at=int(claims["exp"]),
            )
        except (KeyError, ValueError, TypeError):
            raise Unauthorized("TOKEN_INVALID", "Token is invalid") from None

    def decode_refresh(self, token: str) -> dict[str, Any]:
        claims = self._decode(token, self.settings.refresh_secrets, "refresh")
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


# --- passwords ----------------------------------------------------------------------------

# OWASP / ASVS: argon2id, m = 19 MiB, t = 2, p = 1 (~18 ms on this machine).
PASSWORD_HASHER = argon2.PasswordHasher(
    time_cost=2,
    memory_cost=19 * 1024,
    parallelism=1,
    hash_len=32,
    salt_len=16,
    type=argon2.Type.ID,
)
PASSWORD_MIN = 12
PASSWORD_MAX = 128

# Hashing is CPU bound and releases the GIL: a pool sized to the cores keeps the event loop free
# and bounds memory (19 MiB per hash in flight). Requests beyond that queue here, not on the loop.
_HASH_THREADS = os.cpu_count() or 2
_hash_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _hash_pool
    if _hash_pool is None:
        _hash_pool = ThreadPoolExecutor(max_workers=_HASH_THREADS, thread_name_prefix="argon2")
    return _hash_pool


async def _in_pool(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_pool(), fn, *args)


async def hash_password(password: str) -> str:
    return str(await _in_pool(PASSWORD_HASHER.hash, password))


def _verify(stored_hash: str, password: str) -> tuple[bool, bool]:
    try:
        PASSWORD_HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, PASSWORD_HASHER.check_needs_rehash(stored_hash)


async def verify_password(stored_hash: str, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash). Runs in the hashing pool."""
    result: tuple[bool, bool] = await _in_pool(_verify, stored_hash, password)
    return result


# The hash of a random secret nobody knows, with the current parameters: verifying against it
# costs what a real verification costs. Rebuilt at first use if the parameters change.
_DUMMY_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$DAAU1eZ9Wbi2snNZIjiLRw"
    "$eNaoJ7JXJDwYnvc7MpBIC6ylQmqV+Qlpp7lg++YMiuM"
)
_dummy_hash: str | None = None


async def burn_password_check(password: str) -> None:
    """Spend what a real verification costs (unknown email): login timing reveals nothing."""
    global _dummy_hash
    if _dummy_hash is None:
        if PASSWORD_HASHER.check_needs_rehash(_DUMMY_HASH):
            _dummy_hash = await hash_password(secrets.token_urlsafe(24))
        else:
            _dummy_hash = _DUMMY_HASH
    await verify_password(_dummy_hash, password)


_POLICY_RULES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("must contain at least one upper-case letter", lambda p: any(c.isupper() for c in p)),
    ("must contain at least one lower-case letter", lambda p: any(c.islower() for c in p)),
    ("must contain at least one digit", lambda p: any(c.isdigit() for c in p)),
    (
        "must contain at least one character that is not a letter or digit",
        lambda p: any(not c.isalnum() for c in p),
    ),
)


def password_problems(password: str, email: str | None = None) -> list[str]:
    """Every failed rule of the password policy (api-contracts §3), in a stable order."""
    problems = []
    if len(password) < PASSWORD_MIN:
        problems.append(f"must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        problems.append(f"must be at most {PASSWORD_MAX} characters")
    problems.extend(message for message, ok in _POLICY_RULES if not ok(password))
    if email and password.strip().lower() == email.strip().lower():
        problems.append("must not be the email address")
    return problems


def check_password_policy(password: str, email: str | None, field: str = "password") -> None:
    """400 VALIDATION_ERROR with one `details` entry per failed rule."""
    problems = password_problems(password, email)
    if problems:
        details = [{"field": field, "message": message} for message in problems]
        raise AppError("VALIDATION_ERROR", f"{field}: {problems[0]}", details=details)


EMAIL_RE = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def token_hash(token: str) -> str:
    """Refresh tokens are stored only as this hash (they carry 256+ bits, no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


# --- revocation -------------------------------------------------------------------------

# Called when Redis cannot answer: (principal) -> True when revoked. Installed by services that
# have the database (auth's session and user tables); None means "cannot tell here".
RevocationFallback = Callable[[Request, Principal], Awaitable[bool]]

# Never lower a user's "not before" (two revocations racing keep the later instant).
_SET_MAX_LUA = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


async def revoke_token(redis: Redis, jti: str, expires_at: int) -> None:
    ttl = max(1, expires_at - int(time.time()) + 1)
    await redis.set(REVOKED_JTI_KEY.format(jti), "1", ex=ttl)


async def revoke_session(redis: Redis, sid: str, ttl: int) -> None:
    """Every access token of this session stops working (kept while any could live)."""
    await redis.set(REVOKED_SID_KEY.format(sid), "1", ex=max(1, ttl))


async def revoke_user_tokens_before(redis: Redis, user_id: uuid.UUID, at_ms: int, ttl: int) -> None:
    """Every token of this user issued before `at_ms` stops working (kept while any could live)."""
    await redis.eval(_SET_MAX_LUA, 1, NOT_BEFORE_KEY.format(user_id), str(at_ms), str(max(1, ttl)))


async def is_revoked(redis: Redis | RedisPipe, principal: Principal) -> bool:
    """One round trip. Raises RedisError when Redis is unreachable (the caller decides)."""
    keys = [REVOKED_JTI_KEY.format(principal.jti), NOT_BEFORE_KEY.format(principal.id)]
    if principal.sid:
        keys.append(REVOKED_SID_KEY.format(principal.sid))
    if isinstance(redis, RedisPipe):
        marks = await redis.call(b"MGET", *keys)
    else:
        marks = await redis.mget(keys)
    if marks[0] is not None or (len(marks) > 2 and marks[2] is not None):
        return True
    not_before = marks[1]
    return not_before is not None and principal.issued_at_ms < int(not_before)


_FALLBACK_SQL = text(
    """
    SELECT u.is_active AND u.deleted_at IS NULL AS usable,
           u.tokens_valid_after_ms AS not_before,
           (SELECT s.revoked FROM auth_sessions s
             WHERE s.id = :sid AND s.user_id = u.id) AS session_revoked,
           EXISTS (SELECT 1 FROM auth_revoked_access_tokens r
                    WHERE r.jti = :jti) AS token_revoked
    FROM users u WHERE u.id = :uid
    """
)


async def db_revocation_fallback(request: Request, principal: Principal) -> bool:
    """Redis is down: decide from the database (user row, the token's session, the token).

    Covers password change, deactivation, deletion, role change (the user's
    `tokens_valid_after_ms`), ended sessions (their revoked flag) and logout (the presented
    token's row in `auth_revoked_access_tokens`, also when its session lives on).
    """
    sid: uuid.UUID | None = None
    if principal.sid:
        try:
            sid = uuid.UUID(principal.sid)
        except ValueError:
            return True
    try:
        async with request.app.state.sessionmaker() as session:
            row = (
                await session.execute(
                    _FALLBACK_SQL, {"uid": principal.id, "sid": sid, "jti": principal.jti}
                )
            ).first()
    except Exception:
        log.warning("revocation fallback failed: database unreachable")
        raise AppError("SERVICE_UNAVAILABLE", "Cannot verify the token right now") from None
    if row is None or not row.usable or row.token_revoked:
        return True
    if principal.issued_at_ms < int(row.not_before):
        return True
    # Only a session known to be ended revokes: sessions are never deleted while their user
    # exists, and tokens minted by tools and tests (signed, so trusted) may name none.
    return sid is not None and row.session_revoked is True


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
        revoked = await is_revoked(getattr(state, "redis_pipe", None) or state.redis, principal)
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
