"""Hailuo's prompt camera tags and the image types a first or last frame may be."""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")


@dataclass(frozen=True)
class CameraTag:
    tag: str
    gloss: str
    effect: str


CAMERA_TAGS: tuple[CameraTag, ...] = (
    CameraTag("[左移]", "pan-left", "camera translates left"),
    CameraTag("[右移]", "pan-right", "camera translates right"),
    CameraTag("[上升]", "boom-up", "camera rises"),
    CameraTag("[下降]", "boom-down", "camera lowers"),
    CameraTag("[推进]", "dolly-in", "camera moves forward"),
    CameraTag("[拉远]", "dolly-out", "camera moves backward"),
    CameraTag("[左摇]", "pan left", "body fixed, head turns left"),
    CameraTag("[右摇]", "pan right", "body fixed, head turns right"),
    CameraTag("[上摇]", "tilt up", "head tilts up"),
    CameraTag("[下摇]", "tilt down", "head tilts down"),
    CameraTag("[变焦推近]", "zoom-in", "focal-length zoom in"),
    CameraTag("[变焦拉远]", "zoom-out", "focal-length zoom out"),
    CameraTag("[晃动]", "shake", "handheld shake"),
    CameraTag("[跟随]", "follow", "follows the subject"),
    CameraTag("[固定]", "static", "camera fixed"),
)


CAMERA_TAGS_BY_NAME: dict[str, CameraTag] = {}
for _tag in CAMERA_TAGS:
    CAMERA_TAGS_BY_NAME[_tag.tag] = _tag
    CAMERA_TAGS_BY_NAME[_tag.tag.strip("[]")] = _tag
    CAMERA_TAGS_BY_NAME[_tag.gloss] = _tag
