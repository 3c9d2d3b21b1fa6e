"""The floor for bench/submit.py: the thinnest FastAPI endpoint doing the submit path's I/O
(read a bearer header and a JSON body, one asyncpg transaction inserting a row, one Redis
write), served under the same uvicorn settings as the gateway."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request, Response

DDL = """
CREATE TABLE IF NOT EXISTS bench_floor (
    id bigserial PRIMARY KEY,
    token text NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


def create_floor_app(database_url: str, redis_url: str) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["pool"] = await asyncpg.create_pool(database_url, min_size=2, max_size=20)
        async with state["pool"].acquire() as conn:
            await conn.execute(DDL)
        state["redis"] = aioredis.Redis.from_url(redis_url)
        yield
        await state["pool"].close()
        await state["redis"].aclose()

    # The gateway's FastAPI settings (service/app.py): no native OpenTelemetry.
    app = FastAPI(lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.post("/floor")
    async def floor(request: Request) -> Response:
        token = request.headers.get("authorization", "")
        body = await request.json()
        async with state["pool"].acquire() as conn, conn.transaction():
            row_id = await conn.fetchval(
                "INSERT INTO bench_floor (token, body) VALUES ($1, $2::jsonb) RETURNING id",
                token[-8:],
                orjson.dumps(body).decode(),
            )
        await state["redis"].lpush("bench:floor", row_id)
        return Response(orjson.dumps({"id": row_id}), media_type="application/json")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_floor_app(os.environ["QGW_DATABASE_URL"], os.environ["QGW_REDIS_URL"]),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
