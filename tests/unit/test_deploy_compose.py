"""docker-compose.yml: the `infra` and `full` profiles, healthchecks, start order, one image,
only the gateway published, and every setting reaching every service (no Docker needed)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from paysys.core.config import ENV_VARS, Settings
from tests.support.deploy import COMPOSE_FILE, SECRET_VARS, SERVICES

_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}|\$\$")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `$$` rules (enough for this file)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.groups()
        if env.get(name):
            return env[name]
        assert op != "?", f"{name} is required"
        return default or ""

    return _VAR.sub(one, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env or {})


def services_in(profile: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        name: spec
        for name, spec in compose(env)["services"].items()
        if profile in spec.get("profiles", [])
    }


def test_infra_profile_is_postgres_16_and_redis_7_with_healthchecks_and_volumes() -> None:
    infra = services_in("infra")
    assert set(infra) == {"postgres", "redis"}
    assert infra["postgres"]["image"] == "postgres:16"
    assert infra["redis"]["image"] == "redis:7"
    assert infra["postgres"]["ports"] == ["127.0.0.1:5432:5432"]
    assert infra["redis"]["ports"] == ["127.0.0.1:6379:6379"]
    assert "pg_isready" in " ".join(infra["postgres"]["healthcheck"]["test"])
    assert infra["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    volumes = compose()["volumes"]
    assert infra["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert infra["redis"]["volumes"] == ["redisdata:/data"]
    assert {"pgdata", "redisdata"} <= set(volumes)
    # The host's default DATABASE_URL works against it (same user, database and port).
    assert infra["postgres"]["environment"]["POSTGRES_DB"] == "paysys"
    assert infra["postgres"]["environment"]["POSTGRES_USER"] == "postgres"
    ports = services_in("infra", {"POSTGRES_PORT": "15432", "REDIS_PORT": "16379"})
    assert ports["postgres"]["ports"] == ["127.0.0.1:15432:5432"]
    assert ports["redis"]["ports"] == ["127.0.0.1:16379:6379"]


def test_full_profile_runs_every_service_from_one_image_after_the_migration_job() -> None:
    full = services_in("full")
    assert set(full) == {"postgres", "redis", "migrate", *SERVICES}
    images = {full[name]["image"] for name in ("migrate", *SERVICES)}
    builds = {yaml.safe_dump(full[name]["build"]) for name in ("migrate", *SERVICES)}
    assert images == {"paysys:local"} and len(builds) == 1
    assert full["migrate"]["command"] == ["paysys", "db", "deploy"]
    assert full["migrate"]["restart"] == "no"
    for name in SERVICES:
        spec = full[name]
        assert spec["command"] == ["paysys", "serve", name, "--host", "0.0.0.0"]
        depends = spec["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        check = " ".join(spec["healthcheck"]["test"])
        assert "/health/ready" in check and "disable" not in spec["healthcheck"]
        assert spec["stop_signal"] == "SIGTERM"
        # Longer than uvicorn's drain (10 s) + the workers' grace (10 s).
        assert int(spec["stop_grace_period"].rstrip("s")) >= 20
    for upstream in ("auth", "payments", "admin", "profile"):
        assert full["gateway"]["depends_on"][upstream] == {"condition": "service_healthy"}
    for infra in ("postgres", "redis"):
        assert full["migrate"]["depends_on"][infra] == {"condition": "service_healthy"}


def test_only_the_gateway_publishes_a_port_and_payments_replicas_are_configurable() -> None:
    full = services_in("full")
    published = {name for name in ("migrate", *SERVICES) if full[name].get("ports")}
    assert published == {"gateway"}
    assert full["gateway"]["ports"] == ["3000:8000"]
    assert full["payments"]["deploy"]["replicas"] == "1"
    scaled = services_in("full", {"PAYMENTS_REPLICAS": "3", "GATEWAY_PORT": "8080"})
    assert scaled["payments"]["deploy"]["replicas"] == "3"
    assert scaled["gateway"]["ports"] == ["8080:8000"]


@pytest.mark.parametrize("service", ["migrate", *SERVICES])
def test_every_setting_reaches_the_service_and_builds_valid_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["environment"]
    missing = set(ENV_VARS) - set(raw)
    assert not missing, f"settings not passed to {service}: {sorted(missing)}"
    # No secret value is written in the file: they pass through from the shell / .env.
    for name in SECRET_VARS - {"DATABASE_URL", "REDIS_URL"}:
        assert raw[name] is None, f"{name} has a value in docker-compose.yml"
    # In-network addresses, never the host's 127.0.0.1 ones.
    env = compose()["services"][service]["environment"]
    assert (
        env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
    )
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["AUTH_SERVICE_URL"] == "http://auth:8000"
    # What the container would see (pass-through variables unset) is a valid configuration...
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, str(value))
    # ...is production, which refuses to start until real secrets are passed through...
    assert env["ENV"] == "production"
    with pytest.raises(ValueError, match="refusing to start in production"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    # ...and so do the development defaults of a copied .env.example.
    for name in SECRET_VARS - {"DATABASE_URL", "REDIS_URL"}:
        default = Settings.model_fields[name.lower()].default
        monkeypatch.setenv(name, default if isinstance(default, str) else "")
    with pytest.raises(ValueError, match="development default"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    for index, name in enumerate(sorted(SECRET_VARS - {"DATABASE_URL", "REDIS_URL"})):
        if not name.endswith("_PREVIOUS"):
            monkeypatch.setenv(name, f"secret-{index}-" + "x" * 40)
    monkeypatch.setenv("JWT_ACCESS_SECRET_PREVIOUS", "")
    monkeypatch.setenv("JWT_REFRESH_SECRET_PREVIOUS", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.is_production and settings.port == 8000
    assert settings.payments_service_url == ["http://payments:8000"]


def test_full_runs_in_development_only_when_asked_explicitly() -> None:
    for service in ("migrate", *SERVICES):
        assert compose()["services"][service]["environment"]["ENV"] == "production"
        # a developer's .env (ENV=development) does not downgrade it...
        assert compose({"ENV": "development"})["services"][service]["environment"]["ENV"] == (
            "production"
        )
        # ...only the compose-specific opt-in does
        opted = compose({"PAYSYS_COMPOSE_ENV": "development"})["services"][service]
        assert opted["environment"]["ENV"] == "development"


def test_several_payments_urls_can_be_handed_to_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = "http://paysys-payments-1:8000,http://paysys-payments-2:8000"
    env = services_in("full", {"PAYMENTS_URLS": urls})["gateway"]["environment"]
    monkeypatch.setenv("PAYMENTS_SERVICE_URL", env["PAYMENTS_SERVICE_URL"])
    assert Settings(_env_file=None).payments_service_url == urls.split(",")  # type: ignore[call-arg]


def test_the_interpolation_helper_follows_compose_rules() -> None:
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": "y"}) == "y"
    assert interpolate("$${A}", {"A": "y"}) == "${A}"
    with pytest.raises(AssertionError):
        interpolate("${A:?set A}", {})
