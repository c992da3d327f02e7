"""Event hub with real processes: SIGKILLed consumers, `paysys worker`, `paysys events tail`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from paysys.core.events.envelope import EventEnvelope
from paysys.core.events.outbox import emit
from paysys.core.events.transport import STREAM
from tests.support.events import (
    Hub,
    HubUrls,
    open_hub,
    recording_handlers,
    shared_hub_database,
    wait_for,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hub_urls(request: pytest.FixtureRequest) -> HubUrls:
    return shared_hub_database(request.config)


@pytest.fixture
async def hub(hub_urls: HubUrls) -> AsyncIterator[Hub]:
    async with open_hub(hub_urls) as opened:
        yield opened


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def spawn(
    procs: list[subprocess.Popen[str]], urls: HubUrls, args: list[str], log: Path
) -> subprocess.Popen[str]:
    env = {**os.environ, **urls.env(), "PYTHONUNBUFFERED": "1"}
    env.pop("PORT", None)
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    procs.append(proc)
    return proc


def wait_file(path: Path, proc: subprocess.Popen[str], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"process exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {path.name}: {log.read_text()[-2000:]}"
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["hang-in-handler", "hang-before-ack"])
async def test_consumer_killed_before_xack_is_redelivered_and_applied_once(
    hub: Hub, procs: list[subprocess.Popen[str]], tmp_path: Path, mode: str
) -> None:
    runtime = hub.runtime()
    ids = await hub.emit_many(runtime, 3)
    assert await hub.relay(runtime).drain() == 3

    marker, log = tmp_path / "marker", tmp_path / "consumer.log"
    victim = spawn(
        procs, hub.urls, ["-m", "tests.support.events_consumer", "kill", mode, str(marker)], log
    )
    wait_file(marker, victim, log)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    # The dead consumer holds the entries: nothing acknowledged.
    assert await hub.group_pending("kill") == 3
    if mode == "hang-in-handler":
        assert await hub.applied("kill") == {}  # its transaction died with it
    else:
        assert await hub.applied("kill") == dict.fromkeys(ids, 1)  # committed, not acked

    labels = {"consumer": "kill", "type": "config.updated"}
    duplicates = (
        REGISTRY.get_sample_value("paysys_events_handled_total", {**labels, "outcome": "duplicate"})
        or 0.0
    )
    hub.start([recording_handlers("kill", worker="rescuer").run])

    async def rescued() -> bool:
        return await hub.group_pending("kill") == 0 and len(await hub.applied("kill")) == 3

    await wait_for(rescued, 30, message="entries reclaimed from the killed consumer")
    assert await hub.applied("kill") == dict.fromkeys(ids, 1)
    redelivered_dupes = (
        REGISTRY.get_sample_value("paysys_events_handled_total", {**labels, "outcome": "duplicate"})
        or 0.0
    ) - duplicates
    assert redelivered_dupes == (3 if mode == "hang-before-ack" else 0)
    rows = await hub.conn.fetch("SELECT worker FROM events_test.applied ORDER BY n")
    expected = ["hang-before-ack"] * 3 if mode == "hang-before-ack" else ["rescuer"] * 3
    assert [r["worker"] for r in rows] == expected


async def test_paysys_worker_relays_and_events_tail_shows_the_feed(
    hub: Hub, procs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    tail_log = tmp_path / "tail.log"
    tail = spawn(
        procs,
        hub.urls,
        ["-m", "paysys.cli.events", "tail", "--json", "--count", "2", "--type", "config.*"],
        tail_log,
    )
    deadline = time.monotonic() + 60
    while "listening on events.config.*" not in tail_log.read_text():
        assert tail.poll() is None, tail_log.read_text()
        assert time.monotonic() < deadline, tail_log.read_text()
        time.sleep(0.05)

    worker_log = tmp_path / "worker.log"
    metrics_port = free_port()
    worker = spawn(
        procs,
        hub.urls,
        ["-m", "paysys.cli.worker", "auth", "--metrics-port", str(metrics_port)],
        worker_log,
    )

    runtime = hub.runtime()
    async with runtime.sessionmaker() as session, session.begin():
        import uuid

        await emit(session, "user.deleted", {"userId": str(uuid.uuid4())})
    config_ids = await hub.emit_many(runtime, 2)

    try:
        out, _ = tail.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tail got no events; worker log:\n{worker_log.read_text()[-3000:]}")
    assert tail.returncode == 0, tail_log.read_text()
    lines = out.strip().splitlines()
    assert [EventEnvelope.model_validate_json(line).id for line in lines] == config_ids

    async def all_published() -> bool:
        return await hub.pending_outbox() == 0 and await hub.redis.xlen(STREAM) == 3

    await wait_for(all_published, 30, message="worker relay published everything")

    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert 'paysys_events_published_total{type="config.updated"} 2.0' in metrics
    assert "paysys_events_outbox_backlog" in metrics

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker_log.read_text()
    assert "paysys worker auth: stopped" in worker_log.read_text()
