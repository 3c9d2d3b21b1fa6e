"""The Qingbo task request body, as pydantic sees it (types and shapes; rules live in rules.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from service.types import SafeText, Storable

Status = Literal["queued", "processing", "completed", "failed", "cancelled"]


class TaskRequest(BaseModel):
    """A Qingbo `POST /v1/tasks` body (Hailuo series)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "minimax-hailuo-2.3",
                    "prompt": "[推进] cobblestone street of an old town, [变焦推近] raindrops "
                    "falling from the eaves",
                    "resolution": "768p",
                    "duration": 6,
                    "aspect_ratio": "16:9",
                }
            ]
        },
    )

    model: Annotated[str, Field(min_length=1, max_length=100, description="Model id"), Storable]
    action: Literal["generate", "image2video"] | None = Field(
        None, description="Defaults to generate; image_urls present means image2video"
    )
    prompt: Annotated[str, Field(min_length=1, max_length=2000), Storable]
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    resolution: Literal["768p", "1080p"] = Field(
        "768p", description="768p or 1080p (768P/1080P accepted)"
    )
    duration: StrictInt | None = Field(None, description="Seconds: 6 or 10 (10 only at 768p)")
    image_urls: Annotated[list[SafeText], Field(min_length=1, max_length=4)] | None = Field(
        None, description="Reference image(s) for image2video: http(s) URL or Base64 JPG/PNG/WEBP"
    )
    callback_url: Annotated[str, Field(min_length=1, max_length=2048), Storable] | None = None
    callback_events: Annotated[list[Status], Field(max_length=5)] | None = None
    watermark: StrictBool = False
    prompt_optimizer: StrictBool = True
    fast_pretreatment: StrictBool = False
    camera_movement_tags: Annotated[list[SafeText], Field(max_length=15)] | None = None
    priority: StrictInt = Field(
        0, ge=-100, le=100, description="Gateway extension: dispatch priority within the team"
    )

    @field_validator("resolution", mode="before")
    @classmethod
    def _lower_resolution(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value
