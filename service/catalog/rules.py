"""Catalog rules applied to a parsed request: shared by the gateway and the simulator."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import filetype

from service.catalog.models import (
    CAMERA_TAGS,
    CAMERA_TAGS_BY_NAME,
    IMAGE_MIME_TYPES,
    MODELS_BY_ID,
    TERMINAL_STATUSES,
    ModelSpec,
)
from service.catalog.schemas import TaskRequest
from service.errors import InvalidRequest

_BRACKET = re.compile(r"\[([^\[\]]{1,16})\]")
_CJK_ONLY = re.compile(r"^[\u4e00-\u9fff]+$")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_KNOWN_TAGS = ", ".join(t.tag for t in CAMERA_TAGS)


@dataclass(frozen=True)
class NormalizedTask:
    """A validated request: `upstream` is the exact body sent to Qingbo (minus the callback)."""

    model: ModelSpec
    upstream: dict[str, Any]
    prompt_camera_tags: list[str]
    callback_url: str | None
    callback_events: list[str]
    priority: int


def normalize(req: TaskRequest) -> NormalizedTask:
    model = MODELS_BY_ID.get(req.model)
    if model is None:
        raise InvalidRequest(
            f"model: unknown model {req.model!r}; available: {', '.join(MODELS_BY_ID)}",
            param="model",
        )
    if not req.prompt.strip():
        raise InvalidRequest("prompt: must not be blank", param="prompt")
    if len(req.prompt) > model.max_prompt_chars:
        raise InvalidRequest(f"prompt: at most {model.max_prompt_chars} characters", param="prompt")
    if req.resolution not in model.resolutions:
        raise InvalidRequest(
            f"resolution: {model.id} supports {', '.join(model.resolutions)}", param="resolution"
        )
    duration = model.default_duration if req.duration is None else req.duration
    if duration not in model.durations:
        allowed = " or ".join(str(d) for d in model.durations)
        raise InvalidRequest(f"duration: must be {allowed} seconds", param="duration")
    if duration not in model.durations_at(req.resolution):
        allowed = " or ".join(str(d) for d in model.durations_at(req.resolution))
        raise InvalidRequest(
            f"duration: {req.resolution} allows only {allowed} seconds", param="duration"
        )

    action = req.action or "generate"
    if req.image_urls:
        if len(req.image_urls) > model.max_images:
            raise InvalidRequest(
                f"image_urls: at most {model.max_images} images", param="image_urls"
            )
        for index, image in enumerate(req.image_urls):
            check_image(image, param=f"image_urls[{index}]")
        action = "image2video"  # Qingbo routes by media fields
    elif action == "image2video":
        raise InvalidRequest("image_urls: required for image2video", param="image_urls")

    prompt_tags = prompt_camera_tags(req.prompt)
    camera_tags = [
        canonical_camera_tag(tag, param=f"camera_movement_tags[{i}]")
        for i, tag in enumerate(req.camera_movement_tags or [])
    ]
    if req.callback_url is not None:
        check_http_url(req.callback_url, param="callback_url")
    events: list[str] | None = (
        list(dict.fromkeys(req.callback_events)) if req.callback_events is not None else None
    )

    upstream: dict[str, Any] = {
        "model": model.id,
        "action": action,
        "prompt": req.prompt,
        "aspect_ratio": req.aspect_ratio,
        "resolution": req.resolution,
        "duration": duration,
        "watermark": req.watermark,
        "prompt_optimizer": req.prompt_optimizer,
        "fast_pretreatment": req.fast_pretreatment,
    }
    if req.image_urls:
        upstream["image_urls"] = list(req.image_urls)
    if camera_tags:
        upstream["camera_movement_tags"] = camera_tags
    return NormalizedTask(
        model=model,
        upstream=upstream,
        prompt_camera_tags=prompt_tags,
        callback_url=req.callback_url,
        callback_events=events if events is not None else list(TERMINAL_STATUSES),
        priority=req.priority,
    )


def prompt_camera_tags(prompt: str, *, strict: bool = True) -> list[str]:
    """The camera tags written as `[tag]` in the prompt, in order.

    A bracketed run of Chinese characters that is not one of the fifteen tags is almost
    always a mistyped tag (Qingbo would silently treat it as text), so it is an error
    when `strict`; other bracketed text such as `[Scene 1]` is left alone as prose.
    """
    tags = []
    for match in _BRACKET.finditer(prompt):
        inner = match.group(1).strip()
        tag = CAMERA_TAGS_BY_NAME.get(inner)
        if tag is not None and inner == tag.tag.strip("[]"):
            tags.append(tag.tag)
        elif strict and _CJK_ONLY.match(inner):
            raise InvalidRequest(
                f"prompt: unknown camera tag [{inner}]; known tags: {_KNOWN_TAGS}", param="prompt"
            )
    return tags


def canonical_camera_tag(value: str, *, param: str) -> str:
    tag = CAMERA_TAGS_BY_NAME.get(value.strip()) or CAMERA_TAGS_BY_NAME.get(value.strip("[] "))
    if tag is None:
        raise InvalidRequest(
            f"{param}: unknown camera tag {value!r}; known tags: {_KNOWN_TAGS}", param=param
        )
    return tag.tag


def check_http_url(value: str, *, param: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{param}: must be an absolute http(s) URL", param=param)


def check_image(value: str, *, param: str) -> None:
    """A public http(s) URL, or Base64 (optionally a data: URI) of a JPG, PNG or WEBP image."""
    if value.startswith(("http://", "https://")):
        check_http_url(value, param=param)
        return
    declared = None
    data = value
    match = _DATA_URI.match(value)
    if match:
        declared, data = match.group("mime").lower(), match.group("data")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{param}: must be an http(s) URL or Base64 of a JPG, PNG or WEBP image", param=param
        ) from None
    mime = filetype.guess_mime(raw[:262]) if raw else None
    if mime not in IMAGE_MIME_TYPES:
        found = mime or "unrecognised data"
        raise InvalidRequest(
            f"{param}: image must be JPG, PNG or WEBP (content is {found})", param=param
        )
    if declared is not None and declared not in (mime, "image/jpg"):
        raise InvalidRequest(
            f"{param}: data URI says {declared} but the content is {mime}", param=param
        )
