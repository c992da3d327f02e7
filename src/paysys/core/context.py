"""Per-request context shared by logs, events and error bodies."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)
user_agent_var: ContextVar[str | None] = ContextVar("user_agent", default=None)

# One service per process: set once by the app factory (events use it as their `source`).
_service_name = "paysys"


def set_service_name(name: str) -> None:
    global _service_name
    _service_name = name


def service_name() -> str:
    return _service_name
