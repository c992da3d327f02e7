"""core.passwords, core.tokens: password policy, hashing parameters, token codec (forged tokens)."""

from __future__ import annotations

import time
import uuid

import argon2
import jwt
import pytest

from paysys.core import passwords
from paysys.core.config import Settings
from paysys.core.errors import AppError
from paysys.core.passwords import (
    PASSWORD_HASHER,
    check_password_policy,
    hash_password,
    password_problems,
    verify_password,
)
from paysys.core.tokens import TokenCodec, bearer_token


def test_policy_reports_each_failed_rule() -> None:
    assert password_problems("Good-Password-1") == []
    assert password_problems("a" * 129 + "A1!") == ["must be at most 128 characters"]
    assert password_problems("ALLUPPERCASE1!") == ["must contain at least one lower-case letter"]
    assert password_problems("Bob@Example.com1", "bob@example.com1") == [
        "must not be the email address"
    ]
    with pytest.raises(AppError) as exc:
        check_password_policy("", None, "newPassword")
    assert exc.value.code == "VALIDATION_ERROR"
    assert [d["field"] for d in exc.value.details] == ["newPassword"] * 5
    assert exc.value.message == "newPassword: must be at least 12 characters"


async def test_argon2id_parameters_and_rehash_detection() -> None:
    params = argon2.extract_parameters(await hash_password("Good-Password-1"))
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19 * 1024 and params.time_cost >= 2
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024).hash("Good-Password-1")
    assert await verify_password(weak, "Good-Password-1") == (True, True)
    assert await verify_password(weak, "wrong") == (False, False)
    assert await verify_password("not-a-hash", "x") == (False, False)
    assert PASSWORD_HASHER.check_needs_rehash(weak)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer a b"):
        with pytest.raises(AppError) as exc:
            bearer_token(bad)
        assert exc.value.code == "UNAUTHORIZED"


def _claims(codec: TokenCodec, **over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "type": "access",
        "iss": codec.settings.jwt_issuer,
        "aud": codec.settings.jwt_audience,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
        "email": "a@b.co",
        "name": "A",
        "role": "CUSTOMER",
        "sid": str(uuid.uuid4()),
        "ver": 0,
    }
    claims.update(over)
    return claims


def _expect(codec: TokenCodec, token: str, code: str) -> None:
    with pytest.raises(AppError) as exc:
        codec.decode_access(token)
    assert exc.value.code == code and exc.value.status == 401


@pytest.mark.filterwarnings("ignore:The HMAC key")
def test_forged_tokens_are_refused() -> None:
    settings = Settings()
    codec = TokenCodec(settings)
    secret = settings.jwt_access_secret
    good = jwt.encode(_claims(codec), secret, "HS256")
    assert codec.decode_access(good).role == "CUSTOMER"
    _expect(codec, jwt.encode(_claims(codec), None, "none"), "TOKEN_INVALID")
    _expect(codec, jwt.encode(_claims(codec), "x" * 40, "HS256"), "TOKEN_INVALID")
    _expect(codec, jwt.encode(_claims(codec), secret, "HS512"), "TOKEN_INVALID")
    _expect(codec, jwt.encode(_claims(codec, aud="other"), secret, "HS256"), "TOKEN_INVALID")
    _expect(codec, jwt.encode(_claims(codec, iss="evil"), secret, "HS256"), "TOKEN_INVALID")
    _expect(codec, jwt.encode(_claims(codec, type="refresh"), secret, "HS256"), "TOKEN_INVALID")
    _expect(codec, jwt.encode(_claims(codec, sub="nope"), secret, "HS256"), "TOKEN_INVALID")
    expired = _claims(codec, iat=int(time.time()) - 120, exp=int(time.time()) - 60)
    _expect(codec, jwt.encode(expired, secret, "HS256"), "TOKEN_EXPIRED")
    # A refresh token (other secret, other type) is never an access token, and vice versa.
    refresh, _ = codec.issue_refresh(user_id=uuid.uuid4(), family=str(uuid.uuid4()))
    _expect(codec, refresh, "TOKEN_INVALID")
    access, _ = codec.issue_access(
        user_id=uuid.uuid4(), email="a@b.co", name="A", role="VENDOR", sid="s"
    )
    with pytest.raises(AppError) as exc:
        codec.decode_refresh(access)
    assert exc.value.code == "TOKEN_INVALID"


def test_token_version_claim() -> None:
    """`ver` (api-contracts §1.5) is required: a token from before versions, or with anything
    but a non-negative integer, is refused (the client refreshes and gets one)."""
    settings = Settings()
    codec = TokenCodec(settings)
    secret = settings.jwt_access_secret
    assert (
        codec.decode_access(jwt.encode(_claims(codec, ver=3), secret, "HS256")).token_version == 3
    )
    without = _claims(codec)
    del without["ver"]
    _expect(codec, jwt.encode(without, secret, "HS256"), "TOKEN_INVALID")
    for bad in (-1, True, "1", 1.5, None):
        _expect(codec, jwt.encode(_claims(codec, ver=bad), secret, "HS256"), "TOKEN_INVALID")
    access, claims = codec.issue_access(
        user_id=uuid.uuid4(), email="a@b.co", name="A", role="VENDOR", sid="s", token_version=7
    )
    assert claims["ver"] == 7 and codec.decode_access(access).token_version == 7
    assert "iatMs" not in claims  # issue times are never compared across hosts any more


def test_injected_clock_and_refresh_lifetime_cap() -> None:
    skewed = TokenCodec(Settings(), clock=lambda: 1_700_000_000_000)
    _, claims = skewed.issue_refresh(user_id=uuid.uuid4(), family="f")
    assert claims["iat"] == 1_700_000_000 and claims["exp"] == 1_700_000_000 + 7 * 86400
    # a session's absolute end comes first: the refresh token never outlives it
    _, capped = skewed.issue_refresh(user_id=uuid.uuid4(), family="f", ttl=3600)
    assert capped["exp"] == 1_700_000_000 + 3600
    _, longer = skewed.issue_refresh(user_id=uuid.uuid4(), family="f", ttl=30 * 86400)
    assert longer["exp"] == 1_700_000_000 + 7 * 86400


def test_deterministic_issue_for_the_grace_replay() -> None:
    codec = TokenCodec(Settings())
    uid, fam = uuid.uuid4(), str(uuid.uuid4())
    a = codec.issue_refresh(user_id=uid, family=fam, issued_ms=1_700_000_000_123, jti="j")[0]
    b = codec.issue_refresh(user_id=uid, family=fam, issued_ms=1_700_000_000_123, jti="j")[0]
    assert a == b


async def test_dummy_hash_matches_current_parameters(monkeypatch: pytest.MonkeyPatch) -> None:

    assert not PASSWORD_HASHER.check_needs_rehash(passwords._DUMMY_HASH)
    monkeypatch.setattr(passwords, "_dummy_hash", None)
    monkeypatch.setattr(passwords, "_DUMMY_HASH", argon2.PasswordHasher(time_cost=1).hash("x"))
    await passwords.burn_password_check("anything")
    assert passwords._dummy_hash is not None
    assert not PASSWORD_HASHER.check_needs_rehash(passwords._dummy_hash)


async def test_account_changes_never_take_every_hashing_thread() -> None:
    """Change-lane jobs (registration, password change) run at most CHANGE_THREADS at a time,
    so a login submitted during a burst of them starts at once on a free thread."""
    import asyncio
    import threading

    lock, running, peak = threading.Lock(), [0], [0]

    def change(seconds: float) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(seconds)
        with lock:
            running[0] -= 1

    assert max(1, passwords._HASH_THREADS // 2) == passwords.CHANGE_THREADS
    assert passwords.CHANGE_THREADS < passwords._HASH_THREADS or passwords._HASH_THREADS == 1
    burst = [asyncio.create_task(passwords._in_pool(change, 0.05, lane="change")) for _ in range(8)]
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await passwords._in_pool(time.sleep, 0)  # a login's verification
    waited = time.perf_counter() - started
    await asyncio.gather(*burst)
    assert peak[0] == passwords.CHANGE_THREADS
    assert waited < 0.05 * 4, waited  # not behind the eight changes (0.4 s of work)
