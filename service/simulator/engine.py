"""The simulator's tasks and what it does with them: validation as the live generation
applies it, creation and idempotent replay, rendering, and callbacks on schedule."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
import time
from typing import Any

import httpx
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from service.catalog.engine import Catalog
from service.catalog.generations import Generation, generation
from service.catalog.intake import normalize_task, price_micros
from service.catalog.price_table import PriceTable
from service.catalog.rules import NormalizedTask, normalize
from service.catalog.schemas import HailuoRequest
from service.catalog.wire import Wire
from service.platform.errors import ServiceError, validation_error
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
        self,
        *,
        api_key: str | None,
        base_url: str,
        api_version: str,
        prices: PriceTable,
        catalog: Catalog,
    ) -> None:
        # The same catalog as the gateway's: what each model's rules refuse and what its
        # pricing charges (April per-second prices under 2026-04, generations.py).
        self.catalog = self.default_catalog = catalog
        self.api_key = api_key
        self.base_url = base_url
        self.default_version = api_version
        self.prices = self.default_prices = prices
        self.config = SimConfig(api_version=api_version)
        self.tasks: dict[str, SimTask] = {}
        self.keys: dict[str, str] = {}  # Idempotency-Key -> task id
        self.http: httpx.AsyncClient | None = None
        # Callbacks wait here, not in httpx's pool: its assignment pass scans every queued
        # request (encode/httpcore#1035), and a burst of callbacks queued there took the
        # simulator's whole core (bench/RESULTS.md, "Tracking with thousands in flight").
        self.callback_slots = asyncio.Semaphore(CALLBACK_CONNECTIONS)

    @property
    def gen(self) -> Generation:
        return generation(self.config.api_version)

    @property
    def wire(self) -> Wire:
        """How the live generation shapes its answers."""
        return self.gen.wire

    def render(self, task: SimTask) -> dict[str, Any]:
        """The task as the live generation shows it (every read, callback, wait and cancel
        answer goes through here), with the terminal patch when one is set."""
        body = render(
            task,
            wire=self.wire,
            base_url=self.base_url,
            result_ttl=self.config.result_ttl(),
        )
        return patch_terminal(body, self.config.terminal_patch)

    def cancel_answer(self, task: SimTask, *, refunded_quota: int | None) -> dict[str, Any]:
        """What a cancel answers: a refund receipt where the generation answers one
        (cancel.mdx), else the task. `refunded_quota` None: a cancel that did not take
        effect (`cancel_ignored`), whose answer still claims it did."""
        wire = self.wire
        if wire.cancel_answer == "receipt":
            return {"task_id": task.task_id, "status": "cancelled", **wire.refund(refunded_quota)}
        answer = self.render(task)
        return answer if refunded_quota is not None else answer | {"status": "cancelled"}

    def answer(self, body: dict[str, Any]) -> Any:
        """What Qingbo sends for `body`, strange when the simulator is told to be."""
        if self.config.strange_answers:
            return Response(strange(body), media_type="application/json")
        return body

    def validate(self, raw: Any) -> NormalizedTask | JSONResponse:
        """Refuse what this generation does not take, as it does: an undeclared field with
        the generation's own code (2026-09: `capability_violation`, never billed); rules are
        `invalid_request`."""
        gen, wire = self.gen, self.wire
        if not isinstance(raw, dict):
            return qingbo_error(400, "body: must be a JSON object", "invalid_request")
        if not gen.offers(str(raw.get("model", ""))):
            return self._validate_catalog(raw, gen)
        try:
            spec = gen.model(str(raw.get("model", "")))
        except ServiceError as err:
            return qingbo_error(400, err.message, "invalid_request", param="model")
        accepted = gen.accepted_fields(spec)
        for name, value in raw.items():
            if name == "extra" and wire.extra_object and value in ({}, None):
                continue
            fixed = wire.fixed_action
            if name not in accepted or (name == "action" and fixed is not None and value != fixed):
                code = wire.errors.undeclared_field
                return qingbo_error(400, f"{name}: not accepted by {spec.id}", code, param=name)
        try:
            req = HailuoRequest.model_validate({k: v for k, v in raw.items() if k != "extra"})
            task = normalize(req, gen)
            entry = self.catalog.models.get(spec.id)
            if entry is not None and gen.offers_catalog:
                entry.check(task.pricing_body)
            return task
        except ValidationError as exc:
            invalid = validation_error(RequestValidationError(exc.errors()))
            return qingbo_error(400, invalid.message, "invalid_request", param=invalid.param)
        except ServiceError as refused:
            return qingbo_error(400, refused.message, "invalid_request", param=refused.param)

    def _validate_catalog(
        self, raw: dict[str, Any], gen: Generation
    ) -> NormalizedTask | JSONResponse:
        """Any other model, by its catalog rules: an undeclared field has the generation's
        own code; a chained action must name one of this account's completed tasks."""
        fields = {k: v for k, v in raw.items() if not (k == "extra" and v in ({}, None))}
        try:
            task = normalize_task(fields, gen, self.catalog)
        except ServiceError as refused:
            unknown = "unknown field" in refused.message
            code = self.wire.errors.undeclared_field if unknown else refused.code
            if refused.code == "invalid_request" and refused.param == "model":
                code = "model_not_found"
            return qingbo_error(400, refused.message, code, param=refused.param)
        if task.ref_task_id is not None:
            source = self.tasks.get(task.ref_task_id)
            if source is None or source.status_at(time.time())[0] != "completed":
                return qingbo_error(
                    400,
                    "ref_task_id: no completed task with that id",
                    "invalid_request",
                    param="ref_task_id",
                )
            entry = self.catalog.models[task.model_id]
            inherit = entry.chain.inherit if entry.chain else ()
            inherited = {k: source.request[k] for k in inherit if k in source.request}
            task = dataclasses.replace(task, pricing_body={**inherited, **task.pricing_body})
        return task

    def price(self, asked: NormalizedTask) -> int:
        """What this generation charges for the task (PriceNotConfigured when nothing)."""
        return price_micros(asked, self.gen, self.catalog, self.prices)

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

    def action_of(self, raw: dict[str, Any], asked: NormalizedTask) -> str:
        """The action a task shows: the one sent (status.mdx: "identical to the value
        submitted"), else the model's own (a catalog model's first, as the gateway stores
        it; `generate` for the generation's own Hailuo models), fixed only where the
        generation fixes it (Wire.show_action, shared with the gateway's answers)."""
        own = self.gen.offers(asked.model_id)
        sent = raw.get("action")
        default = "generate" if own else str(asked.request["action"])
        return self.wire.show_action(str(sent) if sent else default, own_model=own)

    def create(self, raw: dict[str, Any], price: int, key: str | None, *, action: str) -> SimTask:
        task = SimTask(
            task_id=f"task-sim{int(time.time())}{secrets.token_hex(6)}",
            request=raw,
            action=action,
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
