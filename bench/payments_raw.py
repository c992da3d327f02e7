"""The ceiling: a minimal raw-ASGI + asyncpg endpoint doing one INSERT / one SELECT.

    python -m bench.payments_raw --port N   (DATABASE_URL from the environment)

No framework, no auth, no validation: what one uvicorn worker on this machine can do for a
one-query endpoint. `POST /raw` inserts a row, `GET /raw/<id>` selects it. The same answer
under `/api/payments[/<id>]`, so a gateway can be put in front of it (the gateway's toll on
the ceiling, measured beside the real service behind its own gateway).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from typing import Any

import asyncpg
import uvicorn

from paysys.core.db import raw_dsn
from paysys.core.serving import CoalescingHttpToolsProtocol

CREATE = """
CREATE TABLE IF NOT EXISTS bench_raw (
  id uuid PRIMARY KEY, amount bigint NOT NULL, currency char(3) NOT NULL,
  description text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())
"""


API_PREFIX = "/api/payments"


class RawApp:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.pool = await asyncpg.create_pool(self.dsn, min_size=10, max_size=10)
                    async with self.pool.acquire() as conn:
                        await conn.execute(CREATE)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.pool is not None:
                        await self.pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.pool is not None
        path: str = scope["path"]
        if path.startswith(API_PREFIX):
            path = "/raw" + path[len(API_PREFIX) :]
        if scope["method"] == "POST" and path == "/raw":
            raw = b""
            more = True
            while more:
                message = await receive()
                raw += message.get("body", b"")
                more = message.get("more_body", False)
            data = json.loads(raw)
            row = await self.pool.fetchrow(
                "INSERT INTO bench_raw (id, amount, currency, description) "
                "VALUES ($1, $2, $3, $4) RETURNING id, created_at",
                uuid.uuid4(),
                int(data["amount"]),
                data["currency"],
                data["description"],
            )
            body = {"id": str(row["id"]), "createdAt": row["created_at"].isoformat()}
            status = 201
        elif scope["method"] == "GET" and path.startswith("/raw/"):
            row = await self.pool.fetchrow(
                "SELECT id, amount, currency, description, created_at FROM bench_raw WHERE id = $1",
                uuid.UUID(path[5:]),
            )
            body = {"id": str(row["id"]), "amount": row["amount"], "currency": row["currency"]}
            status = 200
        else:
            body, status = {"error": "not found"}, 404
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = RawApp(raw_dsn(os.environ["DATABASE_URL"]))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # the services' server protocol (paysys.core.serving)
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
