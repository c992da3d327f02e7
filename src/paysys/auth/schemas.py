"""Request bodies of `/api/auth` (camelCase, unknown fields → 400, strings trimmed).

Passwords are not trimmed (spaces are legal characters) and their length is capped generously
here, so the policy can report "at most 128 characters" as one of its `details`; emails are
checked and lower-cased by the user accounts domain (`paysys.users.accounts`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, WithJsonSchema

from paysys.core.passwords import PASSWORD_SCHEMA
from paysys.core.schemas import ApiModel, Email, ResponseModel, success_envelope

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# Not trimmed: a password is used exactly as typed. New passwords may be empty here: the
# policy then reports every rule it fails (one `details` entry each).
Password = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=1024)]
NewPassword = Annotated[
    str,
    StringConstraints(strip_whitespace=False, min_length=0, max_length=1024),
    WithJsonSchema(PASSWORD_SCHEMA),
]
Token = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)]


class RegisterRequest(ApiModel):
    email: Email
    password: NewPassword
    name: Name
    role: Literal["CUSTOMER", "VENDOR", "ADMIN"] = Field(
        default="CUSTOMER", description="CUSTOMER (default) or VENDOR; ADMIN is refused (403)"
    )


class LoginRequest(ApiModel):
    email: Email
    password: Password


class RefreshRequest(ApiModel):
    refresh_token: Token


class LogoutRequest(ApiModel):
    refresh_token: Token | None = None
    all_sessions: bool = False


class PasswordChangeRequest(ApiModel):
    current_password: Password
    new_password: NewPassword


# --- responses (documentation only; handlers build plain dicts) -------------------------


class UserOut(ResponseModel):
    id: str
    email: str
    name: str
    role: str
    is_active: bool
    email_verified: bool
    created_at: str
    updated_at: str


class TokenPairOut(ResponseModel):
    access_token: str
    refresh_token: str
    expires_in: int


class AuthOut(TokenPairOut):
    user: UserOut


class MessageOut(ResponseModel):
    message: str


class SessionOut(ResponseModel):
    id: str
    created_at: str
    last_used_at: str
    user_agent: str | None
    ip: str | None
    current: bool


class SessionsOut(ResponseModel):
    sessions: list[SessionOut]


AuthResponse = success_envelope(AuthOut, "AuthResponse")
TokenPairResponse = success_envelope(TokenPairOut, "TokenPairResponse")
UserResponse = success_envelope(UserOut, "UserResponse")
MessageResponse = success_envelope(MessageOut, "MessageResponse")
SessionsResponse = success_envelope(SessionsOut, "SessionsResponse")
