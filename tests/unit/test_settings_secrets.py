"""Production refuses weak secrets (never echoing them); rotation keys verify but never sign."""

from __future__ import annotations

import uuid

import jwt
import pytest

from paysys.core.config import DEFAULT_ACCESS_SECRET, Settings
from paysys.core.errors import AppError
from paysys.core.tokens import TokenCodec

GOOD = {
    "jwt_access_secret": "a" * 40,
    "jwt_refresh_secret": "r" * 40,
    "psp_webhook_secret": "w" * 40,
    "studio_session_secret": "s" * 40,
}


def production(**over: object) -> Settings:
    return Settings(_env_file=None, env="production", **{**GOOD, **over})  # type: ignore[call-arg, arg-type]


def test_production_accepts_real_secrets() -> None:
    assert production().is_production
    rotated = production(jwt_access_secret_previous="p" * 40, jwt_refresh_secret_previous="q" * 40)
    assert rotated.access_secrets == ("a" * 40, "p" * 40)
    assert rotated.refresh_secrets == ("r" * 40, "q" * 40)


@pytest.mark.parametrize(
    ("over", "problem"),
    [
        ({"jwt_access_secret": DEFAULT_ACCESS_SECRET}, "JWT_ACCESS_SECRET is a development"),
        ({"psp_webhook_secret": "tiny-secret"}, "PSP_WEBHOOK_SECRET is shorter than 32"),
        ({"jwt_refresh_secret": "a" * 40}, "must differ"),
        ({"jwt_access_secret_previous": "tiny-secret"}, "JWT_ACCESS_SECRET_PREVIOUS is shorter"),
        ({"jwt_refresh_secret_previous": DEFAULT_ACCESS_SECRET}, "a development default"),
        # a former access secret must never verify refresh tokens (and the reverse)
        ({"jwt_refresh_secret_previous": "a" * 40}, "must differ"),
        ({"jwt_access_secret_previous": "x" * 40 + ",r" + "r" * 39}, "must differ"),
    ],
)
def test_production_refuses_weak_or_shared_secrets(over: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match="refusing to start in production") as refused:
        production(**over)
    message = str(refused.value)
    assert problem in message
    for secret in [*over.values(), *GOOD.values()]:
        for part in secret.split(","):
            assert part[:12] not in message  # names the variable, never a secret


def test_previous_secrets_verify_but_never_sign() -> None:
    old = Settings(_env_file=None, jwt_access_secret="o" * 40, jwt_refresh_secret="f" * 40)  # type: ignore[call-arg]
    rotated = Settings(
        _env_file=None,  # type: ignore[call-arg]
        jwt_access_secret="n" * 40,
        jwt_access_secret_previous="o" * 40,
        jwt_refresh_secret="m" * 40,
        jwt_refresh_secret_previous="f" * 40,
    )
    before, during = TokenCodec(old), TokenCodec(rotated)
    uid = uuid.uuid4()
    access, _ = before.issue_access(user_id=uid, email="a@b.co", name="A", role="VENDOR", sid="s")
    refresh, _ = before.issue_refresh(user_id=uid, family="fam")
    assert during.decode_access(access).id == uid
    assert during.decode_refresh(refresh)["sub"] == str(uid)
    # New tokens are signed with the new secret only.
    fresh, _ = during.issue_access(user_id=uid, email="a@b.co", name="A", role="VENDOR", sid="s")
    assert jwt.get_unverified_header(fresh)["alg"] == "HS256"
    with pytest.raises(AppError) as refused:
        before.decode_access(fresh)
    assert refused.value.code == "TOKEN_INVALID"
    # Keys stay per kind: an old access token is no refresh token under the rotated keys.
    with pytest.raises(AppError) as crossed:
        during.decode_refresh(access)
    assert crossed.value.code == "TOKEN_INVALID"
    # A signature no key knows is refused after trying them all.
    with pytest.raises(AppError) as unknown:
        during.decode_access(jwt.encode({"sub": str(uid)}, "z" * 40, "HS256"))
    assert unknown.value.code == "TOKEN_INVALID"
