"""Typed settings read from the environment and `.env` (the seed's variable names)."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Development defaults. With ENV=production the services refuse to start on these.
DEFAULT_ACCESS_SECRET = "dev-access-secret-change-me-0123456789abcdef"
DEFAULT_REFRESH_SECRET = "dev-refresh-secret-change-me-0123456789abcdef"
DEFAULT_WEBHOOK_SECRET = "dev-psp-webhook-secret-change-me-0123456789"
DEFAULT_ADMIN_SESSION_SECRET = "dev-studio-session-secret-change-me-012345"
_DEFAULT_SECRETS = {
    DEFAULT_ACCESS_SECRET,
    DEFAULT_REFRESH_SECRET,
    DEFAULT_WEBHOOK_SECRET,
    DEFAULT_ADMIN_SESSION_SECRET,
}
MIN_SECRET_BYTES = 32

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | int | float) -> timedelta:
    """`15m`, `7d`, `30s`, `500ms` or a number of seconds → timedelta."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 7d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]

POOL_SERVICES = ("auth", "payments", "admin", "profile")


def parse_pool_sizes(entries: list[str]) -> dict[str, int]:
    """`GATEWAY_POOL_SIZES` entries (`payments=256`) → {service: size}; a wrong entry refuses
    the configuration instead of being ignored."""
    sizes: dict[str, int] = {}
    for entry in entries:
        service, _, size = entry.partition("=")
        service = service.strip()
        if service not in POOL_SERVICES or not size.strip().isdigit() or int(size) < 1:
            raise ValueError(
                f"GATEWAY_POOL_SIZES entry {entry!r}: use <service>=<size ≥ 1>, "
                f"service one of {', '.join(POOL_SERVICES)}"
            )
        sizes[service] = int(size)
    return sizes


class Settings(BaseSettings):
    # hide_input_in_errors: a refused configuration must not print the values (secrets).
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    env: Literal["development", "test", "production"] = "development"
    service_name: str = "paysys"
    # Where this process serves HTTP (`paysys serve` sets both to what it binds before the app
    # is created); the payment processor reports its webhooks there.
    port: int | None = None
    host: str | None = None
    log_level: str = "INFO"

    database_url: str = "postgresql://postgres@127.0.0.1:5432/paysys"
    db_pool_size: int = 10
    db_max_overflow: int = 10
    redis_url: str = "redis://127.0.0.1:6379/0"

    jwt_access_secret: str = DEFAULT_ACCESS_SECRET
    jwt_refresh_secret: str = DEFAULT_REFRESH_SECRET
    # Verify-only secrets accepted during a rotation (comma lists; docs/operations.md §9).
    jwt_access_secret_previous: CsvList = []
    jwt_refresh_secret_previous: CsvList = []
    jwt_access_expiry: str = "15m"
    jwt_refresh_expiry: str = "7d"
    jwt_issuer: str = "paysys-auth"
    jwt_audience: str = "paysys-api"
    # Absolute session lifetime (ASVS V3.3): no refresh after it, however often refreshed.
    session_max_age: str = "30d"

    # Failed-login lockout (api-contracts §3, docs/auth.md): per account and client address
    # (IPv6 per /64), and a ceiling per account across all addresses (ASVS V2.2.1).
    lockout_threshold: int = Field(default=5, ge=1)
    lockout_window: str = "15m"
    lockout_base_duration: str = "1m"
    lockout_max_duration: str = "15m"
    lockout_account_hourly_max: int = Field(default=100, ge=1)
    # Password changes per user per window (then 429).
    password_change_max: int = Field(default=5, ge=1)
    password_change_window: str = "15m"

    auth_service_url: CsvList = ["http://127.0.0.1:3001"]
    payments_service_url: CsvList = ["http://127.0.0.1:3002"]
    admin_service_url: CsvList = ["http://127.0.0.1:3003"]
    profile_service_url: CsvList = ["http://127.0.0.1:3004"]
    gateway_url: str = "http://127.0.0.1:3000"

    cors_origins: CsvList = [f"http://localhost:{port}" for port in range(4200, 4205)]
    trusted_proxies: CsvList = []
    max_body_bytes: int = 1024 * 1024
    # PUT/PATCH /api/profile carry avatar data URLs (api-contracts §6): their own, larger limit.
    profile_max_body_bytes: int = 8 * 1024 * 1024
    # Every process's HTTP server (api-contracts §2.1; core.serving): absolute deadlines for
    # the request line + headers and for the whole body (→ 408), the header block's size
    # (→ 431), idle keep-alive, open connections per client IP (IPv6 per /64; peers in
    # TRUSTED_PROXIES are not capped) and per process (→ 503).
    request_header_timeout: float = 10.0
    request_body_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    keep_alive_timeout: float = 5.0
    max_connections_per_client: int = 256
    gateway_max_connections: int = 4096

    rate_limit_max: int = 300
    rate_limit_window: int = 60
    auth_rate_limit_max: int = 10
    auth_rate_limit_window: int = 60
    upstream_timeout: float = 10.0
    circuit_failure_threshold: int = 5
    circuit_open_seconds: float = 10.0
    # Upstream pools (docs/gateway.md): one per service and gateway process, with at most this
    # many requests in flight to the service (`GATEWAY_POOL_SIZES` overrides it per service,
    # e.g. `auth=32,payments=256`); a request waits at most `GATEWAY_POOL_WAIT` seconds for a
    # slot (then 503), and one client has at most `MAX_IN_FLIGHT_PER_CLIENT` requests in flight
    # at the gateway (IPv6 per /64; then 429).
    gateway_pool_size: int = Field(default=128, ge=1)
    gateway_pool_sizes: CsvList = []
    gateway_pool_wait: float = Field(default=1.0, gt=0)
    max_in_flight_per_client: int = Field(default=64, ge=1)
    upstream_probe_interval: float = 5.0
    openapi_cache_ttl: float = 30.0
    # Real-time updates at the gateway (api-contracts §9, docs/gateway.md): WebSocket ping
    # interval, pong timeout and idle timeout (seconds), connection caps per user (all
    # replicas, WebSocket + SSE) and per process.
    ws_ping_interval: float = 30.0
    ws_pong_timeout: float = 10.0
    ws_idle_timeout: float = 90.0
    realtime_max_connections_per_user: int = 10
    realtime_max_connections: int = 10_000

    psp_webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    payments_processor: Literal["simulated", "none"] = "simulated"
    processor_delay_ms: int = 500
    # Payments: where the simulated processor posts its signed webhooks (default: this
    # service's own port), how long a claimed payment stays with one processor before another
    # may take it over, and how long a request waits for a concurrent one holding the same
    # Idempotency-Key before answering 409 IDEMPOTENCY_IN_PROGRESS.
    payments_webhook_url: str | None = None
    processor_lease_ms: int = 30000
    idempotency_wait_ms: int = 5000

    studio_session_secret: str = DEFAULT_ADMIN_SESSION_SECRET
    # `paysys db studio` refuses to start with ENV=production unless this is true.
    studio_enabled: bool = False
    background_workers: bool = True
    health_timeout: float = 2.0
    # Readiness/health results are shared for this long (one probe per dependency per period).
    health_cache_seconds: float = 1.0

    # Event hub (docs/event-hub.md): relay, consumers, dead letters, outbox retention.
    events_stream_maxlen: int = 100_000
    events_relay_batch: int = 200
    events_relay_poll_ms: int = 1000
    events_outbox_retention_hours: float = 72.0
    events_prune_interval_seconds: float = 600.0
    events_consumer_batch: int = 100
    events_block_ms: int = 1000
    events_claim_idle_ms: int = 30_000
    events_claim_interval_ms: int = 5_000
    events_max_deliveries: int = 5
    events_retry_max_ms: int = 5_000

    @field_validator(
        "auth_service_url",
        "payments_service_url",
        "admin_service_url",
        "profile_service_url",
        "cors_origins",
        "trusted_proxies",
        "gateway_pool_sizes",
        "jwt_access_secret_previous",
        "jwt_refresh_secret_previous",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("gateway_pool_sizes")
    @classmethod
    def _pool_sizes(cls, value: list[str]) -> list[str]:
        parse_pool_sizes(value)
        return value

    @field_validator(
        "jwt_access_expiry",
        "jwt_refresh_expiry",
        "session_max_age",
        "lockout_window",
        "lockout_base_duration",
        "lockout_max_duration",
        "password_change_window",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.env != "production":
            return self
        problems = []
        secrets = {
            "JWT_ACCESS_SECRET": self.jwt_access_secret,
            "JWT_REFRESH_SECRET": self.jwt_refresh_secret,
            "PSP_WEBHOOK_SECRET": self.psp_webhook_secret,
            "STUDIO_SESSION_SECRET": self.studio_session_secret,
        }
        checked = list(secrets.items())
        checked += [("JWT_ACCESS_SECRET_PREVIOUS", v) for v in self.jwt_access_secret_previous]
        checked += [("JWT_REFRESH_SECRET_PREVIOUS", v) for v in self.jwt_refresh_secret_previous]
        for name, value in checked:
            if value in _DEFAULT_SECRETS:
                problems.append(f"{name} is a development default")
            elif len(value.encode()) < MIN_SECRET_BYTES:
                problems.append(f"{name} is shorter than {MIN_SECRET_BYTES} bytes")
        # A key that verifies access tokens must never verify refresh tokens, or the reverse.
        if set(self.access_secrets) & set(self.refresh_secrets):
            problems.append("JWT access and refresh secrets (current and previous) must differ")
        if problems:
            # Never echo the values themselves: only which variable is wrong.
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def access_secrets(self) -> tuple[str, ...]:
        """The signing secret first, then the verify-only ones."""
        return (self.jwt_access_secret, *self.jwt_access_secret_previous)

    @property
    def refresh_secrets(self) -> tuple[str, ...]:
        return (self.jwt_refresh_secret, *self.jwt_refresh_secret_previous)

    @property
    def access_ttl(self) -> timedelta:
        return parse_duration(self.jwt_access_expiry)

    @property
    def refresh_ttl(self) -> timedelta:
        return parse_duration(self.jwt_refresh_expiry)

    @property
    def session_max_age_td(self) -> timedelta:
        return parse_duration(self.session_max_age)

    @property
    def async_database_url(self) -> str:
        """DATABASE_URL as given (seed style `postgresql://`) with the asyncpg driver."""
        url = self.database_url
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise ValueError("DATABASE_URL must be a postgresql:// URL")

    def service_urls(self) -> dict[str, list[str]]:
        return {
            "auth": self.auth_service_url,
            "payments": self.payments_service_url,
            "admin": self.admin_service_url,
            "profile": self.profile_service_url,
        }

    def pool_sizes(self) -> dict[str, int]:
        """Each service's upstream pool size at the gateway (`GATEWAY_POOL_SIZE`, overridden
        per service by `GATEWAY_POOL_SIZES`)."""
        sizes = dict.fromkeys(self.service_urls(), self.gateway_pool_size)
        sizes.update(parse_pool_sizes(self.gateway_pool_sizes))
        return sizes

    @property
    def is_production(self) -> bool:
        return self.env == "production"


# Each field's public env var is its upper-case name; kept here for docs/tests.
ENV_VARS = [name.upper() for name in Settings.model_fields]


@lru_cache
def get_settings() -> Settings:
    return Settings()
