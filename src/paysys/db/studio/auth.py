"""The studio's session, CSRF tokens and sign-in.

The session lives in a signed cookie (`STUDIO_SESSION_SECRET`): the admin's id, their token
version at sign-in and the CSRF token. Every request re-reads the user: a deactivated, deleted
or demoted admin, or any token-version bump (password change, logout of all sessions, role
change), ends the studio session too. Sign-in is `auth.service.check_credentials`, so the
lockout counts are shared with `POST /api/auth/login` for the same account and address.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from typing import Any

from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from paysys.auth import service as auth_service
from paysys.core.clientip import client_ip
from paysys.core.errors import AppError
from paysys.users.models import User

COOKIE = "paysys_studio"
CSRF_FIELD = "csrf_token"


def csrf_token(request: Request) -> str:
    """The session's synchronizer token (made on first use, i.e. by the login page)."""
    token: str | None = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, form: FormData) -> None:
    """403 unless the form carries this session's token (a forged cross-site form cannot)."""
    expected = request.session.get("csrf")
    sent = form.get(CSRF_FIELD)
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "Missing or wrong CSRF token; reload the page")


async def current_admin(request: Request) -> User | None:
    """The signed-in admin, still active, still ADMIN, token version unchanged; else None."""
    raw_id, version = request.session.get("uid"), request.session.get("ver")
    if not isinstance(raw_id, str) or not isinstance(version, int):
        return None
    try:
        user_id = uuid.UUID(raw_id)
    except ValueError:
        return None
    async with request.app.state.sessionmaker() as session:
        return (
            await session.execute(
                select(User).where(
                    User.id == user_id,
                    User.role == "ADMIN",
                    User.is_active.is_(True),
                    User.deleted_at.is_(None),
                    User.token_version == version,
                )
            )
        ).scalar_one_or_none()


class SignInRefused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


async def sign_in(request: Request, email: str, password: str) -> None:
    """Check the credentials like the API login does, then start a fresh session (a new CSRF
    token too: nothing from before the sign-in survives it)."""
    state: Any = request.app.state
    client = auth_service.ClientInfo.of(client_ip(request), request.headers.get("user-agent"))
    async with state.sessionmaker() as session:
        try:
            user = await auth_service.check_credentials(
                session,
                state.throttles,
                email=email,
                password=password,
                client=client,
                role="ADMIN",
            )
        except AppError as exc:
            raise SignInRefused(exc.status, exc.message, exc.headers) from None
    if user.role != "ADMIN":
        raise SignInRefused(403, "Only ADMIN accounts may use the studio")
    request.session.clear()
    request.session.update(uid=str(user.id), ver=user.token_version, csrf=secrets.token_urlsafe(32))
