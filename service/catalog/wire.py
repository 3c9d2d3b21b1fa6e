"""How each generation of Qingbo's API spells a task on the wire, as data: one `Wire` per
generation (generations.py attaches it as `Generation.wire`). The gateway renders its
answers by it (tasks/render.py) and the simulator speaks each generation by it
(simulator/); neither compares a version.

What differs (qingbo-api.md; for 2026-09 the vendor's task/status.mdx and cancel.mdx):
timestamps in milliseconds or seconds, `progress` an integer or a percentage string, a
video's `url` a string or a list, the `urls` links, the billing fields in quota, the
spellings of a few error codes, and whether a cancel answers the task or a refund receipt.

Readers of Qingbo's answers (upstream/parse.py) take every spelling any generation has
used, whatever the configured generation claims: the vendor's own pages mix them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.catalog.statuses import TERMINAL_STATUSES, TaskStatus

TimeUnit = Literal["s", "ms"]
# "integer": 0-100 as a number. "percent": `""` while freshly queued, `"45%"`, and
# `"100%"` in every terminal state (failed and cancelled too).
ProgressForm = Literal["integer", "percent"]
# "one_per_entry": each video entry holds one URL as a string (a stored entry with several
# becomes several entries). "list": each entry holds its URLs as a list, even one.
UrlForm = Literal["one_per_entry", "list"]
# "task": a cancel answers the task itself. "receipt": it answers what was refunded.
CancelForm = Literal["task", "receipt"]


@dataclass(frozen=True)
class QuotaBilling:
    """The names of the billing fields of a generation that reports money in Qingbo's quota
    (500,000 quota = 1 USD). The gateway's own USD fields are the same in every shape."""

    reserved: str = "pre_consumed_cost"  # on a submit answer: the quota frozen for the task
    charged: str = "cost"  # on terminal states: what was charged, 0 after a refund
    state: str = "billing_status"  # on terminal states
    refunded: str = "refunded"  # on a cancel receipt: true
    refunded_quota: str = "refunded_quota"  # on a cancel receipt: how much came back


# The only names Qingbo has used for billing: readers look for them in any answer.
QUOTA_BILLING = QuotaBilling()


@dataclass(frozen=True)
class ErrorCodes:
    """The codes (and the one HTTP status) a generation spells differently."""

    task_not_found: str  # 404 on a task id the account does not have
    not_cancellable: str  # a cancel of a task no longer queued
    not_cancellable_status: int
    task_failed: str  # a failed task's `error.code` when the generator gave up
    undeclared_field: str  # a body field the model does not take (never billed)


@dataclass(frozen=True)
class Wire:
    """One generation's answer shapes."""

    # created_at, start_time and completed_at as the gateway shows them. The vendor's own
    # status examples show start_time and completed_at in seconds in both generations, and
    # the simulator follows them there (simulator/state.py::render).
    time_unit: TimeUnit
    progress: ProgressForm
    video_urls: UrlForm
    links: bool  # `urls: {"get": ..., "cancel": ...}` on every task
    billing: QuotaBilling | None  # None: the generation reports no money on a task
    errors: ErrorCodes
    cancel_answer: CancelForm
    result_ttl_seconds: int  # how long a result link works after the task finished
    # The `action` a task of the generation's own models (its Hailuo models, Generation.
    # offers) shows whatever it was asked with, where the vendor fixes it: 2026-09's
    # hailuo.mdx makes `generate` their only action, the mode following the media fields.
    # None: as asked. Any other model's task shows the action it was submitted with
    # (status.mdx: "identical to the value submitted"), a chained one's included.
    fixed_action: str | None
    # Whether the body may carry the `extra` pass-through object (an empty one is no field).
    extra_object: bool

    def __post_init__(self) -> None:
        if self.cancel_answer == "receipt" and self.billing is None:
            raise ValueError("a refund receipt needs the generation's billing fields")

    def show_action(self, asked: str, *, own_model: bool) -> str:
        """A task's `action` as this generation shows it. `asked`: the action the task was
        submitted with (the gateway's stored one: the app's, or its model's first);
        `own_model`: whether the model is one of the generation's own (Generation.offers).
        Only there does a fixed action replace it: the vendor fixes no other model's (a
        Kling `edit`, a Veo `extend`, an H3 `regenerate` show as such)."""
        return self.fixed_action if own_model and self.fixed_action is not None else asked

    def stamp(self, seconds: float) -> int:
        """A Unix time (seconds, fractional) in this generation's unit."""
        return int(seconds * 1000) if self.time_unit == "ms" else int(seconds)

    def show_progress(
        self, status: str, progress: int, *, submit_queued: bool = False
    ) -> int | str:
        """`progress` as this generation shows it. `submit_queued`: the answer to a
        submission still queued, which every generation shows as the integer 0."""
        if self.progress == "integer":
            return progress
        if submit_queued:
            return 0
        if status in TERMINAL_STATUSES:
            return "100%"
        return "" if status == TaskStatus.QUEUED and progress == 0 else f"{progress}%"

    def show_result(self, result: Any) -> dict[str, Any] | None:
        """A result held with each video's `url` as a list (older rows: a string), shaped
        for this generation; None when there is none."""
        if not isinstance(result, dict):
            return None
        videos: list[dict[str, Any]] = []
        for item in result.get("videos") or []:
            urls = item.get("url")
            url_list = [urls] if isinstance(urls, str) else list(urls or [])
            if self.video_urls == "list":
                videos.append({"url": url_list, "expires_at": item.get("expires_at")})
            else:
                videos.extend({"url": u, "expires_at": item.get("expires_at")} for u in url_list)
        return {"images": list(result.get("images") or []), "videos": videos}

    def task_links(self, task_url: str) -> dict[str, str] | None:
        """The `urls` member for the task at `task_url`, where this generation has one."""
        return {"get": task_url, "cancel": f"{task_url}/cancel"} if self.links else None

    def refund(self, quota: int | None) -> dict[str, Any]:
        """A cancel receipt's billing fields (`quota` None: a refund claimed without a sum)."""
        assert self.billing is not None  # __post_init__: a receipt has billing fields
        fields: dict[str, Any] = {self.billing.refunded: True}
        if quota is not None:
            fields[self.billing.refunded_quota] = quota
        return fields


APRIL_2026_WIRE = Wire(
    time_unit="ms",
    progress="integer",
    video_urls="one_per_entry",
    links=False,
    billing=None,
    errors=ErrorCodes(
        task_not_found="not_found",
        not_cancellable="not_cancellable",
        not_cancellable_status=409,
        task_failed="generation_failed",
        undeclared_field="invalid_request",
    ),
    cancel_answer="task",
    result_ttl_seconds=24 * 3600,
    fixed_action=None,
    extra_object=False,
)

SEPTEMBER_2026_WIRE = Wire(
    time_unit="s",
    progress="percent",
    video_urls="list",
    links=True,
    billing=QUOTA_BILLING,
    errors=ErrorCodes(
        task_not_found="task_not_found",
        not_cancellable="task_not_cancellable",
        not_cancellable_status=400,
        task_failed="task_failed",
        undeclared_field="capability_violation",
    ),
    cancel_answer="receipt",
    result_ttl_seconds=7 * 24 * 3600,
    fixed_action="generate",
    extra_object=True,
)
