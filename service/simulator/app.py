"""The Qingbo simulator: same endpoints, validation, shapes and lifecycle as qingbo-api.md.

Tasks progress with wall time (queued, then processing with rising progress, then
completed or failed); callbacks are real HTTP POSTs. `/_sim/*` lets tests steer it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from service.catalog.rules import normalize
from service.catalog.schemas import TaskRequest
from service.errors import ServiceError, validation_error

logger = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "cancelled")


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    queue_seconds: float = Field(2.0, ge=0)
    processing_seconds: float = Field(8.0, ge=0)
    fail_rate: float = Field(0.0, ge=0, le=1)
    http_429_rate: float = Field(0.0, ge=0, le=1)
    http_5xx_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: int = Field(0, ge=0)
    send_callbacks: bool = True
    # Beyond the design's knobs: answer every submit with this HTTP status (400/401/402/...).
    submit_status: int | None = Field(None, ge=400, le=599)


class SimConfigPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_seconds: float | None = Field(None, ge=0)
    processing_seconds: float | None = Field(None, ge=0)
    fail_rate: float | None = Field(None, ge=0, le=1)
    http_429_rate: float | None = Field(None, ge=0, le=1)
    http_5xx_rate: float | None = Field(None, ge=0, le=1)
    latency_ms: int | None = Field(None, ge=0)
    send_callbacks: bool | None = None
    submit_status: int | None = Field(None, ge=400, le=599)


@dataclass
class SimTask:
    task_id: str
    request: dict[str, Any]
    received_at: float
    queue_seconds: float
    processing_seconds: float
    will_fail: bool
    cancelled_at: float | None = None
    callbacks: list[asyncio.Task[None]] = field(default_factory=list)

    def status_at(self, now: float) -> tuple[str, int]:
        if self.cancelled_at is not None:
            return "cancelled", 0
        elapsed = now - self.received_at
        if elapsed < self.queue_seconds:
            return "queued", 0
        if elapsed < self.queue_seconds + self.processing_seconds:
            done = (elapsed - self.queue_seconds) / max(self.processing_seconds, 1e-9)
            return "processing", min(99, int(done * 100))
        return ("failed" if self.will_fail else "completed"), 100

    def finished_at(self) -> float:
        return self.received_at + self.queue_seconds + self.processing_seconds


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "code": code}}, status_code=status, headers=headers
    )


class Simulator:
    def __init__(self, *, api_key: str | None = None, base_url: str = "") -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.config = SimConfig()
        self.tasks: dict[str, SimTask] = {}
        self.http: httpx.AsyncClient | None = None

    def render(self, task: SimTask, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        status, progress = task.status_at(now)
        body: dict[str, Any] = {
            "task_id": task.task_id,
            "model": task.request.get("model"),
            "action": task.request.get("action", "generate"),
            "status": status,
            "created_at": int(task.received_at * 1000),
            "progress": progress,
        }
        if status in ("processing", "completed", "failed"):
            body["start_time"] = int(task.received_at + task.queue_seconds)
        if status == "completed":
            done = int(task.finished_at())
            body["completed_at"] = done
            body["result"] = {
                "images": [],
                "videos": [
                    {
                        "url": f"{self.base_url}/_sim/videos/{task.task_id}.mp4",
                        "expires_at": done + 86400,
                    }
                ],
            }
        elif status == "failed":
            body["completed_at"] = int(task.finished_at())
            body["error"] = {
                "message": "generation failed (simulated)",
                "code": "generation_failed",
            }
        elif status == "cancelled" and task.cancelled_at is not None:
            body["completed_at"] = int(task.cancelled_at)
        return body

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
                task.callbacks.append(asyncio.create_task(self._callback_at(task, url, event, at)))

    async def _callback_at(self, task: SimTask, url: str, event: str, at: float) -> None:
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


def create_simulator_app(*, api_key: str | None = None, base_url: str = "") -> FastAPI:
    sim = Simulator(api_key=api_key, base_url=base_url)

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

    async def gate(authorization: str | None) -> JSONResponse | None:
        """Auth, injected latency and injected failures, as Qingbo would show them."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or (sim.api_key and not secrets.compare_digest(token, sim.api_key)):
            return _error(401, "invalid API key", "unauthorized")
        if sim.config.latency_ms:
            await asyncio.sleep(sim.config.latency_ms / 1000)
        roll = random.random()
        if roll < sim.config.http_429_rate:
            return _error(429, "rate limit exceeded", "rate_limited", {"Retry-After": "1"})
        if roll < sim.config.http_429_rate + sim.config.http_5xx_rate:
            return _error(500, "internal server error", "internal_error")
        return None

    @app.post("/v1/tasks")
    async def create_task(
        body: TaskRequest, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        denied = await gate(authorization)
        if denied is not None:
            return denied
        if sim.config.submit_status is not None:
            status = sim.config.submit_status
            codes = {400: "invalid_request", 401: "unauthorized", 402: "insufficient_balance"}
            return _error(status, f"simulated HTTP {status}", codes.get(status, "error"))
        if body.priority != 0 or "priority" in body.model_fields_set:
            return _error(400, "priority: unknown field", "invalid_request")
        try:
            normalize(body)
        except ServiceError as err:
            return _error(400, err.message, "invalid_request")
        task = SimTask(
            task_id=f"task-sim{int(time.time())}{secrets.token_hex(6)}",
            request=await request.json(),
            received_at=time.time(),
            queue_seconds=sim.config.queue_seconds,
            processing_seconds=sim.config.processing_seconds,
            will_fail=random.random() < sim.config.fail_rate,
        )
        sim.tasks[task.task_id] = task
        sim.schedule_callbacks(task)
        answer = sim.render(task)
        return {
            k: answer[k] for k in ("task_id", "model", "action", "status", "created_at", "progress")
        }

    async def lookup(task_id: str, authorization: str | None) -> SimTask | JSONResponse:
        denied = await gate(authorization)
        if denied is not None:
            return denied
        task = sim.tasks.get(task_id)
        return task if task is not None else _error(404, "task not found", "not_found")

    @app.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str, authorization: Annotated[str | None, Header()] = None) -> Any:
        task = await lookup(task_id, authorization)
        return task if isinstance(task, JSONResponse) else sim.render(task)

    @app.post("/v1/tasks/{task_id}/cancel")
    async def cancel_task(
        task_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        task = await lookup(task_id, authorization)
        if isinstance(task, JSONResponse):
            return task
        status, _ = task.status_at(time.time())
        if status != "queued":
            return _error(
                409, f"only queued tasks can be cancelled (task is {status})", "not_cancellable"
            )
        task.cancelled_at = time.time()
        url = task.request.get("callback_url")
        events = task.request.get("callback_events") or list(TERMINAL)
        if url and "cancelled" in events and sim.config.send_callbacks:
            task.callbacks.append(asyncio.create_task(sim.send_callback(task, url)))
        return sim.render(task)

    @app.post("/v1/tasks/sync")
    async def sync_task(
        body: TaskRequest,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        timeout: Annotated[float, Query(ge=0, le=600)] = 60,
    ) -> Any:
        created = await create_task(body, request, authorization)
        if isinstance(created, Response):
            return created
        task = sim.tasks[created["task_id"]]
        wait = min(timeout, max(0.0, task.finished_at() - time.time() + 0.01))
        await asyncio.sleep(wait)
        answer = sim.render(task)
        if answer["status"] not in TERMINAL:
            answer["poll_url"] = f"{sim.base_url}/v1/tasks/{task.task_id}"
        return answer

    @app.get("/_sim/videos/{name}")
    async def video(name: str) -> Response:
        # A tiny stand-in MP4 (an ftyp box), enough for download paths to be exercised.
        return Response(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", media_type="video/mp4")

    @app.get("/_sim/config")
    async def get_config() -> SimConfig:
        return sim.config

    @app.put("/_sim/config")
    async def put_config(patch: SimConfigPatch) -> SimConfig:
        for name in patch.model_fields_set:
            setattr(sim.config, name, getattr(patch, name))
        return sim.config

    @app.get("/_sim/tasks")
    async def list_tasks() -> dict[str, Any]:
        now = time.time()
        return {
            "tasks": [
                {
                    "task_id": t.task_id,
                    "status": t.status_at(now)[0],
                    "request": t.request,
                    "received_at": int(t.received_at * 1000),
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
        sim.config = SimConfig()
        return {"ok": True}

    return app
