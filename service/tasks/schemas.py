"""The task object as callers see it: Qingbo's fields plus the gateway's."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.catalog.models import format_usd
from service.catalog.rules import prompt_camera_tags
from service.catalog.schemas import Status


class Video(BaseModel):
    url: str
    expires_at: int | None = None


class TaskResult(BaseModel):
    images: list[Any] = []
    videos: list[Video] = []


class TaskError(BaseModel):
    message: str
    code: str | None = None


class TaskObject(BaseModel):
    """Qingbo's task fields, plus the gateway's (cost, team, upstream id, normalised request)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": "task-wave1775285160b950328499",
                    "model": "minimax-hailuo-2.3",
                    "action": "generate",
                    "status": "completed",
                    "progress": 100,
                    "created_at": 1775285160040,
                    "start_time": 1775285162000,
                    "completed_at": 1775285190000,
                    "result": {
                        "images": [],
                        "videos": [{"url": "https://...", "expires_at": 1775371590}],
                    },
                    "error": None,
                    "cost_usd": "0.3111",
                    "team_id": "2041c8ec-62f8-493e-8bf0-aa7710842af8",
                    "upstream_task_id": "task-wave1775285160b950328499",
                    "prompt": "[推进] cobblestone street of an old town, [变焦推近] raindrops",
                    "aspect_ratio": "16:9",
                    "resolution": "768p",
                    "duration": 6,
                    "image_urls": None,
                    "camera_movement_tags": None,
                    "prompt_camera_tags": ["[推进]", "[变焦推近]"],
                    "watermark": False,
                    "prompt_optimizer": True,
                    "fast_pretreatment": False,
                    "priority": 0,
                    "callback_url": None,
                    "callback_events": ["completed", "failed", "cancelled"],
                }
            ]
        }
    )

    task_id: str
    model: str
    action: str
    status: Status
    progress: int
    created_at: int = Field(description="Unix milliseconds")
    start_time: int | None = Field(None, description="Unix milliseconds")
    completed_at: int | None = Field(None, description="Unix milliseconds")
    result: TaskResult | None = None
    error: TaskError | None = None
    cost_usd: str = Field(description="The task's price in USD, a decimal string")
    team_id: str
    upstream_task_id: str | None
    prompt: str
    aspect_ratio: str
    resolution: str
    duration: int
    image_urls: list[str] | None = Field(
        None, description="URLs as given; Base64 images are summarised, not echoed"
    )
    camera_movement_tags: list[str] | None = None
    prompt_camera_tags: list[str]
    watermark: bool
    prompt_optimizer: bool
    fast_pretreatment: bool
    priority: int
    callback_url: str | None
    callback_events: list[Status]


class SyncTaskObject(TaskObject):
    poll_url: str | None = Field(
        None, description="Present when the task was not finished in time: GET it to poll"
    )


class TaskList(BaseModel):
    object: str = "list"
    data: list[TaskObject]
    next_cursor: str | None


def unix_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _summarise_image(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return value
    size = len(value) * 3 // 4
    return f"base64 image, about {size} bytes"


def render_task(row: Any) -> dict[str, Any]:
    """A task row as the API answers it (also the webhook payload's body)."""
    request = row["request"]
    images = request.get("image_urls")
    return {
        "task_id": row["id"],
        "model": row["model"],
        "action": row["action"],
        "status": row["status"],
        "progress": row["progress"],
        "created_at": unix_ms(row["created_at"]),
        "start_time": unix_ms(row["start_time"]),
        "completed_at": unix_ms(row["completed_at"]),
        "result": row["result"],
        "error": row["error"],
        "cost_usd": format_usd(row["cost_micros"]),
        "team_id": str(row["team_id"]),
        "upstream_task_id": row["upstream_task_id"],
        "prompt": request["prompt"],
        "aspect_ratio": request["aspect_ratio"],
        "resolution": request["resolution"],
        "duration": request["duration"],
        "image_urls": [_summarise_image(i) for i in images] if images else None,
        "camera_movement_tags": request.get("camera_movement_tags"),
        "prompt_camera_tags": prompt_camera_tags(request["prompt"], strict=False),
        "watermark": request["watermark"],
        "prompt_optimizer": request["prompt_optimizer"],
        "fast_pretreatment": request["fast_pretreatment"],
        "priority": row["priority"],
        "callback_url": row["callback_url"],
        "callback_events": list(row["callback_events"]),
    }


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    padded = cursor + "=" * (-len(cursor) % 4)
    stamp, _, task_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    if not task_id:
        raise ValueError("cursor has no task id")
    return datetime.fromisoformat(stamp), task_id
