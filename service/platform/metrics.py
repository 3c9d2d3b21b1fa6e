"""Prometheus metrics: one `qgw_` prefix, base units, bounded labels.

Never a task id, key or prompt as a label.

Processes: each worker and each API container serves its own /metrics (Prometheus sums
counters across targets). `api --workers N` runs N uvicorn processes behind one port, so
there the counters and histograms use prometheus-client's multiprocess mode (samples in
files under PROMETHEUS_MULTIPROC_DIR, merged by whichever process answers the scrape).
Gauges of shared state (backlog, budgets, queue, pause) are not stored at all: every
scrape reads them from Postgres and Redis (service/ops/state_metrics.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


@functools.lru_cache(maxsize=4096)  # label values are bounded (no ids): a few hundred
def child(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once: labels() takes a lock and checks its
    values on every call, which hot paths (every request, every admission) pay for."""
    return metric.labels(*values)


# Issue 30: every metric labelled by `model` carries its `family` too (a model belongs to
# one family, so this adds no series). Call sites keep passing the other labels; the family
# is looked up here, in the map the catalog in force sets (service/catalog/refresh.py).
_families: dict[str, str] = {}


def set_model_families(families: Mapping[str, str]) -> None:
    """Model id -> family, from the catalog this process uses (swapped whole)."""
    global _families
    _families = dict(families)


def family_of(model: str) -> str:
    return _families.get(model, "")


class _FamilyLabelled:
    """`labels(...)` given every label but `family` fills it in from `model`."""

    _labelnames: tuple[str, ...]

    def labels(self, *values: Any, **named: Any) -> Any:
        if named and "family" not in named:
            named["family"] = family_of(str(named.get("model", "")))
        elif values and len(values) == len(self._labelnames) - 1:
            model = str(values[self._labelnames.index("model")])
            return child(self, *values, family_of(model))
        return super().labels(*values, **named)  # type: ignore[misc]


class FamilyCounter(_FamilyLabelled, Counter):
    pass


class FamilyHistogram(_FamilyLabelled, Histogram):
    pass


HTTP_REQUESTS = Counter(
    "qgw_http_requests_total", "HTTP requests served", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "qgw_http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TASKS_ADMITTED = FamilyCounter(
    "qgw_tasks_admitted_total", "Tasks admitted", ["team", "model", "resolution", "family"]
)
TASKS_REJECTED = Counter("qgw_tasks_rejected_total", "Submissions rejected", ["reason"])
TASKS_TERMINAL = FamilyCounter(
    "qgw_tasks_terminal_total",
    "Tasks that reached a terminal state",
    ["team", "model", "status", "family"],
)
UPSTREAM_CALLS = Counter("qgw_upstream_calls_total", "Calls to Qingbo", ["operation", "outcome"])
UPSTREAM_LATENCY = Histogram(
    "qgw_upstream_call_duration_seconds",
    "Latency of calls to Qingbo",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_AMBIGUOUS = Counter(
    "qgw_upstream_ambiguous_submissions_total",
    "Submissions whose outcome at Qingbo is unknown (timed out after sending)",
    ["policy"],
)
UPSTREAM_AMBIGUOUS_RESENDS = Counter(
    "qgw_upstream_ambiguous_resends_total",
    "Submissions sent again after an unknown outcome (idempotent_resubmit: with the same "
    "Idempotency-Key; resubmit: blind)",
    ["policy"],
)
UPSTREAM_ODD_ANSWERS = Counter(
    "qgw_upstream_odd_answers_total",
    "Qingbo answers with strange content (unknown status, bad progress, absurd time), "
    "recorded as far as they make sense and never resent",
    ["operation", "oddity"],
)
UPSTREAM_TRANSIENT_NOT_FOUND = Counter(
    "qgw_upstream_transient_not_found_total",
    "404s on a task Qingbo accepted moments before, read again instead of failing the task",
)
DATABASE_RETRIES = Counter(
    "qgw_database_write_retries_total",
    "Writes of Qingbo's answers tried again because the database was unavailable",
)
UPSTREAM_SUBMIT_RETRIES = Counter(
    "qgw_upstream_submit_retries_total", "Submissions put back for a retry", ["reason"]
)
UPSTREAM_READ_RETRIES = Counter(
    "qgw_upstream_read_retries_total",
    "Failed reads of tracked tasks retried on the short read backoff",
    ["reason"],
)
UPSTREAM_PAUSES = Counter(
    "qgw_upstream_pauses_total", "Times submissions were paused by Qingbo's answer", ["reason"]
)
RECONCILER_REPAIRS = Counter(
    "qgw_reconciler_repairs_total", "Tasks the reconciler re-drove", ["kind"]
)
CALLBACKS_RECEIVED = Counter(
    "qgw_upstream_callbacks_total", "Callbacks received from Qingbo", ["outcome"]
)
DISPATCH_CLAIMED = Counter("qgw_dispatch_claimed_total", "Tasks claimed for submission")

_TASK_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
ADMISSION_BATCH_SIZE = Histogram(
    "qgw_admission_batch_size",
    "Admissions sent to Postgres together (tasks/admission_batch.py)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
ADMISSION_BATCHES_DECLINED = Counter(
    "qgw_admission_batches_declined_total",
    "Admission batches Postgres declined (tasks/admission_batch.py), by reason: shard_full "
    "or capped_team (their tasks then go each on its own), or an unexpected error's name "
    "(each task of the batch answered with it)",
    ["reason"],
)
# Quote before admission (tasks/quoting.py), by outcome: quoted (the quote reserved),
# above_bound (the quote was higher: the bound kept), refused (a permanent code: the task
# refused), declined (another refusal: the bound kept), timeout, unreachable, http_error,
# bad_answer (the bound kept), too_large and chained (not asked: a body over the request
# limit; a chained action, whose source only the gateway knows by its own id).
ADMISSION_QUOTES = Counter(
    "qgw_admission_quotes_total",
    "Quotes asked of Qingbo before admitting a task whose price rests on input media",
    ["outcome"],
)
TASK_QUEUE_WAIT = FamilyHistogram(
    "qgw_task_queue_wait_seconds",
    "From admission to Qingbo accepting the task",
    ["model", "family"],
    buckets=_TASK_BUCKETS,
)
TASK_UPSTREAM_RUN = FamilyHistogram(
    "qgw_task_upstream_run_seconds",
    "From Qingbo accepting the task to its terminal state",
    ["model", "status", "family"],
    buckets=_TASK_BUCKETS,
)
TASK_END_TO_END = FamilyHistogram(
    "qgw_task_end_to_end_seconds",
    "From admission to the terminal state",
    ["model", "status", "family"],
    buckets=_TASK_BUCKETS,
)
# Money.
COST_CHARGED = FamilyCounter(
    "qgw_cost_charged_usd_total",
    "USD charged for completed tasks (settled budget spend)",
    ["team", "model", "family"],
)
UPSTREAM_LATE_ANSWERS = Counter(
    "qgw_upstream_late_answers_total",
    "Callbacks from Qingbo for tasks already failed for taking too long (upstream_timeout)",
)
COST_DRIFT = FamilyCounter(
    "qgw_upstream_cost_drift_usd_total",
    "USD by which Qingbo's reported cost differed from the price table's estimate",
    ["model", "direction", "family"],
)
# Issue 31: a charge beyond the reservation times QGW_CHARGE_CAP_FACTOR is disputed
# (budgets/disputes.py); a terminal answer Postgres refuses ends the task (tracking.py).
CHARGE_DISPUTES = FamilyCounter(
    "qgw_charge_disputes_total",
    "Charges Qingbo reported beyond the cap (reservation x QGW_CHARGE_CAP_FACTOR): disputes",
    ["team", "model", "family"],
)
CHARGE_DISPUTED_USD = FamilyCounter(
    "qgw_charge_disputed_usd_total",
    "USD Qingbo reported beyond the cap, not charged to budgets until an admin accepts it",
    ["team", "model", "family"],
)
TASKS_UNRECORDABLE = FamilyCounter(
    "qgw_tasks_unrecordable_total",
    "Tasks failed upstream_answer_unrecordable: Qingbo's terminal answer could not be stored",
    ["model", "family"],
)
BUDGET_THRESHOLD_CROSSINGS = Counter(
    "qgw_budget_threshold_crossings_total",
    "Budget windows whose spent + reserved crossed an alert level (team empty: company)",
    ["team", "scope", "window", "percent"],
)
BUDGET_EXCLUSIVE_ADMISSIONS = Counter(
    "qgw_budget_exclusive_admissions_total",
    "Admissions run again locking whole budget windows: a budget shard had no room (near a "
    "limit or alert level, a new window, a changed limit)",
)
RATE_LIMIT_ERRORS = Counter(
    "qgw_rate_limit_backend_errors_total",
    "Rate-limit checks that could not reach Redis, by what was done",
    ["action"],
)
# Webhooks to apps.
WEBHOOK_DEFERRED = Counter(
    "qgw_webhook_deferred_total",
    "Webhook attempts put off (not made, not counted as attempts) because their destination, "
    "or this worker's webhook slots, were at their concurrency cap",
)
WEBHOOK_ATTEMPTS = Counter(
    "qgw_webhook_attempts_total",
    "Webhook delivery attempts by result (delivered, retry, failed, stopped, blocked)",
    ["event", "result"],
)
WEBHOOK_LATENCY = Histogram(
    "qgw_webhook_attempt_duration_seconds",
    "From connecting to the receiver's answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_DELIVERY_ATTEMPTS = Histogram(
    "qgw_webhook_attempts_per_delivery",
    "Attempts an event took until delivered, failed or stopped",
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 10, 15),
)
WEBHOOK_DELIVERY_DELAY = Histogram(
    "qgw_webhook_delivery_delay_seconds",
    "From the event (the task's change) to the receiver's 2xx",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600, 86400),
)
UPSTREAM_IN_FLIGHT = Gauge(
    "qgw_upstream_requests_in_flight",
    "Calls to Qingbo waiting for their answer now, by operation (sum across processes)",
    ["operation"],
    multiprocess_mode="livesum",
)
RATE_LIMIT_CHECKS_IN_PROGRESS = Gauge(
    "qgw_rate_limit_checks_in_progress",
    "Submissions waiting on the rate-limit store (Redis) now, none holding a database "
    "connection after 50 ms; a stalled Redis shows here (sum across processes)",
    multiprocess_mode="livesum",
)
ARCHIVE_VIDEOS = Counter(
    "qgw_archive_videos_total",
    "Attempts to archive a result video, by outcome (stored, retry, failed)",
    ["outcome"],
)
ARCHIVE_BYTES = Counter("qgw_archive_bytes_total", "Bytes of video stored in the archive")
ARCHIVE_TOO_LARGE = Counter(
    "qgw_archive_too_large_total",
    "Result videos not archived because their link declared or sent more than "
    "QGW_ARCHIVE_MAX_BYTES (the download is cut off there; the video's archive is failed)",
)
ARCHIVE_WAIT = Histogram(
    "qgw_archive_wait_seconds",
    "From a task's completion to its video stored in the archive",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 24 * 3600),
)
TASK_EVENT_WAITERS = Gauge(
    "qgw_task_event_waiters",
    "Sync waiters and event streams this API process holds (sum across processes)",
    multiprocess_mode="livesum",
)

# arq jobs, counted by the worker that runs them.
JOBS = Counter("qgw_jobs_total", "arq jobs run, by function and outcome", ["function", "outcome"])
JOB_DURATION = Histogram(
    "qgw_job_duration_seconds",
    "arq job run time by function",
    ["function"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOBS_IN_PROGRESS = Gauge(
    "qgw_jobs_in_progress",
    "arq jobs running now in this worker, by function",
    ["function"],
    multiprocess_mode="livesum",
)

# Issue 30: the catalog each process prices and checks by (service/catalog/refresh.py).
CATALOG_INFO = Gauge(
    "qgw_catalog_info",
    "1 for the catalog document (by digest) this process uses; summed across processes, "
    "how many use each digest (all on the new one within QGW_CATALOG_REFRESH_SECONDS)",
    ["digest"],
    multiprocess_mode="livesum",
)
CATALOG_LOAD_FAILURES = Counter(
    "qgw_catalog_load_failures_total",
    "Catalog documents in force that this process could not load (invalid: the document "
    "refused, the old one kept; database: the in-force digest could not be read; error: "
    "anything else, logged)",
    ["reason"],
)
