"""Gauges of shared state (backlog, budgets, queue, pause), read from Postgres and Redis
when scraped, so that every API replica and worker reports the same truth.

They are not kept in prometheus-client's process-local (or multiprocess) storage: each
scrape reads a fresh snapshot (cached `max_age` seconds per process) and a collector
yields it, so a removed budget disappears and nothing stale survives in another process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.archive import repository as archives
from service.budgets import disputes_repository as disputes
from service.budgets import repository as budgets
from service.platform.money import MICROS_PER_USD
from service.spend import repository as spend
from service.tasks import repository as tasks
from service.tasks.reads import lane_keys, watched_key
from service.tasks.resources import Resources
from service.tasks.states import DispatchState
from service.webhooks import repository as webhooks

logger = logging.getLogger(__name__)

STAGES = tuple(s for s in DispatchState if s != DispatchState.DONE)
BUDGET_LABELS = ["team", "key", "scope", "window"]
ARCHIVE_EXPIRY_BUCKETS = ("under_6h", "under_24h", "later", "unknown")


@dataclass
class Snapshot:
    stages: dict[str, int] = field(default_factory=dict)
    queue_ready: int = 0
    queue_deferred: int = 0
    reads_waiting: dict[str, int] = field(default_factory=dict)  # read lane list -> length
    tasks_watched: int = 0  # tasks someone looks at (tasks/watching.py)
    upstream_paused: int = 0
    webhook_backlog: int = 0
    # (team, key, scope, window) -> (limit, spent, reserved) in micro-dollars
    budgets: dict[tuple[str, str, str, str], tuple[int, int, int]] = field(default_factory=dict)
    # (metadata key, value) -> spent this month in micro-dollars (QGW_METRICS_METADATA_KEYS)
    by_metadata: dict[tuple[str, str], int] = field(default_factory=dict)
    # Videos not yet archived, by how soon their Qingbo link expires.
    archive_waiting: dict[str, int] = field(default_factory=dict)
    # Open charge disputes: how many, and their excess in micro-dollars.
    open_disputes: tuple[int, int] = (0, 0)


class StateCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self._read_at = -1e9

    async def refresh(self, res: Resources, *, max_age: float = 2.0) -> None:
        now = time.monotonic()
        if now - self._read_at < max_age:
            return
        self._read_at = now
        try:
            self.snapshot = await read_snapshot(res)
        except Exception as exc:  # a scrape must still answer when a store is down
            logger.warning("state gauges not refreshed", extra={"error": type(exc).__name__})
            self.snapshot = None

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        stage = GaugeMetricFamily(
            "qgw_tasks_in_stage", "Non-terminal tasks by dispatch stage", labels=["stage"]
        )
        for state in STAGES:
            stage.add_metric([state.value], snap.stages.get(state, 0))
        yield stage
        queue = GaugeMetricFamily("qgw_queue_jobs", "arq jobs in the Redis queue", labels=["state"])
        queue.add_metric(["ready"], snap.queue_ready)
        queue.add_metric(["deferred"], snap.queue_deferred)
        yield queue
        reads = GaugeMetricFamily(
            "qgw_reads_waiting",
            "Reads of tracked tasks waiting in the read lane (ends: a callback said it ended)",
            labels=["lane"],
        )
        for lane, count in snap.reads_waiting.items():
            reads.add_metric([lane], count)
        yield reads
        yield GaugeMetricFamily(
            "qgw_tasks_watched",
            "Tasks someone is looking at (GET, event stream, wait): read at the watched pace",
            snap.tasks_watched,
        )
        yield GaugeMetricFamily(
            "qgw_upstream_paused", "1 while submissions to Qingbo are paused", snap.upstream_paused
        )
        yield GaugeMetricFamily(
            "qgw_webhook_backlog", "Webhook events waiting for an attempt", snap.webhook_backlog
        )
        families = {
            "limit": GaugeMetricFamily(
                "qgw_budget_limit_usd", "Budget limit", labels=BUDGET_LABELS
            ),
            "spent": GaugeMetricFamily(
                "qgw_budget_spent_usd", "Spent in the current window", labels=BUDGET_LABELS
            ),
            "reserved": GaugeMetricFamily(
                "qgw_budget_reserved_usd",
                "Reserved by unfinished tasks in the current window",
                labels=BUDGET_LABELS,
            ),
            "remaining": GaugeMetricFamily(
                "qgw_budget_remaining_usd",
                "Limit minus spent and reserved in the current window",
                labels=BUDGET_LABELS,
            ),
        }
        for labels, (limit, spent, reserved) in sorted(snap.budgets.items()):
            values = {
                "limit": limit,
                "spent": spent,
                "reserved": reserved,
                "remaining": max(0, limit - spent - reserved),
            }
            for name, family in families.items():
                family.add_metric(list(labels), values[name] / MICROS_PER_USD)
        yield from families.values()
        by_metadata = GaugeMetricFamily(
            "qgw_spend_by_metadata_usd",
            "Spent this month by the value of a metadata key (the keys in "
            "QGW_METRICS_METADATA_KEYS, their top values; the rest as (other))",
            labels=["key", "value"],
        )
        for (key, value), micros in sorted(snap.by_metadata.items()):
            by_metadata.add_metric([key, value], micros / MICROS_PER_USD)
        yield by_metadata
        waiting = GaugeMetricFamily(
            "qgw_archive_waiting_videos",
            "Videos not yet archived, by how soon their Qingbo link expires "
            "(under_6h, under_24h, later, unknown)",
            labels=["expires_in"],
        )
        for bucket in ARCHIVE_EXPIRY_BUCKETS:
            waiting.add_metric([bucket], snap.archive_waiting.get(bucket, 0))
        yield waiting
        yield GaugeMetricFamily(
            "qgw_charge_disputes_open",
            "Charge disputes waiting for an admin (GET /admin/disputes?status=open)",
            snap.open_disputes[0],
        )
        yield GaugeMetricFamily(
            "qgw_charge_disputes_open_usd",
            "USD Qingbo reported beyond the charge cap in open disputes (not in any budget)",
            snap.open_disputes[1] / MICROS_PER_USD,
        )


async def read_snapshot(res: Resources) -> Snapshot:
    snap = Snapshot()
    async with res.pool.acquire() as conn:
        snap.stages = await tasks.count_by_stage(conn)
        snap.upstream_paused = 1 if await tasks.upstream_paused_until(conn) else 0
        snap.webhook_backlog = await webhooks.backlog(conn)
        snap.archive_waiting = await archives.waiting_by_expiry(conn)
        snap.open_disputes = await disputes.open_totals(conn)
        standing = await budgets.all_standing(
            conn, now=res.clock(), timezone=res.settings.budget_timezone
        )
        if res.settings.metadata_metric_keys:
            for row in await spend.month_spend_by_metadata(
                conn,
                keys=res.settings.metadata_metric_keys,
                top=res.settings.metrics_metadata_top,
                now=res.clock(),
                timezone=res.settings.budget_timezone,
            ):
                snap.by_metadata[(row["key"], row["value"])] = row["spent_micros"]
    for row in standing:
        key = (row["team_name"] or "", row["key_name"] or "", row["scope"], row["period"])
        snap.budgets[key] = (row["limit_micros"], row["spent_micros"], row["reserved_micros"])
    queue = res.settings.arq_queue_name
    total = await res.redis.zcard(queue)
    snap.queue_ready = await res.redis.zcount(queue, "-inf", int(time.time() * 1000))
    snap.queue_deferred = total - snap.queue_ready
    async with res.redis.pipeline(transaction=False) as pipe:
        for lane in lane_keys(queue):
            pipe.llen(lane)
        pipe.zcount(watched_key(queue), time.time(), "+inf")
        ends, others, snap.tasks_watched = await pipe.execute()
    snap.reads_waiting = {"ends": ends, "others": others}
    return snap


STATE = StateCollector()
_registry: CollectorRegistry | None = None


def scrape_registry() -> CollectorRegistry:
    """What /metrics exposes: this process's metrics (all processes' in multiprocess mode,
    see service/platform/metrics.py) and the shared-state snapshot."""
    global _registry
    if _registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            _registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(_registry)  # type: ignore[no-untyped-call]
        else:
            _registry = REGISTRY
        _registry.register(STATE)
    return _registry
