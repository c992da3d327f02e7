"""Contract tests: schemathesis over each service's OpenAPI document, in-process (ASGI).

For every documented operation of auth, payments, admin and profile, schemathesis generates
valid and invalid requests and checks that none answers 5xx and that every response (status,
content type, headers, body) matches what the document says. A fresh access token of a real
user is sent with each request (ADMIN for admin, VENDOR for payments so reports are reachable,
CUSTOMER otherwise), so the cases get past authentication.

Bounded: few examples per operation, no coverage or stateful phases, no shrinking; the file
runs in well under 90 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi as st_asgi

from paysys.core.config import Settings, get_settings
from paysys.core.tokens import TokenCodec

MAX_EXAMPLES = 4

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "no-shrink": True},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": False},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
        },
    }
)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]

ROLE_BY_SERVICE = {
    "auth": "CUSTOMER",
    "payments": "VENDOR",
    "admin": "ADMIN",
    "profile": "CUSTOMER",
}
PASSWORD = "Contract-Test-Pass-1"
Failures = dict[str, set[str]]


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str
    name: str
    role: str


def _in_thread(coro_factory: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()


async def _create_accounts() -> dict[str, Account]:
    from paysys.core.runtime import Runtime
    from paysys.users.accounts import create_user

    runtime = Runtime.create(get_settings())
    accounts: dict[str, Account] = {}
    try:
        async with runtime.sessionmaker() as session:
            for role in ("CUSTOMER", "VENDOR", "ADMIN"):
                user = await create_user(
                    session,
                    email=f"contract-{role.lower()}-{uuid.uuid4().hex[:8]}@example.com",
                    password=PASSWORD,
                    name=f"Contract {role.title()}",
                    role=role,
                    via="admin",
                )
                accounts[role] = Account(user.id, user.email, user.name, role)
            await session.commit()
    finally:
        await runtime.close()
    return accounts


@pytest.fixture(scope="module")
def accounts() -> dict[str, Account]:
    result: dict[str, Account] = _in_thread(_create_accounts)
    return result


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, Any]]:
    settings = Settings(background_workers=False)
    built = {
        name: importlib.import_module(f"paysys.{name}.app").create_app(settings)
        for name in ROLE_BY_SERVICE
    }
    yield built
    st_asgi.shutdown_lifespans()  # before the run's database and Redis go away


def _bearer(account: Account) -> dict[str, str]:
    """A fresh token per request: a case that logs out or revokes cannot spoil the next one."""
    token, _ = TokenCodec(get_settings()).issue_access(
        user_id=account.id,
        email=account.email,
        name=account.name,
        role=account.role,
        sid=str(uuid.uuid4()),
    )
    return {"Authorization": f"Bearer {token}"}


def _failure_texts(exc: BaseException) -> list[str]:
    """One short line per distinct failed check (no request ids, so repeats collapse)."""
    found = list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc]
    texts = []
    for failure in found:
        title = getattr(failure, "title", "") or type(failure).__name__
        message = getattr(failure, "message", None) or str(failure)
        words = " ".join(str(message).split())
        texts.append(f"{title}: {words}"[:300])
    return texts


def _fuzz(operation: Any, mode: GenerationMode, account: Account, failures: Failures) -> int:
    """Up to MAX_EXAMPLES cases of one operation in one mode; failed checks are recorded (not
    raised) so generation goes on. Returns the number of requests made."""
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @HYPOTHESIS
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        try:
            case.call_and_validate(headers=_bearer(account), checks=CHECKS)
        except (Exception, FailureGroup) as exc:
            for text in _failure_texts(exc):
                failures.setdefault(operation.label, set()).add(f"[{mode.value}] {text}")

    with contextlib.suppress(Unsatisfiable):  # nothing to generate in this mode
        run()
    return calls


def run_contract(app: Any, account: Account) -> tuple[int, Failures]:
    """Every operation, valid and invalid cases; returns (requests made, failures by operation)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    failures: Failures = {}
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            calls += _fuzz(operation, mode, account, failures)
    return calls, failures


HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("service", list(ROLE_BY_SERVICE))
def test_openapi_contract(service: str, apps: dict[str, Any], accounts: dict[str, Account]) -> None:
    calls, failures = run_contract(apps[service], accounts[ROLE_BY_SERVICE[service]])
    print(f"{service}: {calls} cases")
    assert calls > 0
    report = "\n".join(
        f"{label}: {message}"
        for label, messages in sorted(failures.items())
        for message in sorted(messages)
    )
    assert not failures, f"{service}: {len(failures)} operation(s) break the contract\n{report}"
