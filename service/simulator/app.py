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
from pydantic import ValidationError

from service.catalog.generations import Generation, generation
from service.catalog.models import (
    PriceTable,
    PriceTableError,
    load_price_table,
    parse_price_table,
)
from service.catalog.rules import NormalizedTask, normalize
from service.catalog.schemas import TaskRequest
from service.errors import ServiceError, validation_error
from service.simulator.state import (
    IDEMPOTENCY_WINDOW_SECONDS,
    TERMINAL,
    SimConfig,
    SimConfigPatch,
    SimTask,
    billed_quota,
    mp4_bytes,
    mp4_chunks,
    mp4_size,
    render,
    strange,
    submit_answer,
)

logger = logging.getLogger(__name__)
_PREFER_WAIT = re.compile(r"wait\s*=\s*(\d+)")


def _error(
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "code": code}
    if param is not None:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class Simulator:
    def __init__(
        self, *, api_key: str | None, base_url: str, api_version: str, prices: PriceTable
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.default_version = api_version
        self.prices = self.default_prices = prices
        self.config = SimConfig(api_version=api_version)
        self.tasks: dict[str, SimTask] = {}
        self.keys: dict[str, str] = {}  # Idempotency-Key -> task id
        self.http: httpx.AsyncClient | None = None

    @property
    def gen(self) -> Generation:
        return generation(self.config.api_version)

    def render(self, task: SimTask) -> dict[str, Any]:
        return render(
            task,
            version=self.config.api_version,
            base_url=self.base_url,
            result_ttl=self.config.result_ttl(),
        )

    def answer(self, body: dict[str, Any]) -> Any:
        """What Qingbo sends for `body`, strange when the simulator is told to be."""
        if self.config.strange_answers:
            return Response(strange(body), media_type="application/json")
        return body

    def validate(self, raw: Any) -> NormalizedTask | JSONResponse:
        """Refuse what this generation does not take, as it does: 2026-09 names an undeclared
        field with `capability_violation` (never billed); rules are `invalid_request`."""
        gen = self.gen
        if not isinstance(raw, dict):
            return _error(400, "body: must be a JSON object", "invalid_request")
        current = gen.idempotency_keys  # the 2026-09 documents capability_violation
        try:
            spec = gen.model(str(raw.get("model", "")))
        except ServiceError as err:
            return _error(400, err.message, "invalid_request", param="model")
        accepted = gen.accepted_fields(spec)
        for name, value in raw.items():
            if name == "extra" and current and value in ({}, None):
                continue
            if name not in accepted or (current and name == "action" and value != "generate"):
                code = "capability_violation" if current else "invalid_request"
                return _error(400, f"{name}: not accepted by {spec.id}", code, param=name)
        try:
            req = TaskRequest.model_validate({k: v for k, v in raw.items() if k != "extra"})
            return normalize(req, gen)
        except ValidationError as exc:
            invalid = validation_error(RequestValidationError(exc.errors()))
            return _error(400, invalid.message, "invalid_request", param=invalid.param)
        except ServiceError as refused:
            return _error(400, refused.message, "invalid_request", param=refused.param)

    def schedule_callbacks(self, task: SimTask) -> None:
        url = task.request.get("callback_url")
        if not url or not self.config.send_callbacks:
            return
        events = task.request.get("callback_events") or list(TERMINAL)
        moments = {
            "processing": task.received_at + task.queue_seconds,
            "completed": task.finished_at(),
            "failed": task.finished_at(),
        }
        expected_terminal = "failed" if task.will_fail else "completed"
        for event, at in moments.items():
            if event in events and event in ("processing", expected_terminal):
                task.callbacks.append(asyncio.create_task(self._callback_at(task, url, at)))

    async def _callback_at(self, task: SimTask, url: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        if task.cancelled_at is not None or not self.config.send_callbacks:
            return
        await self.send_callback(task, url)

    async def send_callback(self, task: SimTask, url: str) -> None:
        assert self.http is not None
        try:
            await self.http.post(url, json=self.render(task))
        except httpx.HTTPError as exc:
            logger.warning("simulator callback failed: %s", type(exc).__name__)

    def create(self, raw: dict[str, Any], asked: NormalizedTask, key: str | None) -> SimTask:
        request = asked.request
        price = self.prices.price_micros(asked.model.id, request["resolution"], request["duration"])
        task = SimTask(
            task_id=f"task-sim{int(time.time())}{secrets.token_hex(6)}",
            request=raw,
            received_at=time.time(),
            queue_seconds=self.config.queue_seconds,
            processing_seconds=self.config.processing_seconds,
            will_fail=random.random() < self.config.fail_rate,
            quota=billed_quota(price, self.config.bill_factor),
            idempotency_key=key,
        )
        self.tasks[task.task_id] = task
        if key is not None:
            self.keys[key] = task.task_id
        self.schedule_callbacks(task)
        return task

    def replay(self, key: str | None) -> SimTask | None:
        """The task an Idempotency-Key already made within Qingbo's 24 h window."""
        if key is None or not self.gen.idempotency_keys or key not in self.keys:
            return None
        task = self.tasks[self.keys[key]]
        if time.time() - task.received_at > IDEMPOTENCY_WINDOW_SECONDS:
            return None
        task.submissions += 1
        return task


def create_simulator_app(
    *,
    api_key: str | None = None,
    base_url: str = "",
    api_version: str = "2026-09",
    prices: PriceTable | None = None,
) -> FastAPI:
    sim = Simulator(
        api_key=api_key,
        base_url=base_url,
        api_version=api_version,
        prices=prices or load_price_table(),
    )

    async def lifespan(app: FastAPI) -> Any:
        sim.http = httpx.AsyncClient(timeout=5)
        yield
        for task in sim.tasks.values():
            for cb in task.callbacks:
                cb.cancel()
        await sim.http.aclose()

    app = FastAPI(title="Qingbo simulator", lifespan=lifespan)
    app.state.sim = sim

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return _error(400, err.message, "invalid_request")

    def authorized(authorization: str | None) -> JSONResponse | None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or (sim.api_key and not secrets.compare_digest(token, sim.api_key)):
            return _error(401, "invalid API key", "unauthorized")
        return None

    def injected_failure() -> JSONResponse | None:
        roll = random.random()
        if roll < sim.config.http_429_rate:
            return _error(429, "rate limit exceeded", "rate_limited", {"Retry-After": "1"})
        if roll < sim.config.http_429_rate + sim.config.http_5xx_rate:
            return _error(500, "internal server error", "internal_error")
        return None

    async def gate(authorization: str | None) -> JSONResponse | None:
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
            return _error(status, f"simulated HTTP {status}", codes.get(status, "error"))
        try:
            raw = await request.json()
        except ValueError:
            return _error(400, "body: not valid JSON", "invalid_request")
        task = sim.replay(key)
        if task is None:
            asked = sim.validate(raw)
            if isinstance(asked, JSONResponse):
                return asked
            model = asked.model.id
            if not sim.prices.is_priced(model):
                return _error(500, f"no price configured for {model}", "price_not_configured")
            task = sim.create(raw, asked, key if sim.gen.idempotency_keys else None)
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
            return sim.answer(submit_answer(task, version=sim.config.api_version))
        await _wait(task, min(60.0, float(match.group(1))))
        answer = sim.render(task)
        if answer["status"] not in TERMINAL:
            answer["pre_consumed_cost"] = task.quota
        return JSONResponse(answer, headers={"Preference-Applied": f"wait={match.group(1)}"})

    async def _wait(task: SimTask, seconds: float) -> None:
        await asyncio.sleep(min(seconds, max(0.0, task.finished_at() - time.time() + 0.01)))

    async def lookup(task_id: str, authorization: str | None) -> SimTask | JSONResponse:
        denied = await gate(authorization)
        if denied is not None:
            return denied
        task = sim.tasks.get(task_id)
        if task is not None:
            return task
        code = "task_not_found" if sim.gen.idempotency_keys else "not_found"
        return _error(404, "task not found", code)

    @app.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str, authorization: Annotated[str | None, Header()] = None) -> Any:
        task = await lookup(task_id, authorization)
        return task if isinstance(task, JSONResponse) else sim.answer(sim.render(task))

    @app.post("/v1/tasks/{task_id}/cancel")
    async def cancel_task(
        task_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        task = await lookup(task_id, authorization)
        if isinstance(task, JSONResponse):
            return task
        status, _ = task.status_at(time.time())
        if status != "queued":
            refusal = sim.gen.not_cancellable_status
            code = "task_not_cancellable" if refusal == 400 else "not_cancellable"
            return _error(refusal, f"only queued tasks can be cancelled (task is {status})", code)
        if sim.config.cancel_ignored:  # a 2xx that did not happen: only a read tells
            if sim.gen.idempotency_keys:
                return {"task_id": task.task_id, "status": "cancelled", "refunded": True}
            return sim.render(task) | {"status": "cancelled"}
        task.cancelled_at = time.time()
        url = task.request.get("callback_url")
        events = task.request.get("callback_events") or list(TERMINAL)
        if url and "cancelled" in events and sim.config.send_callbacks:
            task.callbacks.append(asyncio.create_task(sim.send_callback(task, url)))
        if sim.gen.idempotency_keys:
            return {
                "task_id": task.task_id,
                "status": "cancelled",
                "refunded": True,
                "refunded_quota": task.quota,
            }
        return sim.render(task)

    @app.post("/v1/tasks/sync")
    async def sync_task(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        timeout: Annotated[float, Query(ge=0, le=600)] = 60,
    ) -> Any:
        if sim.gen.prefer_wait:  # 2026-09 removed this page for Prefer: wait
            return _error(404, "not found", "not_found")
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
            return _error(404, "no such file", "not_found")
        if time.time() > task.finished_at() + sim.config.result_ttl():
            return _error(404, "the file has expired and was deleted", "not_found")
        task.downloads += 1
        if (
            task.downloads <= sim.config.download_failures_per_video
            or random.random() < sim.config.download_fail_rate
        ):
            return _error(503, "storage unavailable (simulated)", "upstream_unavailable")
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
            return _error(400, str(exc), "invalid_request")
        return {"models": sorted(sim.prices.per_second_micros)}

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
        return {"ok": True}

    return app
