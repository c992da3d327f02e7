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
from paysys.core.patterns import SPACE, SPACE_CHARS
from paysys.profile import avatars

PHONE_NOISE = re.compile(rf"[{SPACE_CHARS}\-.()]")
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
# The same rule on the value as sent (noise allowed anywhere), for the OpenAPI document.
_NOISE = rf"[{SPACE_CHARS}\-.()]*"
PHONE_PATTERN = rf"^{_NOISE}\+{_NOISE}[1-9](?:{_NOISE}[0-9]){{7,14}}{_NOISE}$"
MAX_URL_LENGTH = 2048
# http(s)://host[:port][/path?query#fragment]: an ASCII host name, IPv4 or [IPv6] address (no
# credentials), a port 1-65535, then an RFC 3986 path, query and fragment (non-ASCII and other
# characters percent-encoded, as in any URI). The validator uses this
# very pattern, so the document's rule and the server's are one.
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_PCT = r"%[0-9A-Fa-f]{2}"
_HOST = rf"(?:(?:[A-Za-z0-9._~!$&'()*+,;=-]|{_PCT})+|\[[0-9A-Fa-f:.]+\])"
_PCHAR = rf"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|{_PCT})"
HTTP_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://{_HOST}(?::{_PORT})?"
    rf"(?:/(?:{_PCHAR}|/)*)?(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?$"
)
HTTP_URL = re.compile(HTTP_URL_PATTERN)
# language (2-3 letters) [-Script (4 letters)] [-REGION (2 letters or 3 digits)]
BCP47 = re.compile(r"^([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?$")
BCP47_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?$"
THEMES = ("light", "dark", "system")


def normalize_phone(value: str) -> str:
    """`+1 (415) 555-0100` → `+14155550100`; `+` then 8-15 digits, the first not 0."""
    compact = PHONE_NOISE.sub("", value)
    if not E164.fullmatch(compact):
        raise ValueError("must be an E.164 phone number: '+' and 8-15 digits")
    return compact


def validate_http_url(value: str) -> str:
    """HTTP_URL_PATTERN decides (the document's rule); the checks after it only give a more
    precise message (credentials) or catch what urlsplit refuses (an invalid IPv6 literal)."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    authority = value.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority:
        raise ValueError("must not contain credentials")
    if not HTTP_URL.match(value):
        raise ValueError("must be an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        raise ValueError("must be an http(s) URL") from None
    if not parts.hostname:
        raise ValueError("must be an http(s) URL")
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


def timezone_pattern() -> str:
    """Exactly the known zone names (a pattern: a generator would try each member of an enum
    of hundreds), with the surrounding blanks every string may carry."""
    names = sorted(iana_zones())
    return f"^{SPACE}*(?:" + "|".join(name.replace("+", r"\+") for name in names) + f"){SPACE}*$"


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
