"""One settings object, read from `QGW_`-prefixed environment variables by every role."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.catalog.generations import LATEST, ApiVersion, Generation, generation
from service.catalog.rules import METADATA_KEY
from service.platform.egress import parse_host_pattern

# Settings that no longer exist: a role refuses to start with one set rather than silently
# ignore it (an operator who set it expects it to mean something).
RETIRED_SETTINGS = {
    "QGW_UPSTREAM_MAX_SUBMIT_ATTEMPTS": "replaced by QGW_UPSTREAM_RETRY_DEADLINE_SECONDS "
    "(submissions are retried until a deadline, not a count)",
}
# Bearer tokens the api and worker refuse at start when set but weaker than this, or still
# the template's placeholder (deploy/k8s/secret.yaml). Empty stays allowed: it turns the
# admin API off, or leaves /metrics open (README "Configuration").
MIN_TOKEN_CHARS = 32
TOKEN_PLACEHOLDER = "REPLACE_ME"  # noqa: S105 (the value refused, not a secret)
STRONG_TOKEN_SETTINGS = ("admin_token", "metrics_token", "console_secret")
UNSET_MEANS = {"console_secret": "have one generated"}  # else: turns the feature off


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QGW_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/qingbo"
    redis_url: str = "redis://127.0.0.1:6379/0"
    arq_queue_name: str = "qgw:queue"

    qingbo_base_url: str = "https://www.qingbo.dev"
    # The generation of Qingbo's API the upstream speaks (README "Qingbo versions"): the
    # vendor's current one, or the April 2026 Hailuo page. The simulator follows it too.
    qingbo_api_version: ApiVersion = LATEST
    qingbo_api_key: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")
    # Bearer token /metrics requires (every team's names and spend are in it); empty: open.
    metrics_token: SecretStr = SecretStr("")
    # Where Qingbo can reach /internal/qingbo/callback; unset means polling only.
    public_base_url: str | None = None
    # The web console (/console, README "Console"): the key that signs its session cookie
    # (unset: one made at start, so sessions end at a restart and do not span replicas),
    # how long an idle session lives, and the Grafana dashboard its operations page links.
    console_secret: SecretStr = SecretStr("")
    console_idle_minutes: int = Field(30, ge=1, le=24 * 60)
    grafana_url: str | None = None
    price_table: Path | None = None
    # One whole catalog document (JSON) to load instead of the shipped one (built from
    # service/catalog/families/*.json); refused whole at start when bad (README "Catalog").
    catalog_file: Path | None = None
    # How often each API and worker process looks for a catalog an operator put in force
    # (PUT /admin/catalog): every process uses the new one within this many seconds.
    catalog_refresh_seconds: float = Field(2.0, gt=0, le=60)
    # The largest catalog document PUT /admin/catalog reads (the shipped one is ~150 KiB).
    max_catalog_body_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    # Quote before admission (tasks/quoting.py): `media` asks the vendor's public quote for
    # a task whose reservation is a bound resting on input media the vendor measures (a
    # reference video's seconds) and reserves the quote, never above the bound; any
    # failure keeps the bound. `off`: always the bound. The quote's URL (unset:
    # QGW_QINGBO_BASE_URL/waveapi/quote) and its deadline for the whole exchange.
    quote_before_admission: Literal["off", "media"] = "media"
    quote_url: str | None = None
    quote_timeout_seconds: float = Field(2.0, gt=0, le=30)

    # Upstream protection and retry policy.
    upstream_max_in_flight: int = Field(50, ge=1)
    # Submissions to Qingbo per second, all workers together (a token bucket in Postgres).
    upstream_max_submits_per_second: float = Field(10.0, gt=0)
    upstream_submit_burst: int = Field(10, ge=1)
    upstream_timeout_seconds: float = Field(30.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(5.0, gt=0)
    # Retryable submit errors (429, 5xx, unreachable, timeouts) and unknown outcomes are
    # retried with backoff until this long after the task was first sent (its wait in the
    # gateway's own queue does not count); then it fails `upstream_unavailable`.
    upstream_retry_deadline_seconds: float = Field(1800.0, gt=0)
    upstream_retry_base_seconds: float = Field(1.0, gt=0)
    upstream_retry_max_seconds: float = Field(120.0, gt=0)
    upstream_pause_seconds: float = Field(60.0, gt=0)
    # What to do when a submit call may or may not have reached Qingbo (see README).
    # Applies only where no upstream Idempotency-Key can settle it: the 2026-04 generation,
    # or a task first sent longer ago than Qingbo keeps keys (24 h).
    ambiguous_submit_policy: Literal["fail", "resubmit"] = "fail"
    # Under "resubmit", at most this many blind resends per task (each may be a second
    # paid video); then it fails `upstream_ambiguous`.
    ambiguous_max_resubmits: int = Field(2, ge=0)

    # Tracking: adaptive polling next to Qingbo's callbacks.
    poll_initial_seconds: float = Field(3.0, gt=0)
    # With callbacks on, each callback triggers a read and polls only stand in for a lost
    # one, so the first comes later: at the plain initial interval, thousands of tasks in
    # flight kept one worker's queue behind its polls and completions came seconds late
    # (bench/inflight.py; figures in bench/RESULTS.md, "Tracking with thousands in flight").
    poll_initial_seconds_with_callbacks: float = Field(15.0, gt=0)
    poll_max_seconds: float = Field(30.0, gt=0)
    poll_max_seconds_with_callbacks: float = Field(60.0, gt=0)
    poll_backoff_factor: float = Field(1.5, ge=1)
    # A failed read (429, 5xx, no answer) is retried on a short backoff of its own, from
    # base doubling to max, jittered, Qingbo's Retry-After honoured up to its bound: on the
    # schedule above the next poll was minutes away, and in a storm of 429s and 5xx a task
    # Qingbo had finished stayed `queued` at the gateway for minutes (issue 31).
    poll_retry_base_seconds: float = Field(0.5, gt=0)
    poll_retry_max_seconds: float = Field(2.0, gt=0)
    poll_retry_after_max_seconds: float = Field(10.0, ge=0)
    # A task someone looks at (its GET, event stream or a wait on it) is read this often,
    # until QGW_WATCH_TTL_SECONDS after the last look: its progress rises where someone
    # sees it, while the tasks nobody watches keep the cheap schedule above.
    poll_watched_seconds: float = Field(3.0, gt=0)
    watch_ttl_seconds: float = Field(30.0, gt=0)
    task_max_tracking_seconds: float = Field(3 * 3600.0, gt=0)
    # A terminal answer Postgres refuses to record (after sanitize.py has cleaned it) is
    # tried this many reads, then the task fails `upstream_answer_unrecordable`, its
    # reservation and slots released: it never holds them forever (issue 31).
    upstream_answer_max_record_tries: int = Field(3, ge=1)

    # Leases after which the reconciler takes back work whose job vanished.
    claim_lease_seconds: float = Field(60.0, gt=0)
    poll_lease_seconds: float = Field(30.0, gt=0)
    submit_lease_seconds: float = Field(120.0, gt=0)
    reconcile_every_seconds: int = Field(15, ge=1, le=60)
    dispatch_batch_size: int = Field(100, ge=1)

    # Jobs wait on Qingbo and Postgres, not on the CPU: with a quarter of this, thousands
    # of tasks in flight ended late, the jobs queued behind each other, while the worker
    # used well under a core (bench/inflight.py; bench/RESULTS.md, "Tracking with thousands
    # in flight").
    worker_max_jobs: int = Field(200, ge=1)
    # Reads of tracked tasks running at once per worker process, beside its arq jobs.
    worker_max_reads: int = Field(100, ge=1)
    # How often an idle worker asks Redis for jobs (arq's poll_delay; its default is 0.5 s).
    worker_poll_delay_seconds: float = Field(0.05, gt=0, le=5)
    # Each worker serves /healthz, /readyz and /metrics here (0: none).
    worker_http_host: str = "0.0.0.0"  # noqa: S104 (probes and scrapes come from outside)
    worker_http_port: int = Field(9100, ge=0, le=65535)
    # POST /v1/tasks/sync waits at most this long (its ?timeout= is capped here).
    sync_max_wait_seconds: float = Field(60.0, gt=0, le=600)
    # Idle GET /v1/tasks/{id}/events streams get a ": ping" comment this often.
    sse_keepalive_seconds: float = Field(15.0, gt=0)
    # Each process's LISTEN connection proves it still hears with a NOTIFY to itself this
    # often, and counts one not back within it as a drop: a silently half-open connection
    # is noticed within twice this, and the key cache trusts no more than 3x it unproven.
    listener_check_seconds: float = Field(5.0, gt=0, le=60)
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=1)
    # Bodies are read only once the caller is known (key, admin token, callback token), at
    # most these many bytes by route: large where Base64 images are allowed (submit, sync,
    # estimate), modest for the admin API's JSON, a few KiB for Qingbo's callbacks (a
    # status, only a hint). Over them: 413. A body not all in within the timeout: 408.
    max_request_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_admin_body_bytes: int = Field(64 * 1024, ge=1024)
    max_callback_body_bytes: int = Field(16 * 1024, ge=1024)
    body_read_timeout_seconds: float = Field(30.0, gt=0)
    # Each Base64 image of a task, decoded (larger ones belong behind a URL).
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    db_pool_min_size: int = Field(2, ge=1)
    db_pool_max_size: int = Field(20, ge=1)
    # API processes: a request waits this long for a pooled connection, then gets 503 with
    # Retry-After (and /readyz fails), instead of queueing for ever behind stuck ones.
    db_acquire_timeout_seconds: float = Field(5.0, gt=0)
    log_level: str = "INFO"
    # json: one JSON object per line, for machines (the default of every role); pretty:
    # short lines for a person at a terminal (`qingbo-gateway dev` sets it).
    log_format: Literal["json", "pretty"] = "json"
    # Per-request HTTP metrics (requests by route and status, latency); off only to
    # measure what they cost (bench/submit.py).
    http_metrics: bool = True
    # Metadata keys whose values label this month's spend (qgw_spend_by_metadata_usd), and
    # how many of their top values each (the rest are summed as "(other)"): bounded labels.
    metrics_metadata_keys: str = ""
    metrics_metadata_top: int = Field(10, ge=1, le=100)

    # The archive of paid videos (README "Archive"): where (file://, s3://, gs://, az://;
    # unset: off), whether content answers redirect to signed URLs, and its retry pace.
    archive_url: str | None = None
    archive_redirect: bool = False
    archive_retry_base_seconds: float = Field(5.0, gt=0)
    archive_retry_max_seconds: float = Field(300.0, gt=0)
    archive_read_timeout_seconds: float = Field(60.0, gt=0)
    archive_lease_seconds: float = Field(900.0, gt=0)
    # A download that declares or sends more than this is cut off there and its video's
    # archive failed at once (a forged or broken link must not fill the store or stream
    # for ever); Qingbo's 10 s 1080p videos are tens of MB.
    archive_max_bytes: int = Field(4 * 1024**3, ge=1024 * 1024)
    # Kept copies older than this are deleted (unset: kept for ever).
    archive_retention_days: int | None = Field(None, ge=1)

    # Budgets: day/week/month windows are calendar windows in this zone (weeks start Monday).
    budget_timezone: str = "UTC"
    # Budgets are charged at most the reservation times this factor, whatever Qingbo
    # reports: the excess is a dispute an admin accepts or rejects (budgets/disputes.py).
    # A decimal (at most 3 places), applied as an integer ratio: no float touches money.
    charge_cap_factor: Decimal = Field(Decimal(2), ge=1, le=1000, decimal_places=3)
    # Percent levels of a budget's limit whose crossing is announced (metric, log, webhook).
    budget_alert_percents: str = "50,80,100"
    # Requests-per-minute limits live in Redis; when it cannot be reached: "allow" keeps
    # admitting (budgets and concurrency stay exact in Postgres), "deny" answers 503.
    rate_limit_on_redis_error: Literal["allow", "deny"] = "allow"

    # Webhooks to apps (Standard Webhooks signatures; see README "Webhooks").
    # Seconds between attempts after the first, immediate one (Svix's schedule).
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_retry_jitter: float = Field(0.2, ge=0, le=1)
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_max_retry_after_seconds: float = Field(3600.0, ge=0)
    webhook_progress_interval_seconds: float = Field(10.0, ge=0)
    webhook_secret_grace_seconds: int = Field(24 * 3600, ge=0)
    webhook_lease_seconds: float = Field(60.0, gt=0)
    # Attempts one worker process has open at once, in all and per destination (scheme,
    # host, port); the rest wait a moment. Below QGW_WORKER_MAX_JOBS, so slow receivers
    # always leave job slots to the task jobs.
    webhook_max_concurrent_attempts: int = Field(20, ge=1)
    webhook_max_concurrency_per_destination: int = Field(4, ge=1)
    # Attempts one team may have open at once in a worker process (unset: half of
    # QGW_WEBHOOK_MAX_CONCURRENT_ATTEMPTS), so one team's slow receivers always leave
    # slots to the others; free slots go to the team holding the fewest.
    webhook_max_concurrent_attempts_per_team: int | None = Field(None, ge=1)
    # Where webhooks and archive downloads may go (service/platform/egress.py): public addresses,
    # plus what is opened here for the company (CIDRs; host names or *.suffix) or for one
    # team (its open_destinations). Private, loopback and link-local ranges are closed
    # unless opened; the deny list closes more (public) ranges; an opening wins.
    webhook_allow_networks: str = ""
    webhook_allow_hosts: str = ""
    webhook_deny_networks: str = ""
    # POST .../redeliver requests one team may make per minute (429 beyond).
    webhook_redeliveries_per_minute: int = Field(30, ge=1)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        try:
            delays = [float(p) for p in value.split(",") if p.strip()]
        except ValueError:
            raise ValueError("comma-separated seconds, e.g. 5,300,1800") from None
        if any(d < 0 for d in delays):
            raise ValueError("delays must be >= 0")
        return value

    @field_validator("archive_url")
    @classmethod
    def _archive_scheme(cls, value: str | None) -> str | None:
        schemes = ("file", "s3", "gs", "az", "abfs", "abfss")
        if value and value.split("://", 1)[0] not in schemes:
            raise ValueError(f"a URL of one of {', '.join(schemes)}, e.g. s3://bucket/prefix")
        return value or None

    @field_validator("webhook_allow_networks", "webhook_deny_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip())
        return value

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        return ",".join(parse_host_pattern(h) for h in value.split(",") if h.strip())

    @field_validator("metrics_metadata_keys")
    @classmethod
    def _metadata_keys(cls, value: str) -> str:
        keys = [k.strip() for k in value.split(",") if k.strip()]
        for key in keys:
            if not METADATA_KEY.match(key):
                raise ValueError(f"{key!r} is not a metadata key ([A-Za-z0-9_.-]{{1,64}})")
        if len(keys) > 16:
            raise ValueError("at most 16 keys")
        return ",".join(keys)

    @model_validator(mode="after")
    def _job_slots_for_tasks(self) -> Settings:
        if self.webhook_max_concurrent_attempts >= self.worker_max_jobs:
            raise ValueError(
                "QGW_WEBHOOK_MAX_CONCURRENT_ATTEMPTS must be below QGW_WORKER_MAX_JOBS, so "
                "slow receivers always leave job slots to the task jobs"
            )
        return self

    @property
    def metadata_metric_keys(self) -> list[str]:
        return [k for k in self.metrics_metadata_keys.split(",") if k]

    @property
    def webhook_retry_delays(self) -> list[float]:
        return [float(p) for p in self.webhook_retry_schedule.split(",") if p.strip()]

    @property
    def webhook_attempts_per_team(self) -> int:
        total = self.webhook_max_concurrent_attempts
        chosen = self.webhook_max_concurrent_attempts_per_team
        return min(total, chosen) if chosen is not None else max(1, total // 2)

    @property
    def charge_cap_ratio(self) -> tuple[int, int]:
        """QGW_CHARGE_CAP_FACTOR as (numerator, denominator): cap = reserved * n // d."""
        return self.charge_cap_factor.as_integer_ratio()

    @field_validator("budget_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("budget_alert_percents")
    @classmethod
    def _percent_list(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.isascii() and p.isdigit() and 1 <= int(p) <= 1000 for p in parts):
            raise ValueError("comma-separated whole percents between 1 and 1000")
        return ",".join(parts)

    @property
    def alert_percents(self) -> list[int]:
        return sorted({int(p) for p in self.budget_alert_percents.split(",") if p})

    @property
    def generation(self) -> Generation:
        return generation(self.qingbo_api_version)

    @property
    def callbacks_enabled(self) -> bool:
        return bool(self.public_base_url)

    @property
    def first_poll_seconds(self) -> float:
        """The adaptive schedule's first interval, by whether Qingbo calls back."""
        if self.callbacks_enabled:
            return self.poll_initial_seconds_with_callbacks
        return self.poll_initial_seconds


def weak_tokens(settings: Settings) -> list[str]:
    """What is wrong with each set but weak token, naming the setting (never the value)."""
    problems = []
    for field in STRONG_TOKEN_SETTINGS:
        value = getattr(settings, field).get_secret_value()
        name = f"QGW_{field.upper()}"
        if not value:
            continue
        if TOKEN_PLACEHOLDER in value:
            problems.append(f"{name}: still the template's placeholder; set a random one")
        elif len(value) < MIN_TOKEN_CHARS:
            problems.append(
                f"{name}: at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`), "
                f"or empty to {UNSET_MEANS.get(field, 'turn it off')}"
            )
    return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
