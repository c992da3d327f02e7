"""The event envelope of events.md."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from paysys.core.timefmt import iso_z


def _now() -> datetime:
    return datetime.now(UTC)


class EventEnvelope(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=_now)
    source: str
    correlation_id: str | None = None
    actor_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys and `...Z` timestamps."""
        wire = self.model_dump(mode="json", by_alias=True)
        wire["occurredAt"] = iso_z(self.occurred_at)
        return wire
