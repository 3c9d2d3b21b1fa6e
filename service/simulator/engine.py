"""The simulator's tasks and what it does with them: validation as the live generation
applies it, creation and idempotent replay, rendering, and callbacks on schedule."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from typing import Any

import httpx
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from service.catalog.generations import Generation, generation
from service.catalog.models import (
    PriceTable,
)
from service.catalog.rules import NormalizedTask, normalize
from service.catalog.schemas import TaskRequest
from service.errors import ServiceError, validation_error
from service.simulator.state import (
    IDEMPOTENCY_WINDOW_SECONDS,
    TERMINAL,
    SimConfig,
    SimTask,
    billed_quota,
    patch_terminal,
    render,
    strange,
)

logger = logging.getLogger(__name__)


def qingbo_error(
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


CALLBACK_CONNECTIONS = 100  # httpx's default pool size


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
        # Callbacks wait here, not in httpx's pool: its assignment pass scans every queued
        # request (encode/httpcore#1035), and 2,000 callbacks queued there took the
        # simulator's whole core (bench/inflight.py, py-spy).
        self.callback_slots = asyncio.Semaphore(CALLBACK_CONNECTIONS)

    @property
    def gen(self) -> Generation:
        return generation(self.config.api_version)

    def render(self, task: SimTask) -> dict[str, Any]:
        """The task as the live generation shows it (every read, callback, wait and cancel
        answer goes through here), with the terminal patch when one is set."""
        body = render(
            task,
            version=self.config.api_version,
            base_url=self.base_url,
            result_ttl=self.config.result_ttl(),
        )
        return patch_terminal(body, self.config.terminal_patch)

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
            return qingbo_error(400, "body: must be a JSON object", "invalid_request")
        current = gen.idempotency_keys  # the 2026-09 documents capability_violation
        try:
            spec = gen.model(str(raw.get("model", "")))
        except ServiceError as err:
            return qingbo_error(400, err.message, "invalid_request", param="model")
        accepted = gen.accepted_fields(spec)
        for name, value in raw.items():
            if name == "extra" and current and value in ({}, None):
                continue
            if name not in accepted or (current and name == "action" and value != "generate"):
                code = "capability_violation" if current else "invalid_request"
                return qingbo_error(400, f"{name}: not accepted by {spec.id}", code, param=name)
        try:
            req = TaskRequest.model_validate({k: v for k, v in raw.items() if k != "extra"})
            return normalize(req, gen)
        except ValidationError as exc:
            invalid = validation_error(RequestValidationError(exc.errors()))
            return qingbo_error(400, invalid.message, "invalid_request", param=invalid.param)
        except ServiceError as refused:
            return qingbo_error(400, refused.message, "invalid_request", param=refused.param)

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
        # The loop's clock is not time.time(): a wake-up a hair early would render the task
        # one state short (a "completed" callback saying "processing").
        await asyncio.sleep(max(0.0, at - time.time()))
        if time.time() < at:
            await asyncio.sleep(at - time.time() + 0.002)
        if task.cancelled_at is not None or not self.config.send_callbacks:
            return
        await self.send_callback(task, url)

    async def send_callback(self, task: SimTask, url: str) -> None:
        assert self.http is not None
        try:
            async with self.callback_slots:
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
