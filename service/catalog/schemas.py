"""The Qingbo task request body, as pydantic sees it (types and shapes; rules live in rules.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from service.platform.types import SafeText, Storable

Status = Literal["queued", "processing", "completed", "failed", "cancelled"]
# What an app's callback_url may hear: the statuses, and the gateway's own "archived"
# (all of a completed task's videos are kept in the archive).
CallbackEvent = Literal["queued", "processing", "completed", "failed", "cancelled", "archived"]


Image = Annotated[SafeText, Field(min_length=1)]


class GatewayFields(BaseModel):
    """The fields every task body has, whatever its model: the model id and what the gateway
    itself acts on (callback, dispatch priority, the app's labels)."""

    model: Annotated[
        str, Field(min_length=1, max_length=100, description="Model id (GET /v1/models)"), Storable
    ]
    callback_url: Annotated[str, Field(min_length=1, max_length=2048), Storable] | None = None
    callback_events: Annotated[list[CallbackEvent], Field(max_length=6)] | None = None
    priority: StrictInt = Field(
        0, ge=-100, le=100, description="Gateway extension: dispatch priority within the team"
    )
    metadata: dict[str, Any] | None = Field(
        None,
        description="Gateway extension: the app's own labels, stored with the task, echoed in "
        "every answer and webhook, filterable and reportable, never sent to Qingbo. At most "
        "16 keys of [A-Za-z0-9_.-]{1,64}, string values of at most 512 characters, 4 KiB in all",
        examples=[{"project": "atlas", "feature": "onboarding-video"}],
    )


class HailuoFields(BaseModel):
    """The Hailuo series' own fields of a Qingbo `POST /v1/tasks` body, in either generation's
    form: the gateway accepts the union and sends the configured upstream what its generation
    takes (see README "Qingbo versions"). Other families are checked by their catalog schema.
    """

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

    action: Literal["generate", "image2video"] | None = Field(
        None, description="Defaults to generate; an image present means image2video"
    )
    prompt: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2000,
            description="At most 2000 characters, counted upstream after camera_movement_tags "
            "are written into it (2026-09)",
        ),
        Storable,
    ]
    aspect_ratio: Literal["16:9", "9:16", "1:1"] | None = Field(
        None, description="2026-04 form; default 16:9. The 2026-09 upstream takes 16:9 only"
    )
    resolution: Literal["512p", "768p", "1080p"] | None = Field(
        None, description="768p (default) or 1080p; 512p on minimax-hailuo-02 (upper case too)"
    )
    duration: StrictInt | None = Field(
        None, description="Seconds: 6 or 10 (minimax-hailuo-02: 5 or 10); 10 only below 1080p"
    )
    image_urls: Annotated[list[Image], Field(min_length=1, max_length=4)] | None = Field(
        None,
        description="2026-04 form: reference image(s), http(s) URL or Base64 JPG/PNG/WEBP; "
        "the first becomes first_frame_image (the second last_frame_image, on 02) upstream",
    )
    first_frame_image: Image | None = Field(
        None, description="2026-09 form: the opening frame (URL or Base64); not with image_urls"
    )
    last_frame_image: Image | None = Field(
        None, description="2026-09 form: the closing frame, minimax-hailuo-02 only"
    )
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = Field(
        None, description="2026-09: minimax-hailuo-2.3 and 2.3-fast only"
    )
    watermark: StrictBool = False
    prompt_optimizer: StrictBool = True
    fast_pretreatment: StrictBool = False
    camera_movement_tags: Annotated[list[SafeText], Field(max_length=15)] | None = None

    @field_validator("resolution", mode="before")
    @classmethod
    def _lower_resolution(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


GATEWAY_FIELDS = tuple(GatewayFields.model_fields)


# The fields most models share, documented in the OpenAPI schema only: each model's own
# rules (types, allowed values, cross-field rules) are its catalog JSON Schema, which
# GET /v1/models serves, and the catalog is what checks them.
_MODEL_FIELDS_DOC: dict[str, dict[str, Any]] = {
    "action": {"type": "string", "description": "The model's action (default: its first)"},
    "prompt": {"type": "string", "description": "What to generate (most models require it)"},
    "duration": {"type": "integer", "description": "Seconds; allowed values per model"},
    "resolution": {"type": "string", "description": "e.g. 768p, 1080p, 2k; per model"},
    "aspect_ratio": {"type": "string", "description": "e.g. 16:9; per model"},
    "image_urls": {"type": "array", "items": {"type": "string"}},
    "first_frame_image": {"type": "string", "description": "URL or Base64 image"},
    "last_frame_image": {"type": "string", "description": "URL or Base64 image"},
    "video_urls": {"type": "array", "items": {"type": "string"}},
    "audio_urls": {"type": "array", "items": {"type": "string"}},
    "ref_task_id": {
        "type": "string",
        "description": "Chained actions: a completed task of the caller's own team",
    },
}


_EXAMPLES = [
    {
        "model": "minimax-hailuo-2.3",
        "prompt": "[推进] cobblestone street of an old town, [变焦推近] raindrops "
        "falling from the eaves",
        "resolution": "768p",
        "duration": 6,
    },
    {"model": "minimax-h3", "prompt": "a mountain town at dawn", "duration": 8},
]


def _document_model_fields(schema: dict[str, Any]) -> None:
    schema["additionalProperties"] = True
    schema.setdefault("properties", {}).update(_MODEL_FIELDS_DOC)
    schema["examples"] = _EXAMPLES


class HailuoRequest(GatewayFields, HailuoFields):
    """A whole Hailuo body: the gateway's fields and Hailuo's own (the simulator's view)."""

    model_config = ConfigDict(extra="forbid")


class TaskRequest(GatewayFields):
    """A Qingbo `POST /v1/tasks` body for any model of the catalog. The gateway's own fields
    are typed here; every other field is the model's (`prompt`, `duration`, `resolution`,
    `image_urls`, ...), checked against that model's rules in the catalog in force
    (`GET /v1/models`), and refused naming the field when the model does not take it."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_document_model_fields)

    def vendor_fields(self) -> dict[str, Any]:
        """The model's own fields, as sent (every field the gateway does not declare)."""
        return self.model_extra or {}

    def hailuo(self) -> HailuoRequest:
        """This body as a Hailuo request. Hailuo's own fields are validated here; the
        gateway's go through again with them, already valid (one pydantic-core pass over a
        plain dict is cheaper than model_construct)."""
        return HailuoRequest.model_validate({**self.__dict__, **self.vendor_fields()})
