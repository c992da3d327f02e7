"""Processor pieces without a database: outcome, webhook body, delivery retries."""

from __future__ import annotations

import json
import uuid

import aiohttp

from paysys.payments import processor, webhooks


async def test_simulated_outcomes() -> None:
    psp = processor.SimulatedPsp()
    pid = uuid.uuid4()
    ok = await psp.decide({"id": pid, "description": "order"})
    bad = await psp.decide({"id": pid, "description": "order FAIL"})
    assert ok.status == "completed" and ok.psp_transaction_id and ok.failure_reason is None
    assert bad.status == "failed" and "FAIL" in (bad.failure_reason or "")
    body = json.loads(processor.event_body(pid, bad))
    assert body["eventId"] == f"sim_{pid}_failed" and body["failureReason"]
    assert "failureReason" not in json.loads(processor.event_body(pid, ok))


async def test_report_retries_then_gives_up_or_succeeds() -> None:
    outcome = processor.Outcome("completed", "sim_x", None)
    answers: list[object] = [aiohttp.ClientConnectionError("down"), 503, 200]
    seen: list[dict[str, str]] = []

    async def flaky(body: bytes, headers: dict[str, str]) -> int:
        seen.append(headers)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return int(answer)  # type: ignore[call-overload]

    assert await processor.report(flaky, "s", uuid.uuid4(), outcome, backoff=0) is True
    assert len(seen) == 3
    assert all(webhooks.HEADER in h for h in seen)

    async def refused(body: bytes, headers: dict[str, str]) -> int:
        return 409

    assert await processor.report(refused, "s", uuid.uuid4(), outcome, backoff=0) is True

    async def down(body: bytes, headers: dict[str, str]) -> int:
        raise OSError("refused")

    assert await processor.report(down, "s", uuid.uuid4(), outcome, backoff=0) is False


async def test_http_sender_against_a_closed_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = processor.HttpSender(f"http://127.0.0.1:{port}/x", timeout=2)
    try:
        outcome = processor.Outcome("completed", "sim_x", None)
        assert await processor.report(sender, "s", uuid.uuid4(), outcome, backoff=0) is False
    finally:
        await sender.close()
