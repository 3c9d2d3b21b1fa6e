"""A task row as callers see it, in the answer version they were written for.

- `2026-04`: integer `progress`, Unix milliseconds, `result.videos[].url` a string (one video
  entry per URL).
- `2026-09` (the vendor's current shape, task/status.mdx): `progress` a percentage string on
  reads (`""`, `"45%"`, `"100%"` in every terminal state) and the integer 0 on a submit
  answer still queued; Unix seconds; `url` a list; `urls.get`/`urls.cancel`; on terminal
  tasks `cost` (quota charged, 0 after a refund) and `billing_status`; `pre_consumed_cost`
  on submit answers (the reservation, in quota).

The gateway's own fields (`cost_usd`, `estimated_cost_usd`, the normalised request, ...)
are the same in both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.archive.copier import error_class
from service.catalog.generations import DEFAULT_ANSWER_VERSION
from service.catalog.rules import prompt_camera_tags
from service.catalog.statuses import TERMINAL_STATUSES
from service.platform.money import format_usd, micros_to_quota
from service.tasks.media import MARKER, summarise_image
from service.tasks.states import TaskStatus

DEFAULT_VERSION = DEFAULT_ANSWER_VERSION


def unix_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def unix_s(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def charged_micros(row: Any) -> int:
    """What the task cost: charged once terminal, else the reservation (the estimate)."""
    charged = row["charged_micros"]
    return row["cost_micros"] if charged is None else int(charged)


def _videos(result: Any, *, url_lists: bool) -> dict[str, Any] | None:
    """Stored results hold `url` as a list (older rows: a string); shape them per version."""
    if not isinstance(result, dict):
        return None
    videos: list[dict[str, Any]] = []
    for item in result.get("videos") or []:
        urls = item.get("url")
        url_list = [urls] if isinstance(urls, str) else list(urls or [])
        if url_lists:
            videos.append({"url": url_list, "expires_at": item.get("expires_at")})
        else:
            videos.extend({"url": u, "expires_at": item.get("expires_at")} for u in url_list)
    return {"images": list(result.get("images") or []), "videos": videos}


def _progress_text(row: Any) -> str:
    if row["status"] in TERMINAL_STATUSES:
        return "100%"
    return (
        "" if row["status"] == TaskStatus.QUEUED and row["progress"] == 0 else f"{row['progress']}%"
    )


# Request fields shown under their own names above, or never shown as model fields.
_SHOWN = frozenset(
    {
        "model",
        "action",
        "prompt",
        "aspect_ratio",
        "resolution",
        "duration",
        "image_urls",
        "first_frame_image",
        "last_frame_image",
        "seed",
        "camera_movement_tags",
        "watermark",
        "prompt_optimizer",
        "fast_pretreatment",
        "metadata",
        "catalog_digest",
    }
)


def _other_fields(request: dict[str, Any]) -> dict[str, Any]:
    """A catalog model's other fields as the app sent them (Base64 media by its size)."""
    shown: dict[str, Any] = {}
    for name, value in request.items():
        if name in _SHOWN:
            continue
        if isinstance(value, str):
            value = summarise_image(value) if value.startswith(MARKER) else value
        elif isinstance(value, list):
            value = [
                summarise_image(v) if isinstance(v, str) and v.startswith(MARKER) else v
                for v in value
            ]
        shown[name] = value
    return shown


def _gateway_fields(row: Any) -> dict[str, Any]:
    request = row["request"]
    images = request.get("image_urls")
    prompt = request.get("prompt")
    return {
        "cost_usd": format_usd(charged_micros(row)),
        "estimated_cost_usd": format_usd(row["cost_micros"]),
        "team_id": str(row["team_id"]),
        "upstream_task_id": row["upstream_task_id"],
        "prompt": prompt,
        # 16:9 was the 2026-04 default, and 2026-09's Hailuo takes no other (assumed).
        "aspect_ratio": request.get("aspect_ratio") or "16:9",
        "resolution": request.get("resolution"),
        "duration": request.get("duration"),
        "image_urls": [summarise_image(i) for i in images] if images else None,
        "first_frame_image": summarise_image(request.get("first_frame_image")),
        "last_frame_image": summarise_image(request.get("last_frame_image")),
        "seed": request.get("seed"),
        "camera_movement_tags": request.get("camera_movement_tags"),
        "prompt_camera_tags": prompt_camera_tags(prompt, strict=False)
        if isinstance(prompt, str)
        else [],
        "watermark": request.get("watermark", False),
        "prompt_optimizer": request.get("prompt_optimizer", True),
        "fast_pretreatment": request.get("fast_pretreatment", False),
        "catalog_digest": request.get("catalog_digest"),
        "other_fields": _other_fields(request),
        "priority": row["priority"],
        "callback_url": row["callback_url"],
        "callback_events": list(row["callback_events"]),
        "metadata": request.get("metadata") or {},
    }


def render_task(
    row: Any,
    *,
    version: str = DEFAULT_VERSION,
    base_url: str | None = None,
    submit_answer: bool = False,
) -> dict[str, Any]:
    """A task row as the API answers it in `version` (also the webhook payload's body).

    `base_url`: the gateway's own, for `urls` (2026-09; relative paths without one).
    `submit_answer`: the answer to a submission (2026-09 adds `pre_consumed_cost`).
    """
    if version == DEFAULT_VERSION:
        return {
            "task_id": row["id"],
            "model": row["model"],
            "action": row["action"],
            "status": row["status"],
            "progress": row["progress"],
            "created_at": unix_ms(row["created_at"]),
            "start_time": unix_ms(row["start_time"]),
            "completed_at": unix_ms(row["completed_at"]),
            "result": _videos(row["result"], url_lists=False),
            "error": row["error"],
            **_gateway_fields(row),
            "archive": archive_view(row, base_url),
        }
    queued_submit = submit_answer and row["status"] == TaskStatus.QUEUED
    path = f"{(base_url or '').rstrip('/')}/v1/tasks/{row['id']}"
    task: dict[str, Any] = {
        "task_id": row["id"],
        "model": row["model"],
        "action": "generate",  # 2026-09 has one action; the mode follows the media fields
        "status": row["status"],
        "progress": 0 if queued_submit else _progress_text(row),
        "created_at": unix_s(row["created_at"]),
        "start_time": unix_s(row["start_time"]),
        "completed_at": unix_s(row["completed_at"]),
        "result": _videos(row["result"], url_lists=True),
        "error": row["error"],
        "urls": {"get": path, "cancel": f"{path}/cancel"},
    }
    if submit_answer:
        task["pre_consumed_cost"] = micros_to_quota(row["cost_micros"])
    if row["status"] in TERMINAL_STATUSES:
        task["cost"] = micros_to_quota(charged_micros(row))
        task["billing_status"] = "settled" if row["status"] == TaskStatus.COMPLETED else "refunded"
    return {**task, **_gateway_fields(row), "archive": archive_view(row, base_url)}


def archive_view(row: Any, base_url: str | None) -> dict[str, Any]:
    """The kept copies (README "Archive"): `off` when there is nothing to keep (not
    completed, or completed with archiving off), else the videos' combined state."""
    videos = _archive_rows(row)
    if not videos:
        return {"state": "off", "videos": []}
    states = {v["state"] for v in videos}
    state = next((s for s in ("failed", "expired", "pending") if s in states), "stored")
    path = f"{(base_url or '').rstrip('/')}/v1/tasks/{row['id']}/content"
    return {
        "state": state,
        "videos": [
            {
                "url": f"{path}/{v['idx']}",
                "state": v["state"],
                "bytes": v["bytes"],
                "sha256": v["sha256"],
                "stored_at": unix_s(_as_datetime(v["stored_at"])),
                # Why it failed, as a class: the worker's text can name addresses.
                "error": error_class(v.get("error")) if v["state"] == "failed" else None,
            }
            for v in videos
        ],
    }


def _archive_rows(row: Any) -> list[dict[str, Any]]:
    try:
        rows = row["archive"]
    except KeyError:  # a row read without its archive (none was asked for)
        return []
    return list(rows or [])


def _as_datetime(value: Any) -> datetime | None:
    """stored_at from a jsonb aggregate is text; from a row, a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def render_cancelled(row: Any, *, version: str, base_url: str | None) -> dict[str, Any]:
    """A cancel answer: the task, and in 2026-09 what was refunded (cancel.mdx)."""
    task = render_task(row, version=version, base_url=base_url)
    if version != DEFAULT_VERSION and row["status"] == TaskStatus.CANCELLED:
        task["refunded"] = True
        task["refunded_quota"] = micros_to_quota(row["cost_micros"])
    return task
