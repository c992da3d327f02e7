"""Where the lockout and the password-change quota keep count: Redis, PostgreSQL while it is down.

- `Throttles.begin_login(email, client)` counts an attempt for (account, client address) and
  for the account, atomically, **before** the password is verified (`lockout.attempt`): in
  Redis one Lua script (the same steps as `paysys.auth.lockout`), so parallel guesses from any
  number of auth replicas are serialised inside Redis. `login_succeeded` takes the count back
  and forgets the address's failures; `login_failed` reports the failure (the
  `auth.account_under_attack` warning and metric when it reached the account's ceiling).
- `Throttles.begin_change(user_id)` takes a slot of the user's password-change quota (a
  sliding window), `release_change` gives it back (a refused or failed change).
- Redis unreachable: the same rules run in PostgreSQL (`auth_login_throttle`,
  `auth_attempt_log`), one short transaction serialised by a transaction-scoped advisory lock
  per account; never while a password is being hashed. The two stores are not merged: counts
  made during an outage stay in PostgreSQL (and lapse there), so an attacker gains at most one
  more allowance while the store switches.

Accounts are keyed by a hash of the lower-cased email (known or not: the answers never tell
which emails exist); client addresses by `core.clientip.client_key` (IPv6 per /64).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from paysys.auth import lockout
from paysys.auth.models import AttemptLog, LoginThrottle
from paysys.core.config import Settings, parse_duration
from paysys.core.logging import get_logger
from paysys.core.redis_outage import RedisOutage
from paysys.core.tokens import Clock

log = get_logger("paysys.auth.throttle")
T = TypeVar("T")

LOGIN_LOCKED = Counter(
    "paysys_auth_login_locked_total",
    "Login or password-change attempts refused with 423 ACCOUNT_LOCKED",
    ["scope"],
)
UNDER_ATTACK = Counter(
    "paysys_auth_account_under_attack_total",
    "Accounts that reached the per-account ceiling of failed logins per hour",
)
FALLBACK = Counter(
    "paysys_auth_throttle_fallback_total",
    "Lockout or quota decisions made in PostgreSQL because Redis could not answer",
)

LOCK_KEY = "auth:lock:{}:{}"  # account, client: the address's state (a hash)
FAILURES_KEY = "auth:lock:{}"  # account: its failures of the last hour (a sorted set)
CHANGES_KEY = "auth:pwchange:{}"  # user id: password changes in the window (a sorted set)

# KEYS[1] the address's state, KEYS[2] the account's failures.
# ARGV: now, attempt id, threshold, window, base, max, hourly max, hour (all ms / counts).
# → {1 allowed | 0 refused, wait ms, account failures this hour, 1 address | 2 account}
# Keep in step with paysys.auth.lockout.attempt (tests run both on the same scenarios).
LOCKOUT_LUA = """
local now = tonumber(ARGV[1])
local threshold, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local base, maxlock = tonumber(ARGV[5]), tonumber(ARGV[6])
local cap, hour = tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - hour)
local count = redis.call('ZCARD', KEYS[2])
local account_wait = 0
if count >= cap then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  account_wait = tonumber(oldest[2]) + hour - now
end
local st = redis.call('HMGET', KEYS[1], 'ws', 'n', 'lvl', 'until', 'last')
local ws, n, lvl, lock_until, last = now, 0, 0, 0, now
if st[1] then
  ws, n, lvl = tonumber(st[1]), tonumber(st[2]), tonumber(st[3])
  lock_until, last = tonumber(st[4]), tonumber(st[5])
end
local address_wait = 0
if lock_until > now then address_wait = lock_until - now end
if account_wait > 0 or address_wait > 0 then
  if account_wait >= address_wait then return {0, account_wait, count, 2} end
  return {0, address_wait, count, 1}
end
if now - math.max(last, lock_until) > window then lvl = 0 end
if now - ws > window then ws = now; n = 0 end
n = n + 1
last = now
if n >= threshold then
  lock_until = now + math.min(base * 2 ^ math.min(lvl, 30), maxlock)
  lvl = lvl + 1
  n = 0
  ws = now
end
redis.call('HSET', KEYS[1], 'ws', ws, 'n', n, 'lvl', lvl, 'until', lock_until, 'last', last)
redis.call('PEXPIRE', KEYS[1], math.max(lock_until, last) - now + window + 1000)
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('PEXPIRE', KEYS[2], hour + 1000)
return {1, 0, count + 1, 0}
"""

# A sliding-window log. KEYS[1] the log; ARGV: now, event id, limit, window (ms).
# → {1 taken | 0 full, wait ms}. Keep in step with paysys.auth.lockout.window_wait.
WINDOW_LUA = """
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], window + 1000)
return {1, 0}
"""

Store = Literal["redis", "db"]


def account_key(email: str) -> str:
    """The lockout's name for an account: a hash of the lower-cased email (logs and keys never
    carry the address itself)."""
    return hashlib.sha256(b"paysys-login:" + email.strip().lower().encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    account: str
    client: str
    id: str
    at: int  # ms
    verdict: lockout.Verdict
    store: Store


@dataclass(frozen=True, slots=True)
class ChangeTicket:
    user_id: uuid.UUID
    id: str
    allowed: bool
    retry_after_ms: int
    store: Store

    @property
    def retry_after(self) -> int:
        return max(1, -(-self.retry_after_ms // 1000))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _dt(ms: int) -> datetime:
    return _EPOCH + ms * _MS  # exact (no float on the way)


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


class Throttles:
    """The lockout and the password-change quota of one auth process."""

    def __init__(
        self,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        policy: lockout.Policy,
        *,
        change_max: int,
        change_window_ms: int,
        clock: Clock,
    ) -> None:
        self.redis = redis
        self.sessionmaker = sessionmaker
        self.policy = policy
        self.change_max = change_max
        self.change_window_ms = change_window_ms
        self.clock = clock
        self._lockout = redis.register_script(LOCKOUT_LUA)
        self._window = redis.register_script(WINDOW_LUA)
        self.outage = RedisOutage(
            "lockout counting in PostgreSQL: Redis unavailable", "lockout counting in Redis again"
        )

    @classmethod
    def from_settings(
        cls,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
    ) -> Throttles:
        """The settings' numbers (`LOCKOUT_*`, `PASSWORD_CHANGE_*`): every process that signs
        users in (auth, `db studio`) counts with the same rules in the same keys."""
        window = parse_duration(settings.password_change_window)
        return cls(
            redis,
            sessionmaker,
            lockout.Policy.from_settings(settings),
            change_max=settings.password_change_max,
            change_window_ms=int(window.total_seconds() * 1000),
            clock=clock,
        )

    # -- Redis first, PostgreSQL when it cannot answer ------------------------------------------

    async def _either(
        self,
        in_redis: Callable[[], Awaitable[T]],
        in_db: Callable[[], Awaitable[T]],
    ) -> tuple[T, Store]:
        if self.outage.usable():
            try:
                result = await in_redis()
            except (RedisError, OSError) as exc:
                self.outage.failed(exc)
            else:
                self.outage.succeeded()
                return result, "redis"
        FALLBACK.inc()
        return await in_db(), "db"

    # -- login ------------------------------------------------------------------------------

    async def begin_login(self, email: str, client: str) -> LoginAttempt:
        """Count an attempt (as a failure until `login_succeeded`), or refuse it (423)."""
        account, now, attempt_id = account_key(email), self.clock(), uuid.uuid4()
        policy = self.policy

        async def in_redis() -> lockout.Verdict:
            allowed, wait, count, _scope = await self._lockout(
                keys=[LOCK_KEY.format(account, client), FAILURES_KEY.format(account)],
                args=[
                    now,
                    attempt_id.hex,
                    policy.threshold,
                    policy.window_ms,
                    policy.base_ms,
                    policy.max_ms,
                    policy.account_hourly_max,
                    lockout.HOUR_MS,
                ],
            )
            if allowed:
                return lockout.Verdict(True, account_failures=int(count))
            scope: lockout.Scope = "account" if int(_scope) == 2 else "address"
            return lockout.Verdict(False, int(wait), scope, int(count))

        async def in_db() -> lockout.Verdict:
            return await self._begin_login_db(account, client, attempt_id, now)

        verdict, store = await self._either(in_redis, in_db)
        if not verdict.allowed:
            LOGIN_LOCKED.labels(verdict.scope or "address").inc()
        return LoginAttempt(account, client, attempt_id.hex, now, verdict, store)

    async def _begin_login_db(
        self, account: str, client: str, attempt_id: uuid.UUID, now: int
    ) -> lockout.Verdict:
        async with self.sessionmaker() as session, session.begin():
            await _advisory_lock(session, "auth-login:" + account)
            row = await session.get(LoginThrottle, (account, client))
            state = None
            if row is not None:
                state = lockout.AddressState(
                    _ms(row.window_start),
                    row.failures,
                    row.lock_level,
                    _ms(row.locked_until) if row.locked_until else 0,
                    _ms(row.last_failure_at),
                )
            times = await _log_times(session, "login_failure", account, now - lockout.HOUR_MS)
            verdict, new = lockout.attempt(state, times, now, self.policy)
            if new is not None:
                values = {
                    "window_start": _dt(new.window_start),
                    "failures": new.failures,
                    "lock_level": new.lock_level,
                    "locked_until": _dt(new.locked_until) if new.locked_until else None,
                    "last_failure_at": _dt(new.last_failure),
                }
                await session.execute(
                    pg_insert(LoginThrottle)
                    .values(account=account, client=client, **values)
                    .on_conflict_do_update(index_elements=["account", "client"], set_=values)
                )
                session.add(
                    AttemptLog(id=attempt_id, scope="login_failure", subject=account, at=_dt(now))
                )
        return verdict

    async def login_succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: take the attempt back and forget the address's failures."""
        if attempt.store == "redis":
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(LOCK_KEY.format(attempt.account, attempt.client))
                    pipe.zrem(FAILURES_KEY.format(attempt.account), attempt.id)
                    await pipe.execute()
                return
            except (RedisError, OSError):
                log.warning("redis unavailable while clearing a lockout count")
                return
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                delete(LoginThrottle).where(
                    LoginThrottle.account == attempt.account,
                    LoginThrottle.client == attempt.client,
                )
            )
            await session.execute(delete(AttemptLog).where(AttemptLog.id == uuid.UUID(attempt.id)))

    def login_failed(
        self, attempt: LoginAttempt, user_id: uuid.UUID | None, ip: str | None
    ) -> None:
        """The failure stays counted; the one that reaches the account's ceiling is reported
        (once per crossing: only one attempt can be the ceiling-th)."""
        if attempt.verdict.crossed_ceiling(self.policy):
            UNDER_ATTACK.inc()
            log.warning(
                "auth.account_under_attack",
                user_id=str(user_id) if user_id else None,
                account=attempt.account,
                failures_last_hour=attempt.verdict.account_failures,
                client_ip=ip,
            )

    # -- password changes -------------------------------------------------------------------

    async def begin_change(self, user_id: uuid.UUID) -> ChangeTicket:
        """Take a slot of the user's password-change quota (or learn how long to wait)."""
        now, event_id = self.clock(), uuid.uuid4()

        async def in_redis() -> tuple[bool, int]:
            taken, wait = await self._window(
                keys=[CHANGES_KEY.format(user_id)],
                args=[now, event_id.hex, self.change_max, self.change_window_ms],
            )
            return bool(taken), int(wait)

        async def in_db() -> tuple[bool, int]:
            async with self.sessionmaker() as session, session.begin():
                subject = str(user_id)
                await _advisory_lock(session, "auth-pwchange:" + subject)
                start = now - self.change_window_ms
                times = await _log_times(session, "password_change", subject, start)
                wait = lockout.window_wait(times, now, self.change_max, self.change_window_ms)
                if wait == 0:
                    session.add(
                        AttemptLog(
                            id=event_id, scope="password_change", subject=subject, at=_dt(now)
                        )
                    )
            return wait == 0, wait

        (taken, wait), store = await self._either(in_redis, in_db)
        return ChangeTicket(user_id, event_id.hex, taken, wait, store)

    async def release_change(self, ticket: ChangeTicket) -> None:
        """The change did not happen: its slot is free again."""
        if not ticket.allowed:
            return
        if ticket.store == "redis":
            try:
                await self.redis.zrem(CHANGES_KEY.format(ticket.user_id), ticket.id)
            except (RedisError, OSError):
                log.warning("redis unavailable while releasing a password-change slot")
            return
        async with self.sessionmaker() as session, session.begin():
            await session.execute(delete(AttemptLog).where(AttemptLog.id == uuid.UUID(ticket.id)))


async def _advisory_lock(session: AsyncSession, name: str) -> None:
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))


async def _log_times(session: AsyncSession, scope: str, subject: str, after_ms: int) -> list[int]:
    rows = await session.scalars(
        select(AttemptLog.at)
        .where(
            AttemptLog.scope == scope,
            AttemptLog.subject == subject,
            AttemptLog.at > _dt(after_ms),
        )
        .order_by(AttemptLog.at)
    )
    return [_ms(at) for at in rows]


async def forget_stale(session: AsyncSession, now: datetime, keep: timedelta) -> None:
    """The sync worker's clean-up of the PostgreSQL copy: rows older than `keep` (the longest
    window) can no longer matter."""
    await session.execute(delete(AttemptLog).where(AttemptLog.at < now - keep))
    await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < now - keep,
            (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now - keep),
        )
    )
