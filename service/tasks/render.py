"""A task row as callers see it, in the answer version they were written for.

The shape of each version is data (service/catalog/wire.py, one `Wire` per generation):
`2026-04` has integer `progress`, Unix milliseconds and one string `url` per video entry;
`2026-09` (the vendor's current shape, task/status.mdx) has `progress` a percentage string
on reads, Unix seconds, `url` lists, `urls.get`/`urls.cancel`, the quota billing fields
(`pre_consumed_cost` on submit answers, `cost` and `billing_status` on terminal tasks) and a
cancel answer that says what was refunded. Its Hailuo models' tasks show `action` as
`generate` (hailuo.mdx: their only action); every other model's shows the action it was
sent with, as in `2026-04` (status.mdx: "identical to the value submitted").

The gateway's own fields (`cost_usd`, `estimated_cost_usd`, the normalised request, ...)
are the same in both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.archive.copier import error_class
from service.catalog.generations import DEFAULT_ANSWER_VERSION, generation
from service.catalog.rules import prompt_camera_tags
from service.catalog.statuses import TERMINAL_STATUSES
from service.catalog.wire import Wire
from service.platform.money import format_usd, micros_to_quota
from service.tasks.media import MARKER, summarise_image
from service.tasks.states import TaskStatus

DEFAULT_VERSION = DEFAULT_ANSWER_VERSION


def unix_s(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _stamp(wire: Wire, value: datetime | None) -> int | None:
    return None if value is None else wire.stamp(value.timestamp())


def charged_micros(row: Any) -> int:
    """What the task cost: charged once terminal, else the reservation (the estimate)."""
    charged = row["charged_micros"]
    return row["cost_micros"] if charged is None else int(charged)


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

    `base_url`: the gateway's own, for `urls` (relative paths without one).
    `submit_answer`: the answer to a submission (with the reservation where the version
    reports billing).
    """
    gen = generation(version)
    wire = gen.wire
    status = row["status"]
    task: dict[str, Any] = {
        "task_id": row["id"],
        "model": row["model"],
        # What Qingbo would show for the body sent: fixed only for the generation's own
        # (Hailuo) models, else the stored action (a chain's extend, regenerate, ...).
        "action": wire.show_action(row["action"], own_model=gen.offers(row["model"])),
        "status": status,
        "progress": wire.show_progress(
            status, row["progress"], submit_queued=submit_answer and status == TaskStatus.QUEUED
        ),
        "created_at": _stamp(wire, row["created_at"]),
        "start_time": _stamp(wire, row["start_time"]),
        "completed_at": _stamp(wire, row["completed_at"]),
        "result": wire.show_result(row["result"]),
        "error": row["error"],
    }
    links = wire.task_links(f"{(base_url or '').rstrip('/')}/v1/tasks/{row['id']}")
    if links is not None:
        task["urls"] = links
    if wire.billing is not None:
        if submit_answer:
            task[wire.billing.reserved] = micros_to_quota(row["cost_micros"])
        if status in TERMINAL_STATUSES:
            task[wire.billing.charged] = micros_to_quota(charged_micros(row))
            settled = status == TaskStatus.COMPLETED
            task[wire.billing.state] = "settled" if settled else "refunded"
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
    """A cancel answer: the task, and where the version answers a cancel with a refund
    receipt (2026-09, cancel.mdx), the receipt's fields too."""
    task = render_task(row, version=version, base_url=base_url)
    wire = generation(version).wire
    if wire.cancel_answer == "receipt" and row["status"] == TaskStatus.CANCELLED:
        task.update(wire.refund(micros_to_quota(row["cost_micros"])))
    return task
