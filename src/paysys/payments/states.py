"""The payment status machine (api-contracts §4): one table, used by every path that changes a
status — PATCH status, cancel, the processor and the PSP webhook.

    pending ──► processing ──► completed
       │  │          └───────► failed
       │  └──────────────────► failed
       └─────────────────────► cancelled

`completed`, `failed` and `cancelled` are terminal.
"""

from __future__ import annotations

from paysys.core.errors import Conflict

STATUSES: tuple[str, ...] = ("pending", "processing", "completed", "failed", "cancelled")
TYPES: tuple[str, ...] = ("instant", "scheduled", "recurring")
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"processing", "cancelled", "failed"}),
    "processing": frozenset({"completed", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

# Statuses that also emit their own event (`payment.completed`, …) besides status_changed.
OUTCOME_EVENTS: dict[str, str] = {
    "completed": "payment.completed",
    "failed": "payment.failed",
    "cancelled": "payment.cancelled",
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(current: str, target: str) -> None:
    """Raise 409 INVALID_STATUS_TRANSITION unless `current → target` is in the table."""
    if not can_transition(current, target):
        raise Conflict(
            "INVALID_STATUS_TRANSITION",
            f"Cannot change payment status from {current} to {target}",
        )


def path(current: str, target: str) -> list[str] | None:
    """The shortest chain of allowed steps from `current` to `target` (excluding `current`),
    or None. A PSP may report `completed` for a payment we still hold as `pending`: the
    webhook then walks pending → processing → completed, each step a real transition."""
    if current == target:
        return []
    frontier: list[tuple[str, list[str]]] = [(current, [])]
    seen = {current}
    while frontier:
        status, steps = frontier.pop(0)
        for nxt in sorted(TRANSITIONS[status]):
            if nxt in seen:
                continue
            if nxt == target:
                return [*steps, nxt]
            seen.add(nxt)
            frontier.append((nxt, [*steps, nxt]))
    return None
