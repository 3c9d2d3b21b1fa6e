"""The simulator's state: its controls, its tasks, and how each generation of Qingbo's API
shows them (qingbo-api.md; for 2026-09 the vendor's task/status.mdx and cancel.mdx), by the
generation's answer shapes (service/catalog/wire.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.catalog.generations import LATEST, ApiVersion, generation
from service.catalog.wire import Wire
from service.platform.money import MICROS_PER_QUOTA

TERMINAL = ("completed", "failed", "cancelled")
# Qingbo remembers an Idempotency-Key this long (task/submit.mdx).
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600


class SimConfigPatch(BaseModel):
    """`PUT /_sim/config`: a partial update of the controls."""

    model_config = ConfigDict(extra="forbid")

    queue_seconds: float | None = Field(None, ge=0)
    processing_seconds: float | None = Field(None, ge=0)
    fail_rate: float | None = Field(None, ge=0, le=1)
    http_429_rate: float | None = Field(None, ge=0, le=1)
    http_5xx_rate: float | None = Field(None, ge=0, le=1)
    # Submits: the task is created first, then the answer waits this long (so a caller's
    # read timeout leaves it unknown whether the task exists, as with the real service).
    latency_ms: int | None = Field(None, ge=0)
    send_callbacks: bool | None = None
    # Beyond the design's knobs: answer every submit with this HTTP status (400/401/402/...).
    submit_status: int | None = Field(None, ge=400, le=599)
    api_version: ApiVersion | None = None
    # Qingbo bills this multiple of the price table (2026-09 reports it as `cost`).
    bill_factor: float | None = Field(None, ge=0, le=100)
    # Result links answer 404 after this long (null: as the generation documents it).
    result_ttl_seconds: float | None = Field(None, ge=0)
    download_fail_rate: float | None = Field(None, ge=0, le=1)
    # Answers to submits and to reads of unfinished tasks carry an unknown status, a NaN
    # progress and absurd timestamps (the task is real; only the answer is strange).
    strange_answers: bool | None = None
    # Cancels answer 2xx "cancelled" but the task goes on (reads tell the truth).
    cancel_ignored: bool | None = None
    # Result videos of this many bytes (at least the small default), and served at most
    # this fast (0: at once), for the archive's streaming and retry tests.
    video_bytes: int | None = Field(None, ge=0, le=4 * 1024**3)
    download_bytes_per_second: int | None = Field(None, ge=0)
    # The first this many downloads of each result video fail (503): retries, exactly.
    download_failures_per_video: int | None = Field(None, ge=0)
    # Result videos are a real 2 s clip a browser plays (clip.mp4), plus a box naming the
    # task: for the console's browser tests. Off: the small box-only files below.
    playable_videos: bool | None = None
    # Merged into every terminal answer served while set (reads, callbacks, waits, cancels;
    # both generations): an odd answer from Qingbo on demand (issue 31). `null` clears it.
    terminal_patch: dict[str, Any] | None = None


class SimConfig(SimConfigPatch):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    queue_seconds: float = Field(2.0, ge=0)
    processing_seconds: float = Field(8.0, ge=0)
    fail_rate: float = Field(0.0, ge=0, le=1)
    http_429_rate: float = Field(0.0, ge=0, le=1)
    http_5xx_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: int = Field(0, ge=0)
    send_callbacks: bool = True
    api_version: ApiVersion = LATEST
    bill_factor: float = Field(1.0, ge=0, le=100)
    download_fail_rate: float = Field(0.0, ge=0, le=1)
    strange_answers: bool = False
    cancel_ignored: bool = False
    video_bytes: int = Field(0, ge=0, le=4 * 1024**3)
    download_bytes_per_second: int = Field(0, ge=0)
    download_failures_per_video: int = Field(0, ge=0)
    playable_videos: bool = False

    def result_ttl(self) -> float:
        if self.result_ttl_seconds is not None:
            return self.result_ttl_seconds
        return generation(self.api_version).wire.result_ttl_seconds


def billed_quota(price_micros: int, bill_factor: float) -> int:
    """What the simulated Qingbo charges, in quota: the price times the factor, rounded."""
    quota = Decimal(price_micros) * Decimal(str(bill_factor)) / MICROS_PER_QUOTA
    return int(quota.to_integral_value(rounding=ROUND_HALF_UP))


@dataclass
class SimTask:
    task_id: str
    request: dict[str, Any]
    received_at: float
    queue_seconds: float
    processing_seconds: float
    will_fail: bool
    quota: int
    # The action it shows (status.mdx: "identical to the value submitted"), as
    # Simulator.action_of decided it at submission.
    action: str = "generate"
    idempotency_key: str | None = None
    submissions: int = 1
    cancelled_at: float | None = None
    downloads: int = 0
    reads: int = 0  # GET /v1/tasks/{id} answered: how hard the gateway polls
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

    def ended_at(self) -> float:
        return self.cancelled_at if self.cancelled_at is not None else self.finished_at()


def render(
    task: SimTask,
    *,
    wire: Wire,
    base_url: str,
    now: float | None = None,
    result_ttl: float | None = None,
) -> dict[str, Any]:
    """GET /v1/tasks/{id} as the generation shaped by `wire` answers it. `start_time` and
    `completed_at` are in seconds in every generation (the status examples of both show
    seconds); only `created_at` follows the generation's unit."""
    now = time.time() if now is None else now
    status, progress = task.status_at(now)
    body: dict[str, Any] = {
        "task_id": task.task_id,
        "model": task.request.get("model"),
        "action": task.action,
        "status": status,
        "created_at": wire.stamp(task.received_at),
        "progress": wire.show_progress(status, progress),
    }
    if status in ("processing", "completed", "failed"):
        body["start_time"] = int(task.received_at + task.queue_seconds)
    if status in TERMINAL:
        body["completed_at"] = int(task.ended_at())
    if status == "completed":
        url = f"{base_url}/_sim/videos/{task.task_id}.mp4"
        ttl = wire.result_ttl_seconds if result_ttl is None else result_ttl
        expires = int(task.finished_at() + ttl)
        body["result"] = wire.show_result(
            {"images": [], "videos": [{"url": [url], "expires_at": expires}]}
        )
    elif status == "failed":
        body["error"] = {
            "message": "generation failed (simulated)",
            "code": wire.errors.task_failed,
        }
    links = wire.task_links(f"{base_url}/v1/tasks/{task.task_id}")
    if links is not None:
        body["urls"] = links
    if wire.billing is not None and status in TERMINAL:
        # Failed and cancelled tasks are refunded in full, automatically (status.mdx).
        body[wire.billing.charged] = task.quota if status == "completed" else 0
        body[wire.billing.state] = "settled"
    return body


def patch_terminal(body: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """`body` with `patch` merged in when it is a terminal answer: each top-level member of
    the patch replaces the answer's, except that an object member meeting an object (the
    `error`, the `result`) is merged one level down, so `{"error": {"message": ...}}`
    keeps the answer's `code`."""
    if not patch or body.get("status") not in TERMINAL:
        return body
    merged = dict(body)
    for name, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return merged


def submit_answer(task: SimTask, *, wire: Wire) -> dict[str, Any]:
    """The answer to POST /v1/tasks: queued, progress the integer 0 in every generation, and
    the quota frozen where the generation reports billing."""
    answer: dict[str, Any] = {
        "task_id": task.task_id,
        "model": task.request.get("model"),
        "action": task.action,
        "status": "queued",
        "created_at": wire.stamp(task.received_at),
        "progress": 0,
    }
    if wire.billing is not None:
        answer[wire.billing.reserved] = task.quota
    return answer


def mp4_bytes(task_id: str) -> bytes:
    """A small valid MP4 (ftyp, free and an empty mdat box), different for every task."""
    return b"".join(mp4_chunks(task_id, 0))


CLIP = Path(__file__).with_name("clip.mp4")  # 64x64 VP9, 8 fps, 2 s (ffmpeg via PyAV)


def playable_mp4(task_id: str) -> bytes:
    """The clip with a `free` box naming the task at its end: plays, and differs per task."""
    payload = task_id.encode()
    return CLIP.read_bytes() + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload


def mp4_chunks(task_id: str, size: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """An MP4 of at least `size` bytes (ftyp, a free box naming the task, an mdat box of
    bytes derived from the task id), produced a chunk at a time: the same bytes on every
    request, different for every task, never held whole."""
    ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    payload = task_id.encode()
    free = (8 + len(payload)).to_bytes(4, "big") + b"free" + payload
    head = ftyp + free
    body = max(0, size - len(head) - 8)
    yield head + (8 + body).to_bytes(4, "big") + b"mdat"
    block = hashlib.sha256(payload).digest() * (chunk // 32)
    while body > 0:
        piece = block[: min(body, len(block))]
        body -= len(piece)
        yield piece


def mp4_size(task_id: str, size: int) -> int:
    head = 24 + 8 + len(task_id.encode())
    return head + 8 + max(0, size - head - 8)


def strange(answer: dict[str, Any]) -> str:
    """An unfinished task's answer made strange, as JSON (NaN is not valid JSON, but
    Python's encoder and decoder, like many others, write and read it)."""
    if answer["status"] not in TERMINAL:
        absurd = 10**17  # year ~3 million, in milliseconds
        answer = answer | {"status": "warming_up", "progress": float("nan"), "created_at": absurd}
        if "start_time" in answer:
            answer["start_time"] = absurd
    return json.dumps(answer, allow_nan=True)
