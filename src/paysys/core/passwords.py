"""Passwords: argon2id hashing off the event loop, and the password policy (api-contracts §3).

argon2id (m = 19 MiB, t = 2, p = 1), hashed and verified in a small dedicated thread pool
(never on the event loop), upgraded on login when the parameters change; the policy reports
one `details` entry per failed rule.

Two lanes share the pool: logins, and account changes (registration, password change, admin
create), which may occupy at most half of its threads at a time. A burst of changes therefore
queues behind itself and always leaves logins a thread (api-contracts §3: a password-change
burst must not starve other users' logins).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from paysys.core.errors import AppError

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
# The policy as JSON Schema (api-contracts §1.3): length, and one upper-case letter, one
# lower-case letter, one digit and one other character (ASCII classes A-Z, a-z, 0-9, anything
# else: the same classes as the checks of `_POLICY_RULES`). "Not equal to the email" is a
# rule of §10, stated in the operation's description (PASSWORD_RULES).
PASSWORD_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": PASSWORD_MIN,
    "maxLength": PASSWORD_MAX,
    # (no NUL: JSON bodies holding one are refused, core.jsonbody)
    "pattern": r"^(?=[^\x00]*[A-Z])(?=[^\x00]*[a-z])(?=[^\x00]*[0-9])(?=[^\x00]*[^A-Za-z0-9\x00])"
    r"[^\x00]*$",
    "description": f"{PASSWORD_MIN}-{PASSWORD_MAX} characters with at least one of A-Z, one "
    "of a-z, one of 0-9 and one other character; not equal to the email",
}
PASSWORD_RULES = (
    "Password policy (api-contracts §3): 12-128 characters, at least one of A-Z, one of a-z, "
    "one of 0-9 and one other character (the schema's pattern); and, "
    "which JSON Schema cannot state (§10), not equal to the email. Each failed rule is one "
    "`details` entry of a 400 VALIDATION_ERROR."
)

# Hashing is CPU bound and releases the GIL: a pool sized to the cores keeps the event loop free
# and bounds memory (19 MiB per hash in flight). Requests beyond that queue here, not on the loop.
_HASH_THREADS = os.cpu_count() or 2
_hash_pool: ThreadPoolExecutor | None = None

Lane = Literal["login", "change"]
CHANGE_THREADS = max(1, _HASH_THREADS // 2)
# One gate per event loop (asyncio primitives belong to the loop they are first used on).
_change_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _pool() -> ThreadPoolExecutor:
    global _hash_pool
    if _hash_pool is None:
        _hash_pool = ThreadPoolExecutor(max_workers=_HASH_THREADS, thread_name_prefix="argon2")
    return _hash_pool


def _change_gate(loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
    gate = _change_gates.get(loop)
    if gate is None:
        gate = _change_gates[loop] = asyncio.Semaphore(CHANGE_THREADS)
    return gate


async def _in_pool(fn: Callable[..., Any], *args: Any, lane: Lane = "login") -> Any:
    loop = asyncio.get_running_loop()
    if lane == "change":
        async with _change_gate(loop):
            return await loop.run_in_executor(_pool(), fn, *args)
    return await loop.run_in_executor(_pool(), fn, *args)


async def hash_password(password: str, *, lane: Lane = "change") -> str:
    """A new hash: an account change unless told otherwise (a login's hash upgrade)."""
    return str(await _in_pool(PASSWORD_HASHER.hash, password, lane=lane))


def _verify(stored_hash: str, password: str) -> tuple[bool, bool]:
    try:
        PASSWORD_HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, PASSWORD_HASHER.check_needs_rehash(stored_hash)


async def verify_password(
    stored_hash: str, password: str, *, lane: Lane = "login"
) -> tuple[bool, bool]:
    """(matches, needs_rehash). Runs in the hashing pool (a password change verifies the
    current password in the change lane)."""
    result: tuple[bool, bool] = await _in_pool(_verify, stored_hash, password, lane=lane)
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
    # ASCII classes, exactly the pattern of PASSWORD_SCHEMA (é or ² count as "other").
    ("must contain at least one upper-case letter", lambda p: any("A" <= c <= "Z" for c in p)),
    ("must contain at least one lower-case letter", lambda p: any("a" <= c <= "z" for c in p)),
    ("must contain at least one digit", lambda p: any("0" <= c <= "9" for c in p)),
    (
        "must contain at least one character that is not a letter or digit",
        lambda p: any(not (c.isascii() and c.isalnum()) for c in p),
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
