"""Field rules of api-contracts §6: E.164 phones, http(s) URLs, IANA zones, ISO 4217, BCP-47.

Each function takes the (already trimmed) input and returns the canonical value to store, or
raises ValueError with a short rule message (pydantic turns it into a `details` entry).
"""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache
from urllib.parse import urlsplit

from paysys.core.money import MoneyError, parse_currency
from paysys.profile import avatars

PHONE_NOISE = re.compile(r"[\s\-.()]")
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
MAX_URL_LENGTH = 2048
# language (2-3 letters) [-Script (4 letters)] [-REGION (2 letters or 3 digits)]
BCP47 = re.compile(r"^([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?$")
THEMES = ("light", "dark", "system")


def normalize_phone(value: str) -> str:
    """`+1 (415) 555-0100` → `+14155550100`; `+` then 8-15 digits, the first not 0."""
    compact = PHONE_NOISE.sub("", value)
    if not E164.fullmatch(compact):
        raise ValueError("must be an E.164 phone number: '+' and 8-15 digits")
    return compact


def validate_http_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must be an http(s) URL")
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        raise ValueError("must be an http(s) URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError("must be an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    return value


# The value `avatarUrl` takes after an upload: a client that sends its profile back unchanged
# sends this too (the service accepts it only as the caller's current value).
AVATAR_PATH = re.compile(r"/api/profile/avatar/[0-9a-f-]{36}\?v=[0-9a-f]{32}")


def validate_avatar_url(value: str) -> str:
    """An http(s) URL, an uploaded image as a data URL (cheap checks only: type and size; the
    image itself is verified by `avatars.process`), or the stored avatar's own path."""
    if avatars.is_data_url(value):
        avatars.parse_data_url(value)
        return value
    if AVATAR_PATH.fullmatch(value):
        return value
    return validate_http_url(value)


@lru_cache(maxsize=1)
def iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(value: str) -> str:
    if value not in iana_zones():
        raise ValueError("must be an IANA time zone name such as Europe/Paris")
    return value


def normalize_language(value: str) -> str:
    """`en`, `en-US`, `zh-Hant-TW`, `es-419`; canonical case (`EN-us` → `en-US`)."""
    match = BCP47.fullmatch(value.replace("_", "-"))
    if not match:
        raise ValueError("must be a BCP-47 language tag such as en or en-US")
    language, script, region = match.groups()
    tag = language.lower()
    if script:
        tag += "-" + script.title()
    if region:
        tag += "-" + region.upper()
    return tag


def normalize_currency(value: str) -> str:
    """ISO 4217 via the one table of `paysys.core.money` (lower case accepted, upper-cased)."""
    try:
        return parse_currency(value)
    except MoneyError:
        raise ValueError("must be an ISO 4217 currency code such as USD") from None
