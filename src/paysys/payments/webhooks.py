"""PSP webhook signatures (api-contracts §4).

`PSP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with
PSP_WEBHOOK_SECRET>`. Missing, malformed or wrong signatures, and a `t` more than 300 s away
from now (either direction), are refused with 400 INVALID_SIGNATURE. Several `v1` entries are
accepted (secret rotation: any one matching is enough). The comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from paysys.core.errors import AppError

HEADER = "PSP-Signature"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
TOLERANCE_SECONDS = 300


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value for `body` (used by the simulated processor and by tests)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _invalid(message: str) -> AppError:
    return AppError("INVALID_SIGNATURE", message)


def verify(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Check the signature of `body`; returns its timestamp or raises INVALID_SIGNATURE."""
    if not header:
        raise _invalid("Missing PSP-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        # ASCII digits only: `str.isdigit` also takes `²` or `٣`, which `int` refuses or reads.
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and _HEX64.match(value.strip().lower()):
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise _invalid("Malformed PSP-Signature header")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise _invalid("PSP-Signature timestamp is outside the tolerance")
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise _invalid("PSP-Signature does not match")
    return timestamp
