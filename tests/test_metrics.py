"""Scrape-time backlog gauges and task timing histograms."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from service.deps import Resources
from service.health import refresh_state_gauges
from tests.factories import make_team, submit


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_backlog_gauges_come_from_postgres_and_redis(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    tasks = [await submit(client, team) for _ in range(3)]
    await client.post(f"/v1/tasks/{tasks[0]['task_id']}/cancel", headers=team.headers)
    await res.redis.enqueue_job("dispatch_pending_tasks", _queue_name=res.settings.arq_queue_name)
    await refresh_state_gauges(res, max_age=0)
    assert sample("qgw_tasks_in_stage", stage="pending") == 2
    assert sample("qgw_tasks_in_stage", stage="submitted") == 0
    assert sample("qgw_queue_jobs", state="ready") >= 1
    scrape = (await client.get("/metrics")).text
    assert 'qgw_tasks_in_stage{stage="pending"}' in scrape


async def test_finishing_a_task_observes_its_end_to_end_time(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    labels = {"model": "minimax-hailuo-2.3", "status": "cancelled"}
    before = sample("qgw_task_end_to_end_seconds_count", **labels)
    await client.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    assert sample("qgw_task_end_to_end_seconds_count", **labels) == before + 1
