"""Domain errors. Raise these anywhere; one handler (core.http) turns them into the envelope.

Every error code of api-contracts §1.4 has exactly one status here, so the same situation
yields the same answer in every service and through the gateway.
"""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE: dict[str, int] = {
    "VALIDATION_ERROR": 400,
    "INVALID_JSON": 400,
    "INVALID_SIGNATURE": 400,
    "UNAUTHORIZED": 401,
    "TOKEN_EXPIRED": 401,
    "TOKEN_INVALID": 401,
    "INVALID_CREDENTIALS": 401,
    "TOKEN_REUSED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "USER_NOT_FOUND": 404,
    "PAYMENT_NOT_FOUND": 404,
    "RECIPIENT_NOT_FOUND": 404,
    "SESSION_NOT_FOUND": 404,
    "CONFIG_KEY_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "REQUEST_TIMEOUT": 408,
    "EMAIL_EXISTS": 409,
    "INVALID_STATUS_TRANSITION": 409,
    "IDEMPOTENCY_IN_PROGRESS": 409,
    "CANNOT_MODIFY_SELF": 409,
    "LAST_ADMIN": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "ACCOUNT_LOCKED": 423,
    "UPGRADE_REQUIRED": 426,
    "RATE_LIMIT_EXCEEDED": 429,
    "HEADERS_TOO_LARGE": 431,
    "INTERNAL_ERROR": 500,
    "BAD_GATEWAY": 502,
    "SERVICE_UNAVAILABLE": 503,
    "GATEWAY_TIMEOUT": 504,
}


class AppError(Exception):
    """An expected failure with a stable code; its status comes from STATUS_BY_CODE."""

    def __init__(
        self,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {code}")
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS_BY_CODE[self.code]


class ValidationFailed(AppError):
    """400 VALIDATION_ERROR for one field (rules checked outside pydantic)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            "VALIDATION_ERROR",
            f"{field}: {message}",
            details=[{"field": field, "message": message}],
        )


class NotFound(AppError):
    def __init__(self, code: str = "NOT_FOUND", message: str = "Not found") -> None:
        super().__init__(code, message)


class Forbidden(AppError):
    def __init__(self, message: str = "You are not allowed to do this") -> None:
        super().__init__("FORBIDDEN", message)


class Unauthorized(AppError):
    def __init__(
        self, code: str = "UNAUTHORIZED", message: str = "Authentication required"
    ) -> None:
        super().__init__(code, message)


class Conflict(AppError):
    pass


class ServiceUnavailable(AppError):
    def __init__(self, message: str = "A dependency is unavailable") -> None:
        super().__init__("SERVICE_UNAVAILABLE", message)
