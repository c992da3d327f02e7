"""Request bodies (validated, unknown fields → 400) and documented response shapes of §6."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, WithJsonSchema

from paysys.core.money import CURRENCY_SCHEMA
from paysys.core.patterns import SPACE
from paysys.core.schemas import ApiModel, ResponseModel, success_envelope
from paysys.profile import avatars
from paysys.profile import validation as rules

MAX_ADDRESS = 500
MAX_BIO = 1000

# Each rule below is stated in its JSON schema too (api-contracts §1.3): the schema's pattern or
# enum accepts exactly what the validator accepts (after the trimming every string gets).
PHONE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": 40,
    "pattern": rules.PHONE_PATTERN,
    "description": "E.164: '+' and 8-15 digits, the first not 0; spaces, dashes, dots and "
    "parentheses are ignored",
}
PhoneNumber = Annotated[str, Field(max_length=40), AfterValidator(rules.normalize_phone)]
AVATAR_URL_RULE = (
    "An http(s) URL of at most 2048 characters, or an uploaded image: a "
    "`data:image/(png|jpeg|webp|gif);base64,…` URL of at most 5 MiB decoded. The upload is "
    "decoded and verified as an image of the declared type, re-encoded to WebP of at most "
    "512x512 without metadata and stored; `avatarUrl` then reads "
    "`/api/profile/avatar/{userId}?v=<etag>` (sending that value back leaves the avatar as it "
    "is). Anything else → 400 VALIDATION_ERROR naming the reason (type, size, not an image)."
)
# Longest accepted value: the longest allowed media type with the base64 of 5 MiB.
MAX_AVATAR_URL = len("data:image/jpeg;base64,") + avatars.MAX_BASE64
AVATAR_URL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_AVATAR_URL,
    "anyOf": [
        {
            "format": "uri",
            "maxLength": rules.MAX_URL_LENGTH,
            "pattern": rules.HTTP_URL_PATTERN,
            "description": "an http(s) URL with a host, without credentials",
        },
        {
            "pattern": "^data:image/(png|jpeg|webp|gif);base64,[A-Za-z0-9+/]*={0,2}$",
            "description": "an uploaded image (must really be one of the declared type: §6)",
        },
    ],
}
# Lengths are checked by the validator, whose messages name the rule (size, 2048).
AvatarUrl = Annotated[str, AfterValidator(rules.validate_avatar_url)]
Language = Annotated[
    str,
    Field(max_length=35),
    AfterValidator(rules.normalize_language),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 35,
            "pattern": rules.BCP47_PATTERN,
            "description": "BCP 47 tag: language [-Script] [-REGION], e.g. en, en-US, zh-Hant-TW",
        }
    ),
]
Currency = Annotated[
    str,
    Field(min_length=3, max_length=3),
    AfterValidator(rules.normalize_currency),
    WithJsonSchema(CURRENCY_SCHEMA),
]
TimeZone = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(rules.validate_timezone),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": rules.timezone_pattern(),
            "description": "IANA time zone name, e.g. Europe/Paris (a name of the tz database "
            "the server ships; case-sensitive)",
        }
    ),
]
Theme = Literal["light", "dark", "system"]

DEFAULT_PREFERENCES: dict[str, Any] = {
    "theme": "system",
    "language": "en",
    "currency": "USD",
    "timezone": "UTC",
    "notifications": {"email": True, "push": False, "sms": False},
}


def _blank_is_none(value: Any) -> Any:
    # Stripe's convention: an empty string unsets an optional field, like null.
    if isinstance(value, str) and not value.strip():
        return None
    return value


Blank = BeforeValidator(_blank_is_none)


def _clearable(schema: dict[str, Any]) -> WithJsonSchema:
    """The schema of an optional field that `null` or a blank string clears."""
    blank = {"type": "string", "pattern": f"^{SPACE}*$", "maxLength": schema["maxLength"]}
    return WithJsonSchema({"anyOf": [schema, blank, {"type": "null"}]})


class ProfileUpdate(ApiModel):
    """PUT and PATCH /api/profile: every field optional; `null` or "" clears it."""

    phone_number: Annotated[PhoneNumber | None, Blank, _clearable(PHONE_SCHEMA)] = Field(
        default=None, description="E.164; spaces, dashes, dots and parentheses are ignored"
    )
    address: Annotated[str | None, Blank] = Field(default=None, max_length=MAX_ADDRESS)
    avatar_url: Annotated[AvatarUrl | None, Blank, _clearable(AVATAR_URL_SCHEMA)] = Field(
        default=None, description=AVATAR_URL_RULE
    )
    bio: Annotated[str | None, Blank] = Field(default=None, max_length=MAX_BIO)

    def changes(self) -> dict[str, str | None]:
        """Only the fields present in the request, snake_case → new value."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class NotificationsUpdate(ApiModel):
    email: StrictBool | None = None
    push: StrictBool | None = None
    sms: StrictBool | None = None


class PreferencesUpdate(ApiModel):
    """PUT and PATCH /api/profile/preferences: merged deeply into the stored preferences;
    `null` puts a field (or all of `notifications`) back to its default."""

    theme: Theme | None = None
    language: Language | None = None
    currency: Currency | None = None
    timezone: TimeZone | None = None
    notifications: NotificationsUpdate | None = None

    def patch(self) -> dict[str, Any]:
        """The request as a sparse patch (present keys only; None = back to default)."""
        patch: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, NotificationsUpdate):
                patch[name] = {key: getattr(value, key) for key in value.model_fields_set}
            else:
                patch[name] = value
        return patch


# --- documented responses -----------------------------------------------------------------


class NotificationsOut(ResponseModel):
    email: bool
    push: bool
    sms: bool


class PreferencesOut(ResponseModel):
    theme: Theme
    language: str
    currency: str
    timezone: str
    notifications: NotificationsOut


class ProfileUserOut(ResponseModel):
    id: uuid.UUID
    email: str
    name: str
    role: Literal["CUSTOMER", "VENDOR", "ADMIN"]


class ProfileOut(ResponseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    phone_number: str | None
    phone: str | None = Field(
        description="= phoneNumber: a read-only alias (the reference UI reads it); write "
        "phoneNumber"
    )
    address: str | None
    avatar_url: str | None
    bio: str | None
    preferences: PreferencesOut
    created_at: datetime
    updated_at: datetime
    user: ProfileUserOut


ProfileEnvelope = success_envelope(ProfileOut, "ProfileResponse")
PreferencesEnvelope = success_envelope(PreferencesOut, "PreferencesResponse")
