"""Date bounds in list queries (api-contracts §1.3): ISO-8601 date-times or plain dates.

`startDate=2026-01-31` starts at 00:00:00Z of that day; `endDate=2026-01-31` covers that whole
UTC day. A date-time is taken as given (no offset means UTC). Every range is returned as a
half-open interval `[start, end_exclusive)` so SQL is always `created_at >= $1 AND
created_at < $2`: an inclusive date-time end becomes `end + 1 µs` (PostgreSQL's resolution).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from paysys.core.errors import ValidationFailed
from paysys.core.querymodel import Matching

_PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_MESSAGE = "must be an ISO-8601 date or date-time"
# A date parameter of a query model (core.querymodel): the shapes `_parse` reads, in ASCII.
QUERY_DATE = Matching(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}.*)?$", _MESSAGE, max_length=40
)
DATE_DESCRIPTION = (
    "ISO-8601 date (YYYY-MM-DD) or date-time (no offset: UTC), a real calendar date between "
    "the years 1900 and 9998"
)
_MICRO = timedelta(microseconds=1)
_MIN_YEAR, _MAX_YEAR = 1900, 9998


@dataclass(frozen=True, slots=True)
class DateRange:
    start: datetime | None  # inclusive
    end_exclusive: datetime | None

    @property
    def end_inclusive(self) -> datetime | None:
        return None if self.end_exclusive is None else self.end_exclusive - _MICRO


def _parse(value: str, field: str, *, end: bool) -> datetime:
    text = value.strip()
    if len(text) > 40:
        raise ValidationFailed(field, _MESSAGE)
    try:
        if _PLAIN_DATE.match(text):
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            result = moment + timedelta(days=1) if end else moment
        elif _DATETIME.match(text):
            moment = datetime.fromisoformat(text.replace("z", "Z"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC)
            result = moment + _MICRO if end else moment
        else:
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise ValidationFailed(field, _MESSAGE) from None
    if not _MIN_YEAR <= result.year <= _MAX_YEAR:
        raise ValidationFailed(field, f"must be between years {_MIN_YEAR} and {_MAX_YEAR}")
    return result


def parse_start(value: str, field: str = "startDate") -> datetime:
    """Inclusive lower bound."""
    return _parse(value, field, end=False)


def parse_end(value: str, field: str = "endDate") -> datetime:
    """Exclusive upper bound (a plain date covers its whole UTC day)."""
    return _parse(value, field, end=True)


def parse_range(
    start: str | None,
    end: str | None,
    *,
    start_field: str = "startDate",
    end_field: str = "endDate",
) -> DateRange:
    """Both bounds (each optional); start after end → 400 on the start field."""
    lower = parse_start(start, start_field) if start else None
    upper = parse_end(end, end_field) if end else None
    if lower is not None and upper is not None and lower >= upper:
        raise ValidationFailed(start_field, f"must not be after {end_field}")
    return DateRange(lower, upper)
