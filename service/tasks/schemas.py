"""The task object as callers see it, per answer version (rendering lives in render.py):
Qingbo's fields plus the gateway's."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.catalog.schemas import CallbackEvent, Status


class Video(BaseModel):
    url: str
    expires_at: int | None = Field(None, description="Unix seconds")


class TaskResult(BaseModel):
    images: list[Any] = []
    videos: list[Video] = []


class VideoCurrent(BaseModel):
    url: list[str] = Field(description="Always a list, even for one")
    expires_at: int | None = Field(None, description="Unix seconds")


class TaskResultCurrent(BaseModel):
    images: list[Any] = []
    videos: list[VideoCurrent] = []


class TaskUrls(BaseModel):
    get: str
    cancel: str


class TaskError(BaseModel):
    message: str
    code: str | None = None


class ArchivedVideo(BaseModel):
    url: str = Field(description="The gateway's content URL of the kept copy")
    state: Literal["pending", "stored", "failed", "expired"]
    bytes: int | None
    sha256: str | None = Field(description="Hex SHA-256 of the stored bytes (the ETag)")
    stored_at: int | None = Field(description="Unix seconds")
    error: str | None = Field(
        None,
        description="Why a failed video could not be archived, as a class: too_large, "
        "link_unreachable, link_error, not_a_video, store_error (else null)",
    )


class Archive(BaseModel):
    state: Literal["pending", "stored", "failed", "expired", "off"] = Field(
        description="off: nothing to keep (not completed, or archiving is off); else the "
        "videos' combined state"
    )
    videos: list[ArchivedVideo]


class GatewayFields(BaseModel):
    """The gateway's fields, the same in every answer version."""

    cost_usd: str = Field(
        description="What the task costs in USD (decimal string): what was charged once it is "
        "terminal (Qingbo's reported cost where it reports one; 0 when refunded), the "
        "reservation before that"
    )
    estimated_cost_usd: str = Field(
        description="The reservation at admission: the most the task can cost, by the catalog "
        "(or the April per-second table under 2026-04) it was priced under"
    )
    team_id: str
    upstream_task_id: str | None
    prompt: str | None = Field(description="null for a model that takes none (a chained action)")
    aspect_ratio: str
    resolution: str | None = Field(description="As asked; null: the model's default")
    duration: int | None = Field(description="As asked; null: the model's default")
    image_urls: list[str] | None = Field(
        None, description="URLs as given; Base64 images are summarised, not echoed"
    )
    first_frame_image: str | None = None
    last_frame_image: str | None = None
    seed: int | None = None
    camera_movement_tags: list[str] | None = None
    prompt_camera_tags: list[str]
    watermark: bool
    prompt_optimizer: bool
    fast_pretreatment: bool
    catalog_digest: str | None = Field(
        None, description="The catalog document the task was priced under (sha256)"
    )
    other_fields: dict[str, Any] = Field(
        default_factory=dict,
        description="The model's other fields as sent (Base64 media summarised), e.g. "
        "video_urls, audio_urls, generate_audio, ref_task_id",
    )
    priority: int
    callback_url: str | None
    callback_events: list[CallbackEvent]
    metadata: dict[str, str] = Field(
        default_factory=dict, description="The app's labels, as submitted ({} if none)"
    )
    archive: Archive = Field(description="The gateway's kept copies of the result videos")


class TaskObjectCurrent(GatewayFields):
    """`Qingbo-Version: 2026-09`: the vendor's current task shape, plus the gateway's fields."""

    task_id: str
    model: str
    action: str = Field(
        description="generate for the Hailuo models (their only action; the mode follows the "
        "media fields); any other model's action as sent (e.g. extend, regenerate, edit)"
    )
    status: Status
    progress: int | str = Field(
        description='A percentage string: "" while queued, "45%", "100%" when terminal; the '
        "integer 0 on a submit answer still queued"
    )
    created_at: int = Field(description="Unix seconds")
    start_time: int | None = Field(None, description="Unix seconds")
    completed_at: int | None = Field(None, description="Unix seconds")
    result: TaskResultCurrent | None = None
    error: TaskError | None = None
    urls: TaskUrls
    pre_consumed_cost: int | None = Field(
        None, description="Submit answers: the quota reserved (500,000 = 1 USD)"
    )
    cost: int | None = Field(
        None, description="Terminal tasks: the quota charged (0 after a refund)"
    )
    billing_status: str | None = Field(None, description="Terminal tasks: settled or refunded")
    refunded: bool | None = Field(None, description="Cancel answers")
    refunded_quota: int | None = Field(None, description="Cancel answers")


class TaskObject(GatewayFields):
    """`Qingbo-Version: 2026-04` (the default): Qingbo's task fields as of April 2026, plus
    the gateway's (cost, team, upstream id, normalised request)."""

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


TaskAnswer = TaskObject | TaskObjectCurrent


class SyncTaskObject(TaskObject):
    poll_url: str | None = Field(
        None, description="Present when the task was not finished in time: GET it to poll"
    )


class SyncTaskObjectCurrent(TaskObjectCurrent):
    poll_url: str | None = Field(
        None, description="Present when the task was not finished in time: GET it to poll"
    )


class TaskList(BaseModel):
    object: str = "list"
    data: list[TaskObject] | list[TaskObjectCurrent]
    next_cursor: str | None


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    padded = cursor + "=" * (-len(cursor) % 4)
    stamp, _, task_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    if not task_id:
        raise ValueError("cursor has no task id")
    return datetime.fromisoformat(stamp), task_id
