"""The admin service's event consumer: every event becomes one audit-log row."""

from __future__ import annotations

from paysys.admin.audit import record_audit
from paysys.core.events.consumer import EventHandlers

handlers = EventHandlers("admin")
handlers.on_any(record_audit)
