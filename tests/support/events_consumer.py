"""A consumer process for the kill drills.

`python -m tests.support.events_consumer GROUP MODE MARKER`

Uses the real `Consumer` with a recording handler (DATABASE_URL / REDIS_URL from the env).
Modes:
- `normal`: handle and acknowledge as usual;
- `hang-in-handler`: the handler records the event (uncommitted), touches MARKER, then hangs;
- `hang-before-ack`: the transaction commits, then the process touches MARKER and hangs
  before `XACK`.
The test SIGKILLs the process while it hangs.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from paysys.core.config import Settings
from paysys.core.events.consumer import Consumer, EventHandlers
from paysys.core.events.envelope import EventEnvelope
from paysys.core.runtime import Runtime
from tests.support.events import FAST, record_applied


class HangBeforeAck(Consumer):
    marker: Path

    async def ack(self, entry_ids: list[str]) -> None:
        self.marker.write_text(",".join(entry_ids))
        await asyncio.sleep(3600)


async def main(group: str, mode: str, marker: Path) -> None:
    runtime = Runtime.create(Settings(**FAST))
    handlers = EventHandlers(group)

    @handlers.on_any
    async def record(session: Any, event: EventEnvelope) -> None:
        await record_applied(session, group, event, f"{mode}")
        if mode == "hang-in-handler":
            await session.flush()
            marker.write_text(str(event.id))
            await asyncio.sleep(3600)

    if mode == "hang-before-ack":
        consumer: Consumer = HangBeforeAck(handlers, runtime, name=f"{group}-doomed")
        consumer.marker = marker  # type: ignore[attr-defined]
    else:
        consumer = Consumer(handlers, runtime, name=f"{group}-{mode}")
    print("consumer ready", flush=True)
    try:
        await consumer.run()
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
