"""Scrape-time state gauges, task timing histograms, and multiprocess scraping."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY
from pydantic import SecretStr

from service.app import create_app
from service.config import Settings
from service.ops.state_metrics import STATE, scrape_registry
from service.tasks.reads import hand_over
from service.tasks.resources import Resources
from tests.factories import ADMIN, make_team, submit


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_backlog_gauges_come_from_postgres_and_redis(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    tasks = [await submit(client, team) for _ in range(3)]
    await client.post(f"/v1/tasks/{tasks[0]['task_id']}/cancel", headers=team.headers)
    await res.redis.enqueue_job("dispatch_pending_tasks", _queue_name=res.settings.arq_queue_name)
    await hand_over(res.redis, res.settings.arq_queue_name, ["task-a", "task-b"])
    await hand_over(res.redis, res.settings.arq_queue_name, ["task-c"], ended=True)
    await STATE.refresh(res, max_age=0)
    registry = scrape_registry()
    assert registry.get_sample_value("qgw_tasks_in_stage", {"stage": "pending"}) == 2
    assert registry.get_sample_value("qgw_tasks_in_stage", {"stage": "submitted"}) == 0
    assert (registry.get_sample_value("qgw_queue_jobs", {"state": "ready"}) or 0) >= 1
    assert registry.get_sample_value("qgw_reads_waiting", {"lane": "others"}) == 2
    assert registry.get_sample_value("qgw_reads_waiting", {"lane": "ends"}) == 1
    scrape = (await client.get("/metrics")).text
    assert 'qgw_tasks_in_stage{stage="pending"}' in scrape


async def test_finishing_a_task_observes_its_end_to_end_time(client: httpx.AsyncClient) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    labels = {"model": "minimax-hailuo-2.3", "status": "cancelled", "family": "hailuo"}
    before = sample("qgw_task_end_to_end_seconds_count", **labels)
    await client.post(f"/v1/tasks/{task['task_id']}/cancel", headers=team.headers)
    assert sample("qgw_task_end_to_end_seconds_count", **labels) == before + 1


async def test_a_removed_budget_leaves_the_scrape(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    path = f"/admin/teams/{team.team['id']}/budgets"
    await client.put(
        path, json={"budgets": [{"window": "day", "limit_usd": "7.50"}]}, headers=ADMIN
    )
    labels = {"team": team.team["name"], "key": "", "scope": "team", "window": "day"}
    await STATE.refresh(res, max_age=0)
    assert scrape_registry().get_sample_value("qgw_budget_limit_usd", labels) == 7.5
    await client.put(path, json={"budgets": []}, headers=ADMIN)
    await STATE.refresh(res, max_age=0)
    assert scrape_registry().get_sample_value("qgw_budget_limit_usd", labels) is None


async def test_metrics_can_require_a_bearer_token(settings: Settings) -> None:
    """/metrics names every team and its spend: with QGW_METRICS_TOKEN set, only a scraper
    holding it reads it, and the refusal never echoes the token."""
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr("scrape-me")}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            bare = await http.get("/metrics")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
            right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    for refused in (bare, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert "scrape-me" not in refused.text
    assert right.status_code == 200 and "qgw_" in right.text
