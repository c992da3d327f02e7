"""Contract tests: schemathesis over the whole API, as the gateway serves it.

The five services run as real processes (tests.support.servers.Stack, the run's PostgreSQL and
Redis); schemathesis loads the gateway's merged `/openapi.json` over HTTP and runs its engine
(what `schemathesis run` runs) with every check (`-c all`) and every phase (examples, coverage,
fuzzing, stateful), once per role (CUSTOMER, VENDOR, ADMIN) with a long-lived access token of a
real user. Operations that end the token they are called with (logout, password change, ending a
session) are left out of those runs and get their own run in which every case logs in afresh.
Any failed check, and any engine error, fails the test; all are reported together.

Bounded for CI: CONTRACT_EXAMPLES cases per operation and phase (default 5), stateful scenarios
of at most CONTRACT_STATEFUL_STEPS steps (default 6), no shrinking, a fixed seed. Locally:
`CONTRACT_EXAMPLES=40` (docs/contract-tests.md).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.engine
from schemathesis.engine import events

from paysys.core.config import get_settings
from tests.conftest import base_env
from tests.support.cli import seeded_database
from tests.support.servers import RedisServer, Stack, free_port

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "5"))
STATEFUL_STEPS = int(os.environ.get("CONTRACT_STATEFUL_STEPS", "6"))
SEED = int(os.environ.get("CONTRACT_SEED", "20261207"))
PASSWORD = "Contract-Test-Pass-1"
# One run per test; many more examples (CONTRACT_EXAMPLES) need more than the suite's 300 s.
pytestmark = pytest.mark.timeout(max(300, 15 * EXAMPLES))

# Operations that end the token they are sent with: never in a run with a long-lived token.
TOKEN_ENDING = r"^/api/auth/(logout|password|sessions/\{[^}]+\})$"

# The stack is the real one; only the limits that would throttle one fast client are lifted
# (rate limits, lockouts, password-change throttle), so every case reaches the handlers.
STACK_ENV = {
    "RATE_LIMIT_MAX": "1000000",
    "AUTH_RATE_LIMIT_MAX": "1000000",
    "LOCKOUT_THRESHOLD": "1000000",
    "LOCKOUT_ACCOUNT_HOURLY_MAX": "1000000",
    "PASSWORD_CHANGE_MAX": "1000000",
}

# §10 of the contract: rules JSON Schema cannot state (each named in its operation's
# description). A schema-valid request may break one of them, so for these operations the
# positive-data check also accepts the 400 that rule answers; everything else is in the schema.
SEMANTIC_400 = [
    # exactly one recipient field, not oneself, recipient active; per-currency amount limits
    ("POST", "/api/payments"),
    # password not equal to the email
    ("POST", "/api/auth/register"),
    ("POST", "/api/admin/users"),
    ("PUT", "/api/auth/password"),
    ("POST", "/api/auth/password"),
    # a configuration value's own rule (e.g. minAmount ≤ maxAmount)
    ("PUT", "/api/admin/config"),
    ("PUT", "/api/admin/config/{key}"),
    # the HMAC signature of the body, `t` within 300 s
    ("POST", "/api/payments/webhooks/psp"),
    # rules between query parameters: a real calendar date, start before end, one of each
    # alias pair (startDate/fromDate), minAmount ≤ maxAmount and amounts by the currency's digits
    ("GET", "/api/payments"),
    ("GET", "/api/admin/payments"),
    ("GET", "/api/payments/reports"),
    # ... and an audit action must be one the log knows (GET /api/admin/audit-logs/actions)
    ("GET", "/api/admin/audit-logs"),
    # an uploaded avatar must really be an image of its declared type (§6)
    ("PUT", "/api/profile"),
    ("PATCH", "/api/profile"),
]
POSITIVE_EXPECTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]


def _config(headers: dict[str, str] | None, *, token_ending: bool) -> schemathesis.Config:
    """`-c all`, every phase; only the token-ending operations (token_ending=True) or only the
    others."""
    side = "exclude-path-regex" if token_ending else "include-path-regex"
    operations: list[dict[str, Any]] = [{side: TOKEN_ENDING, "enabled": False}]
    operations += [
        {
            "include-method": method,
            "include-path": path,
            "checks": {
                "positive_data_acceptance": {"expected-statuses": [*POSITIVE_EXPECTED, "400"]}
            },
        }
        for method, path in SEMANTIC_400
    ]
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "continue-on-failure": True,
            "headers": headers or {},
            "request-timeout": 15,
            "generation": {"mode": "all", "max-examples": EXAMPLES, "no-shrink": True},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
            },
            "checks": {"enabled": True},
            "operations": operations,
        }
    )


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str
    role: str


async def _create_accounts(infra: dict[str, str]) -> dict[str, Account]:
    from paysys.core.runtime import Runtime
    from paysys.users.accounts import create_user

    settings = get_settings().model_copy(
        update={"database_url": infra["DATABASE_URL"], "redis_url": infra["REDIS_URL"]}
    )
    runtime = Runtime.create(settings)
    accounts: dict[str, Account] = {}
    try:
        async with runtime.sessionmaker() as session:
            for label, role in (
                ("CUSTOMER", "CUSTOMER"),
                ("VENDOR", "VENDOR"),
                ("ADMIN", "ADMIN"),
                ("FRESH", "CUSTOMER"),
            ):
                user = await create_user(
                    session,
                    email=f"contract-{label.lower()}-{uuid.uuid4().hex[:8]}@example.com",
                    password=PASSWORD,
                    name=f"Contract {label.title()}",
                    role=role,
                    via="admin",
                )
                accounts[label] = Account(user.id, user.email, role)
            await session.commit()
    finally:
        await runtime.close()
    return accounts


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Its own database and Redis: the ADMIN run changes the system config (the amount
    limits), deletes users and fills rate-limit buckets, and none of that may reach the tests
    that follow in the run."""
    redis_server = RedisServer(free_port(), tmp_path_factory.mktemp("contract-redis"))
    redis_server.start()
    try:
        with seeded_database("contract") as url:
            yield {"DATABASE_URL": url, "REDIS_URL": redis_server.url}
    finally:
        redis_server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, infra: dict[str, str]) -> Iterator[str]:
    env = {**STACK_ENV, **infra}
    stack = Stack.build(base_env(), tmp_path_factory.mktemp("contract-stack"), extra_env=env)
    stack.start()
    try:
        yield stack.url()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def accounts(infra: dict[str, str]) -> dict[str, Account]:
    with ThreadPoolExecutor(1) as pool:
        created: dict[str, Account] = pool.submit(asyncio.run, _create_accounts(infra)).result()
    return created


def login(gateway: str, account: Account) -> str:
    response = httpx.post(
        f"{gateway}/api/auth/login",
        json={"email": account.email, "password": PASSWORD},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["data"]["accessToken"]
    return token


def _failures(recorder: Any) -> list[str]:
    found = []
    for nodes in recorder.checks.values():
        for node in nodes:
            if node.failure_info is None:
                continue
            failure = node.failure_info.failure
            message = " ".join(str(failure.message).split())[:300]
            sample = node.failure_info.code_sample.replace("\n", " ")[:300]
            found.append(f"{failure.code} {failure.title}: {message} | {sample}")
    return found


def run_engine(schema: Any) -> tuple[int, dict[str, set[str]]]:
    """Run every phase; returns (scenarios run, distinct failures by operation). Prints the
    seconds each phase took (with `-s`)."""
    findings: dict[str, set[str]] = {}
    scenarios = 0
    started: dict[str, float] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.PhaseStarted):
            started[event.phase.name.value] = time.monotonic()
        elif isinstance(event, events.PhaseFinished) and event.phase.name.value in started:
            took = time.monotonic() - started[event.phase.name.value]
            print(f"  {event.phase.name.value}: {took:.1f} s")
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            scenarios += 1
            label = getattr(event.recorder, "label", "?")
            for text in _failures(event.recorder):
                findings.setdefault(label, set()).add(text)
        elif isinstance(event, events.NonFatalError):
            findings.setdefault(event.label, set()).add(f"error: {event.info.message}"[:400])
        elif isinstance(event, events.FatalError):
            raise event.exception
    return scenarios, findings


def _report(findings: dict[str, set[str]]) -> str:
    return "\n".join(
        f"{label}: {text}" for label, texts in sorted(findings.items()) for text in sorted(texts)
    )


def _check(name: str, scenarios: int, findings: dict[str, set[str]], started: float) -> None:
    count = sum(len(texts) for texts in findings.values())
    print(f"{name}: {scenarios} scenarios, {count} findings, {time.monotonic() - started:.0f} s")
    assert scenarios > 0
    assert not findings, f"{name}: {count} contract finding(s)\n{_report(findings)}"


def test_token_ending_operations_with_fresh_tokens(
    gateway: str, accounts: dict[str, Account]
) -> None:
    """Logout, password change and ending a session, each case with a token of its own (a real
    login), so a case that ends its token never spoils the next."""
    started = time.monotonic()
    config = _config(None, token_ending=True)
    schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json", config=config)
    account = accounts["FRESH"]

    @schema.auth(refresh_interval=None)
    class FreshLogin:
        def get(self, case: Any, context: Any) -> str:
            return login(gateway, account)

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    scenarios, findings = run_engine(schema)
    _check("token-ending operations", scenarios, findings, started)


# ADMIN last: its run may deactivate, demote or delete other users (never itself: 409).
@pytest.mark.parametrize("role", ["CUSTOMER", "VENDOR", "ADMIN"])
def test_openapi_contract(gateway: str, accounts: dict[str, Account], role: str) -> None:
    started = time.monotonic()
    token = login(gateway, accounts[role])
    config = _config({"Authorization": f"Bearer {token}"}, token_ending=False)
    schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json", config=config)
    scenarios, findings = run_engine(schema)
    _check(role, scenarios, findings, started)
