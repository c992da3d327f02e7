"""The shared e2e stack lives only while the e2e package runs.

Package scope: its processes (relays, consumers, the payment processor) must not keep running
beside the integration tests that follow, which share the run's database and Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import base_env
from tests.support.servers import Stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The five services as real processes, shared by the e2e tests of a run."""
    running = Stack.build(base_env(), tmp_path_factory.mktemp("stack-logs"))
    running.start()
    try:
        yield running
    finally:
        running.stop()
