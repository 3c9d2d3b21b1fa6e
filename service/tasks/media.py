"""Base64 images live beside a task, not in it.

A task's stored `request` is read by every list, read, event and webhook; an image sent as
Base64 can be 10 MiB. So at admission each Base64 image is moved to `task_media` and
replaced in the request by a marker naming its size. Only the submission to Qingbo puts
the images back (`join_media`); everything else renders the marker as a summary.
Measured by bench/list_images.py.
"""

from __future__ import annotations

import copy
from typing import Any

MARKER = "qgw-media:"  # never a valid image value (check_image takes http(s) or Base64)
IMAGE_FIELDS = ("image_urls", "first_frame_image", "last_frame_image")


def _is_inline(value: Any) -> bool:
    return isinstance(value, str) and not value.startswith(("http://", "https://"))


def _marker(value: str) -> str:
    return f"{MARKER}{len(value) * 3 // 4}"


def split_media(request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The request to store (each Base64 image replaced by a marker) and the images taken
    out of it, by field (None when it carries none)."""
    media: dict[str, Any] = {}
    stored = request
    for field in IMAGE_FIELDS:
        value = request.get(field)
        if (isinstance(value, list) and any(_is_inline(v) for v in value)) or _is_inline(value):
            media[field] = value
    if not media:
        return request, None
    stored = dict(request)
    for field, value in media.items():
        stored[field] = (
            [_marker(v) if _is_inline(v) else v for v in value]
            if isinstance(value, list)
            else _marker(value)
        )
    return stored, media


def join_media(stored: dict[str, Any], media: dict[str, Any] | None) -> dict[str, Any]:
    """The request as the app sent it: the stored one with its images put back."""
    if not media:
        return stored
    request = copy.copy(stored)
    request.update(media)
    return request


def summarise_image(value: str | None) -> str | None:
    """How an image shows in answers: a URL as itself, Base64 by its size."""
    if value is None or value.startswith(("http://", "https://")):
        return value
    size = int(value.removeprefix(MARKER)) if value.startswith(MARKER) else len(value) * 3 // 4
    return f"base64 image, about {size} bytes"
