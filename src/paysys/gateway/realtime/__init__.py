"""Real-time updates at the gateway: WebSocket `/ws` and SSE `/api/events/stream`, fed by the
event stream (api-contracts §9; docs/gateway.md, "Real-time")."""
