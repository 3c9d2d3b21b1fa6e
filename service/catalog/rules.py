"""Catalog rules applied to a parsed request: shared by the gateway and the simulator."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import filetype
import orjson

from service.catalog.generations import Generation, ModelSpec
from service.catalog.hailuo_terms import CAMERA_TAGS, CAMERA_TAGS_BY_NAME, IMAGE_MIME_TYPES
from service.catalog.schemas import HailuoRequest
from service.catalog.statuses import TERMINAL_STATUSES
from service.platform.errors import InvalidRequest

_BRACKET = re.compile(r"\[([^\[\]]{1,16})\]")
_CJK_ONLY = re.compile(r"^[\u4e00-\u9fff]+$")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_KNOWN_TAGS = ", ".join(t.tag for t in CAMERA_TAGS)


@dataclass(frozen=True)
class NormalizedTask:
    """A validated request.

    `request` is the canonical, generation-neutral form stored with the task (what the app
    asked for, defaults filled in); `upstream` is the exact body the configured generation
    is sent (minus the callback), made again from `request` at submission.
    """

    model_id: str
    family: str
    request: dict[str, Any]
    upstream: dict[str, Any]
    callback_url: str | None
    callback_events: list[str]
    priority: int
    # What the price is computed on: the vendor fields as the upstream takes them (for a
    # chained action, with what it inherits from its source task added at admission).
    pricing_body: dict[str, Any] = field(default_factory=dict)
    # A chained action's source: the caller's own gateway task id (`ref_task_id`).
    ref_task_id: str | None = None


DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024


def normalize(
    req: HailuoRequest, gen: Generation, *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> NormalizedTask:
    """Check `req` (either generation's form) and translate it for `gen`; a refusal names
    the field and changes nothing. Base64 images may decode to `max_image_bytes` each."""
    spec = gen.model(req.model)
    if not req.prompt.strip():
        raise InvalidRequest("prompt: must not be blank", param="prompt")
    if req.image_urls and (req.first_frame_image or req.last_frame_image):
        raise InvalidRequest(
            "image_urls: send either image_urls or first_frame_image/last_frame_image, not both",
            param="image_urls",
        )
    if req.last_frame_image and not req.first_frame_image:
        raise InvalidRequest(
            "last_frame_image: needs a first_frame_image", param="last_frame_image"
        )
    request: dict[str, Any] = {
        "model": spec.id,
        "action": "generate",
        "prompt": req.prompt,
        "aspect_ratio": req.aspect_ratio,
        "resolution": req.resolution or spec.default_resolution,
        "duration": spec.default_duration if req.duration is None else req.duration,
        "watermark": req.watermark,
        "prompt_optimizer": req.prompt_optimizer,
        "fast_pretreatment": req.fast_pretreatment,
    }
    for name in ("image_urls", "first_frame_image", "last_frame_image", "seed"):
        value = getattr(req, name)
        if value is not None:
            request[name] = value
    images = _frames(request)
    for param, image in images:
        check_image(image, param=param, max_bytes=max_image_bytes)
    if images:
        request["action"] = "image2video"  # Qingbo routes by media fields
    elif req.action == "image2video":
        raise InvalidRequest(
            "image_urls: image2video needs an image (image_urls or first_frame_image)",
            param="image_urls",
        )
    prompt_camera_tags(req.prompt)  # a mistyped in-prompt tag is an error in any generation
    if req.camera_movement_tags:
        request["camera_movement_tags"] = [
            canonical_camera_tag(tag, param=f"camera_movement_tags[{i}]")
            for i, tag in enumerate(req.camera_movement_tags)
        ]
    if req.callback_url is not None:
        check_http_url(req.callback_url, param="callback_url")
    if req.metadata:
        request["metadata"] = check_metadata(req.metadata)
    events: list[str] = (
        list(dict.fromkeys(req.callback_events))
        if req.callback_events is not None
        else list(TERMINAL_STATUSES)
    )
    upstream = upstream_body(request, gen)
    return NormalizedTask(
        model_id=spec.id,
        family=spec.family,
        request=request,
        upstream=upstream,
        pricing_body={k: v for k, v in upstream.items() if k != "model"},
        callback_url=req.callback_url,
        callback_events=events,
        priority=req.priority,
    )


def upstream_body(request: dict[str, Any], gen: Generation) -> dict[str, Any]:
    """The exact body `gen` is sent for a canonical request, or InvalidRequest naming the
    field that generation cannot honour. Driven by the generation's data, no version checks."""
    spec = gen.model(request["model"])
    resolution, duration = request["resolution"], request["duration"]
    frames = _frames(request)
    _check_resolution_and_duration(spec, resolution, duration, has_first_frame=bool(frames))
    body: dict[str, Any] = {
        "model": spec.id,
        "action": request["action"] if "image2video" in _actions(gen) else "generate",
        "prompt": _prompt_with_tags(request, spec),
        "resolution": resolution,
        "duration": duration,
        "watermark": request["watermark"],
        "prompt_optimizer": request["prompt_optimizer"],
        "fast_pretreatment": request["fast_pretreatment"],
    }
    aspect = request.get("aspect_ratio")
    if spec.aspect_ratios:
        body["aspect_ratio"] = aspect or spec.aspect_ratios[0]
    elif aspect not in (None, "16:9"):  # 16:9 was the old default: nothing is lost
        raise InvalidRequest(
            f"aspect_ratio: the current Qingbo API ({gen.version}) cannot honour {aspect}: its "
            "Hailuo models take no aspect_ratio and render 16:9",
            param="aspect_ratio",
        )
    body.update(_image_fields(request, frames, spec, gen))
    listed = request.get("camera_movement_tags")
    if listed and spec.camera_tags == "field":
        body["camera_movement_tags"] = listed
    if request.get("seed") is not None:
        if not spec.seed:
            raise InvalidRequest(
                f"seed: {spec.id} takes no seed on the configured Qingbo API ({gen.version})",
                param="seed",
            )
        body["seed"] = request["seed"]
    return body


def _actions(gen: Generation) -> tuple[str, ...]:
    return ("generate", "image2video") if gen.image_form == "image_urls" else ("generate",)


def _frames(request: dict[str, Any]) -> list[tuple[str, str]]:
    if request.get("image_urls"):
        return [(f"image_urls[{i}]", u) for i, u in enumerate(request["image_urls"])]
    named = [(n, request.get(n)) for n in ("first_frame_image", "last_frame_image")]
    return [(n, v) for n, v in named if v]


def _check_resolution_and_duration(
    spec: ModelSpec, resolution: str, duration: int, *, has_first_frame: bool
) -> None:
    if resolution not in spec.resolutions:
        raise InvalidRequest(
            f"resolution: {spec.id} supports {', '.join(spec.resolutions)}", param="resolution"
        )
    if resolution in spec.first_frame_only and not has_first_frame:
        raise InvalidRequest(
            f"resolution: {resolution} on {spec.id} needs a first frame (first_frame_image)",
            param="resolution",
        )
    if duration not in spec.durations:
        allowed = " or ".join(str(d) for d in spec.durations)
        raise InvalidRequest(f"duration: must be {allowed} seconds", param="duration")
    if duration not in spec.durations_at(resolution):
        allowed = " or ".join(str(d) for d in spec.durations_at(resolution))
        raise InvalidRequest(
            f"duration: {resolution} allows only {allowed} seconds", param="duration"
        )


def _image_fields(
    request: dict[str, Any], frames: list[tuple[str, str]], spec: ModelSpec, gen: Generation
) -> dict[str, Any]:
    if len(frames) > spec.max_images:
        param = frames[0][0].partition("[")[0] if len(frames) > 2 else frames[-1][0]
        raise InvalidRequest(
            f"{param}: {spec.id} takes at most {spec.max_images} image"
            f"{'s' if spec.max_images > 1 else ''} on the configured Qingbo API ({gen.version})"
            + ("; only minimax-hailuo-02 takes a last frame" if gen.image_form == "frames" else ""),
            param=param,
        )
    if gen.image_form == "image_urls":
        if request.get("last_frame_image"):
            raise InvalidRequest(
                f"last_frame_image: the configured Qingbo API ({gen.version}) has no last frame",
                param="last_frame_image",
            )
        return {"image_urls": [image for _, image in frames]} if frames else {}
    if spec.first_frame_required and not frames:
        raise InvalidRequest(
            f"first_frame_image: required by {spec.id} on the configured Qingbo API "
            f"({gen.version}): it is image-to-video only",
            param="first_frame_image",
        )
    fields = {}
    for name, (_, image) in zip(("first_frame_image", "last_frame_image"), frames, strict=False):
        fields[name] = image
    return fields


def _prompt_with_tags(request: dict[str, Any], spec: ModelSpec) -> str:
    """The prompt as `spec` takes it: listed camera tags go to their own field where the
    model has one, else they are written at the prompt's start, in order, once each."""
    prompt: str = request["prompt"]
    listed: list[str] = request.get("camera_movement_tags") or []
    # The prompt's own tags matter only where tags are not a field of their own.
    if spec.camera_tags == "none" and (listed or prompt_camera_tags(prompt, strict=False)):
        param = "camera_movement_tags" if listed else "prompt"
        raise InvalidRequest(f"{param}: {spec.id} takes no camera-movement tags", param=param)
    if spec.camera_tags == "prompt" and listed:
        in_prompt = prompt_camera_tags(prompt, strict=False)
        missing = [tag for tag in dict.fromkeys(listed) if tag not in in_prompt]
        if missing:
            prompt = "".join(missing) + " " + prompt
    if len(prompt) > spec.max_prompt_chars:
        where = " once camera_movement_tags are written into it" if listed else ""
        raise InvalidRequest(
            f"prompt: at most {spec.max_prompt_chars} characters{where}", param="prompt"
        )
    return prompt


MAX_METADATA_KEYS = 16
MAX_METADATA_VALUE_CHARS = 512
MAX_METADATA_BYTES = 4096
METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """The app's labels, or InvalidRequest naming the key (`metadata.<key>`) and the rule."""
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"metadata: at most {MAX_METADATA_KEYS} keys", param="metadata")
    for key, value in metadata.items():
        if not METADATA_KEY.match(key):
            shown = key[:64].encode("unicode_escape").decode()
            raise InvalidRequest(
                f"metadata: key {shown!r} must be 1 to 64 of A-Z a-z 0-9 _ . -",
                param="metadata",
            )
        param = f"metadata.{key}"
        if not isinstance(value, str):
            raise InvalidRequest(f"{param}: must be a string", param=param)
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"{param}: at most {MAX_METADATA_VALUE_CHARS} characters", param=param
            )
        if "\x00" in value:  # Postgres cannot store NUL in jsonb
            raise InvalidRequest(f"{param}: must not contain NUL characters", param=param)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"{param}: must be valid Unicode", param=param) from None
    if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"metadata: at most {MAX_METADATA_BYTES} bytes as JSON", param="metadata"
        )
    return dict(metadata)


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


def check_image(value: str, *, param: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
    """A public http(s) URL, or Base64 (optionally a data: URI) of a JPG, PNG or WEBP image
    of at most `max_bytes` decoded (sized before decoding, so a huge one costs nothing)."""
    if value.startswith(("http://", "https://")):
        check_http_url(value, param=param)
        return
    declared = None
    data = value
    match = _DATA_URI.match(value)
    if match:
        declared, data = match.group("mime").lower(), match.group("data")
    compact = "".join(data.split())
    decoded_size = len(compact) * 3 // 4 - compact[-2:].count("=")
    if decoded_size > max_bytes:
        raise InvalidRequest(
            f"{param}: at most {max_bytes} bytes decoded (this image is {decoded_size}); "
            "send a URL for larger images",
            param=param,
        )
    try:
        raw = base64.b64decode(compact, validate=True)
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
