"""The admin service's write transaction (`commit_with_retry`): a deadlocked attempt is rolled
back and redone; other database errors are not retried."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from paysys.admin.service import commit_with_retry


class FakeSession:
    def __init__(self) -> None:
        self.commits = 0
        self.rollbacks = 0
        self.sync_session = SimpleNamespace(info={})  # where revocations to publish are kept

    async def commit(self) -> None:
        self.commits += 1

    async def rollback(self) -> None:
        self.rollbacks += 1


class Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def db_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("UPDATE users ...", {}, Orig(sqlstate))


async def test_deadlock_is_retried_then_committed() -> None:
    session = FakeSession()
    calls: list[int] = []

    async def operation() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise db_error("40P01")
        return "done"

    assert await commit_with_retry(session, operation) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3 and session.rollbacks == 2 and session.commits == 1


async def test_gives_up_after_three_attempts() -> None:
    session = FakeSession()

    async def operation() -> Any:
        raise db_error("40001")

    with pytest.raises(DBAPIError):
        await commit_with_retry(session, operation)  # type: ignore[arg-type]
    assert session.rollbacks == 3 and session.commits == 0


async def test_other_database_errors_are_not_retried() -> None:
    session = FakeSession()
    calls: list[int] = []

    async def operation() -> Any:
        calls.append(1)
        raise db_error("23505")

    with pytest.raises(DBAPIError):
        await commit_with_retry(session, operation)  # type: ignore[arg-type]
    assert len(calls) == 1 and session.rollbacks == 1
