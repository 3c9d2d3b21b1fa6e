"""The Qingbo simulator: the endpoints, validation, shapes and lifecycle of both generations
of Qingbo's API (qingbo-api.md), switchable at run time.

Tasks progress with wall time (queued, then processing with rising progress, then
completed or failed); callbacks are real HTTP POSTs; result links serve small real MP4s.
`/_sim/*` lets tests steer it and see exactly what it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service.catalog.document import CatalogError
from service.catalog.engine import Catalog, compile_catalog, shipped_catalog
from service.catalog.generations import LATEST
from service.catalog.price_table import (
    PriceTable,
    PriceTableError,
    load_price_table,
    parse_price_table,
)
from service.platform.errors import ServiceError, validation_error
from service.platform.heap import freeze_startup_heap
from service.platform.http_client import aiohttp_client
from service.simulator.engine import Simulator, qingbo_error
from service.simulator.quote import add_quote_route
from service.simulator.state import (
    TERMINAL,
    SimConfig,
    SimConfigPatch,
    SimTask,
    mp4_bytes,
    mp4_chunks,
    mp4_size,
    playable_mp4,
    submit_answer,
)

logger = logging.getLogger(__name__)
_PREFER_WAIT = re.compile(r"wait\s*=\s*(\d+)")


def create_simulator_app(
    *,
    api_key: str | None = None,
    base_url: str = "",
    api_version: str = LATEST,
    prices: PriceTable | None = None,
    catalog: Catalog | None = None,
) -> FastAPI:
    sim = Simulator(
        api_key=api_key,
        base_url=base_url,
        api_version=api_version,
        prices=prices or load_price_table(),
        catalog=catalog or shipped_catalog(),
    )

    async def lifespan(app: FastAPI) -> Any:
        # Callbacks wait for a free connection rather than fail: with thousands of tasks
        # ending together, a burst queues here, as a real sender's would. On aiohttp's pool
        # (service/platform/http_client.py): on httpcore, sending callbacks took most of the
        # simulator's CPU with thousands of tasks in flight (docs/decisions/016).
        sim.http = aiohttp_client(timeout=httpx.Timeout(5, pool=None))
        freeze_startup_heap()  # its pauses would delay callbacks the benchmarks time
        yield
        for task in sim.tasks.values():
            for cb in task.callbacks:
                cb.cancel()
        await sim.http.aclose()

    # No native OpenTelemetry, as the gateway (service/app.py): it asks the providers on
    # every request, and the simulator shares the benchmarks' cores.
    app = FastAPI(
        title="Qingbo simulator",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.sim = sim

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return qingbo_error(400, err.message, "invalid_request")

    def authorized(authorization: str | None) -> JSONResponse | None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or (sim.api_key and not secrets.compare_digest(token, sim.api_key)):
            return qingbo_error(401, "invalid API key", "unauthorized")
        return None

    def injected_failure() -> JSONResponse | None:
        roll = random.random()
        if roll < sim.config.http_429_rate:
            return qingbo_error(429, "rate limit exceeded", "rate_limited", {"Retry-After": "1"})
        if roll < sim.config.http_429_rate + sim.config.http_5xx_rate:
            return qingbo_error(500, "internal server error", "internal_error")
        return None

    async def answer_as_qingbo_would(authorization: str | None) -> JSONResponse | None:
        """Auth, injected latency and injected failures, as Qingbo would show them."""
        denied = authorized(authorization)
        if denied is not None:
            return denied
        if sim.config.latency_ms:
            await asyncio.sleep(sim.config.latency_ms / 1000)
        return injected_failure()

    async def submit(request: Request, authorization: str | None, key: str | None) -> Any:
        """Create (or, for a known Idempotency-Key, find) a task; None-free answer or error."""
        denied = authorized(authorization) or injected_failure()
        if denied is not None:
            return denied
        if sim.config.submit_status is not None:
            status = sim.config.submit_status
            codes = {400: "invalid_request", 401: "unauthorized", 402: "insufficient_balance"}
            return qingbo_error(status, f"simulated HTTP {status}", codes.get(status, "error"))
        try:
            raw = await request.json()
        except ValueError:
            return qingbo_error(400, "body: not valid JSON", "invalid_request")
        task = sim.replay(key)
        if task is None:
            asked = sim.validate(raw)
            if isinstance(asked, JSONResponse):
                return asked
            try:
                price = sim.price(asked)
            except ServiceError as unpriced:  # Qingbo: a permanent 500 at submit
                return qingbo_error(500, unpriced.message, "price_not_configured")
            kept_key = key if sim.gen.idempotency_keys else None
            task = sim.create(raw, price, kept_key, action=sim.action_of(raw, asked))
        if sim.config.latency_ms:  # after creating: a timeout now leaves the outcome unknown
            await asyncio.sleep(sim.config.latency_ms / 1000)
        return task

    @app.post("/v1/tasks")
    async def create_task(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
        prefer: Annotated[str | None, Header()] = None,
    ) -> Any:
        task = await submit(request, authorization, idempotency_key)
        if not isinstance(task, SimTask):
            return task
        match = _PREFER_WAIT.search(prefer or "") if sim.gen.prefer_wait else None
        if match is None:
            return sim.answer(submit_answer(task, wire=sim.wire))
        await _wait(task, min(60.0, float(match.group(1))))
        answer = sim.render(task)
        billing = sim.wire.billing
        if answer["status"] not in TERMINAL and billing is not None:
            answer[billing.reserved] = task.quota
        return JSONResponse(answer, headers={"Preference-Applied": f"wait={match.group(1)}"})

    async def _wait(task: SimTask, seconds: float) -> None:
        await asyncio.sleep(min(seconds, max(0.0, task.finished_at() - time.time() + 0.01)))

    async def lookup(task_id: str, authorization: str | None) -> SimTask | JSONResponse:
        denied = await answer_as_qingbo_would(authorization)
        if denied is not None:
            return denied
        task = sim.tasks.get(task_id)
        if task is not None:
            return task
        return qingbo_error(404, "task not found", sim.wire.errors.task_not_found)

    @app.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str, authorization: Annotated[str | None, Header()] = None) -> Any:
        task = await lookup(task_id, authorization)
        if isinstance(task, JSONResponse):
            return task
        task.reads += 1
        return sim.answer(sim.render(task))

    @app.post("/v1/tasks/{task_id}/cancel")
    async def cancel_task(
        task_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        task = await lookup(task_id, authorization)
        if isinstance(task, JSONResponse):
            return task
        status, _ = task.status_at(time.time())
        if status != "queued":
            errors = sim.wire.errors
            return qingbo_error(
                errors.not_cancellable_status,
                f"only queued tasks can be cancelled (task is {status})",
                errors.not_cancellable,
            )
        if sim.config.cancel_ignored:  # a 2xx that did not happen: only a read tells
            return sim.cancel_answer(task, refunded_quota=None)
        task.cancelled_at = time.time()
        url = task.request.get("callback_url")
        events = task.request.get("callback_events") or list(TERMINAL)
        if url and "cancelled" in events and sim.config.send_callbacks:
            task.callbacks.append(asyncio.create_task(sim.send_callback(task, url)))
        return sim.cancel_answer(task, refunded_quota=task.quota)

    @app.post("/v1/tasks/sync")
    async def sync_task(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        timeout: Annotated[float, Query(ge=0, le=600)] = 60,
    ) -> Any:
        if sim.gen.prefer_wait:  # 2026-09 removed this page for Prefer: wait
            return qingbo_error(404, "not found", "not_found")
        task = await submit(request, authorization, None)
        if not isinstance(task, SimTask):
            return task
        await _wait(task, timeout)
        answer = sim.render(task)
        if answer["status"] not in TERMINAL:
            answer["poll_url"] = f"{sim.base_url}/v1/tasks/{task.task_id}"
        return answer

    @app.get("/_sim/videos/{name}")
    async def video(name: str) -> Response:
        task = sim.tasks.get(name.removesuffix(".mp4"))
        if task is None or task.status_at(time.time())[0] != "completed":
            return qingbo_error(404, "no such file", "not_found")
        if time.time() > task.finished_at() + sim.config.result_ttl():
            return qingbo_error(404, "the file has expired and was deleted", "not_found")
        task.downloads += 1
        if (
            task.downloads <= sim.config.download_failures_per_video
            or random.random() < sim.config.download_fail_rate
        ):
            return qingbo_error(503, "storage unavailable (simulated)", "upstream_unavailable")
        if sim.config.playable_videos:
            return Response(playable_mp4(task.task_id), media_type="video/mp4")
        size, rate = sim.config.video_bytes, sim.config.download_bytes_per_second
        if not size and not rate:
            return Response(mp4_bytes(task.task_id), media_type="video/mp4")

        async def chunks() -> AsyncIterator[bytes]:
            step = min(rate, 256 * 1024) if rate else 1024 * 1024
            for part in mp4_chunks(task.task_id, size, chunk=max(32, step)):
                yield part
                if rate:
                    await asyncio.sleep(len(part) / rate)  # the drip itself

        length = str(mp4_size(task.task_id, size))
        return StreamingResponse(
            chunks(), media_type="video/mp4", headers={"Content-Length": length}
        )

    @app.get("/_sim/config")
    async def get_config() -> SimConfig:
        return sim.config

    @app.put("/_sim/config")
    async def put_config(patch: SimConfigPatch) -> SimConfig:
        for name in patch.model_fields_set:
            setattr(sim.config, name, getattr(patch, name))
        return sim.config

    @app.put("/_sim/prices", response_model=None)
    async def put_prices(table: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        """Replace the price table Qingbo bills by (same format as QGW_PRICE_TABLE)."""
        try:
            sim.prices = parse_price_table(table)
        except PriceTableError as exc:
            return qingbo_error(400, str(exc), "invalid_request")
        return {"models": sorted(sim.prices.per_second_micros)}

    @app.put("/_sim/catalog", response_model=None)
    async def put_catalog(document: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        """Replace the catalog this simulator validates and bills by (one whole document,
        as service/catalog/document.py builds it); a bad one is refused whole."""
        try:
            sim.catalog = compile_catalog(document)
        except CatalogError as exc:
            return qingbo_error(400, str(exc), "invalid_request")
        return {"digest": sim.catalog.digest, "models": sorted(sim.catalog.models)}

    @app.get("/_sim/tasks")
    async def list_tasks() -> dict[str, Any]:
        """Every task created, once, with the exact body and how many POSTs carried its key."""
        now = time.time()
        return {
            "tasks": [
                {
                    "task_id": t.task_id,
                    "status": t.status_at(now)[0],
                    "request": t.request,
                    "received_at": int(t.received_at * 1000),
                    "finished_at": int(t.finished_at() * 1000),
                    "reads": t.reads,
                    "idempotency_key": t.idempotency_key,
                    "submissions": t.submissions,
                    "cost": t.quota,
                }
                for t in sim.tasks.values()
            ]
        }

    @app.post("/_sim/reset")
    async def reset() -> dict[str, bool]:
        for task in sim.tasks.values():
            for cb in task.callbacks:
                cb.cancel()
        sim.tasks.clear()
        sim.keys.clear()
        sim.config = SimConfig(api_version=sim.default_version)
        sim.prices = sim.default_prices
        sim.catalog = sim.default_catalog
        return {"ok": True}

    add_quote_route(app, sim)
    return app
