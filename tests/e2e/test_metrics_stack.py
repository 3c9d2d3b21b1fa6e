"""What a scrape of the running stack shows is exactly what happened.

A team's tasks go through success, failure at Qingbo, rejection by Qingbo, a budget
refusal and a validation error; then the API and worker processes are scraped and every
counter and budget gauge is checked to the exact value. The dashboard and alert rules
may only use metrics those scrapes export, and promtool accepts the exposition. Under
`api --workers 2`, every scrape (whichever process answers) shows all requests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.cli.dev import free_port, wait_until_healthy
from service.config import Settings
from service.platform.money import parse_usd
from service.tasks.resources import Resources
from tests import prices
from tests.conftest import Process, settings_env
from tests.factories import ADMIN, make_team, submit, task_body, wait_for, wait_terminal
from tests.webhooks.receiver import running_receiver

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MODEL = "minimax-hailuo-2.3"

pytestmark = pytest.mark.usefixtures("api_server")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def names(text: str) -> set[str]:
    """Every series name the scrape declares (a labelled family is declared by its HELP and
    TYPE lines before its first sample exists)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    found = set()
    for family in text_string_to_metric_families(text):
        found.add(family.name)
        found |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
        found |= {s.name for s in family.samples}
    return found


def used_metric_names() -> set[str]:
    used: set[str] = set()
    dashboard = json.loads((DEPLOY / "grafana/dashboards/qingbo-gateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v.get("definition", "") for v in dashboard["templating"]["list"]]
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expr in exprs:
        used |= set(re.findall(r"\b(qgw_[a-z0-9_]+)", expr))
    return used


async def test_a_scrape_shows_exactly_what_happened(
    client: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    res: Resources,
    start_worker: Any,
    api_server: str,
) -> None:
    price = parse_usd(prices.usd())  # the generation's price of task_body()
    team = await make_team(client)
    name = team.team["name"]
    budget = {"budgets": [{"window": "month", "limit_usd": f"{3 * price / 1e6:.6f}"}]}
    await client.put(f"/admin/teams/{team.team['id']}/budgets", json=budget, headers=ADMIN)
    worker_port = free_port()
    start_worker(worker_http_port=worker_port)
    worker_url = f"http://127.0.0.1:{worker_port}"
    wait_until_healthy(f"{worker_url}/healthz")

    async with httpx.AsyncClient(base_url=api_server, timeout=30) as api:
        before = samples((await api.get("/metrics")).text)
        with running_receiver() as receiver:
            ok = await submit(api, team, callback_url=receiver.url)
            assert (await wait_terminal(api, team, ok["task_id"]))["status"] == "completed"
            await wait_for(lambda: _received(receiver))
        await sim.put("/_sim/config", json={"fail_rate": 1.0})
        failed = await submit(api, team)
        assert (await wait_terminal(api, team, failed["task_id"]))["status"] == "failed"
        await sim.put("/_sim/config", json={"fail_rate": 0.0, "submit_status": 400})
        rejected = await submit(api, team)
        assert (await wait_terminal(api, team, rejected["task_id"]))["status"] == "failed"
        budget["budgets"][0]["limit_usd"] = f"{price / 1e6:.6f}"  # what is spent: full
        await client.put(f"/admin/teams/{team.team['id']}/budgets", json=budget, headers=ADMIN)
        refused = await api.post("/v1/tasks", json=task_body(), headers=team.headers)
        assert refused.status_code == 402
        invalid = await api.post("/v1/tasks", json=task_body(duration=7), headers=team.headers)
        assert invalid.status_code == 400
        api_text = (await api.get("/metrics")).text
    async with httpx.AsyncClient(base_url=worker_url, timeout=30) as worker:
        worker_text = (await worker.get("/metrics")).text
    after, work = samples(api_text), samples(worker_text)

    admitted = {"team": name, "model": MODEL, "resolution": "768p", "family": "hailuo"}
    assert value(after, "qgw_tasks_admitted_total", **admitted) == 3
    for reason, count in (("budget_exceeded", 1),):
        delta = value(after, "qgw_tasks_rejected_total", reason=reason) - value(
            before, "qgw_tasks_rejected_total", reason=reason
        )
        assert delta == count
    route = {"route": "/v1/tasks", "method": "POST"}
    for status, count in (("200", 3), ("402", 1), ("400", 1)):
        labels = {**route, "status": status}
        delta = value(after, "qgw_http_requests_total", **labels) - value(
            before, "qgw_http_requests_total", **labels
        )
        assert delta == count, status
    # The worker process finished all three (this worker started with this test).
    by_model = {"team": name, "model": MODEL, "family": "hailuo"}
    assert value(work, "qgw_tasks_terminal_total", **by_model, status="completed") == 1
    assert value(work, "qgw_tasks_terminal_total", **by_model, status="failed") == 2
    assert value(work, "qgw_cost_charged_usd_total", **by_model) == price / 1e6
    assert value(work, "qgw_webhook_attempts_total", event="completed", result="delivered") == 1
    assert (
        value(
            work, "qgw_task_end_to_end_seconds_count", model=MODEL, family="hailuo", status="failed"
        )
        == 2
    )
    assert value(work, "qgw_jobs_total", function="send_to_qingbo", outcome="ok") == 3
    # The webhook's first attempt was made by the worker that heard it, without a job.
    assert value(work, "qgw_jobs_total", function="deliver_webhook", outcome="ok") == 0
    assert value(work, "qgw_job_duration_seconds_count", function="send_to_qingbo") == 3
    # The read lane counts its reads like jobs (the task submitted to Qingbo was read).
    assert value(work, "qgw_jobs_total", function="refresh_from_upstream", outcome="ok") >= 1
    # Budget gauges: the same truth from both processes.
    gauge = {"team": name, "key": "", "scope": "team", "window": "month"}
    for scraped in (after, work):
        assert value(scraped, "qgw_budget_limit_usd", **gauge) == price / 1e6
        assert value(scraped, "qgw_budget_spent_usd", **gauge) == price / 1e6
        assert value(scraped, "qgw_budget_reserved_usd", **gauge) == 0
        assert ("qgw_budget_remaining_usd", frozenset(gauge.items())) in scraped
        assert value(scraped, "qgw_budget_remaining_usd", **gauge) == 0

    exported = names(api_text) | names(worker_text)
    missing = used_metric_names() - exported
    assert not missing, f"dashboard/alerts use metrics nobody exports: {missing}"
    promtool = shutil.which("promtool")
    if promtool:  # CI installs it (see .ci/run)
        for text in (api_text, worker_text):
            linted = subprocess.run(  # noqa: ASYNC221 (a one-off lint of a finished scrape)
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True
            )
            assert linted.returncode == 0, linted.stdout + linted.stderr


async def _received(receiver: Any) -> bool:
    return bool(receiver.received)


async def test_api_with_two_processes_scrapes_every_request(
    client: httpx.AsyncClient, settings: Settings, logs_dir: Path
) -> None:
    port = free_port()
    api = Process(
        ["api", "--port", str(port), "--workers", "2"],
        settings_env(settings),
        logs_dir / "api-multiprocess.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/healthz")
        team = await make_team(client)
        assert api.proc is not None
        assert len(psutil.Process(api.proc.pid).children()) >= 2  # two uvicorn workers
        for _ in range(40):  # a new connection each time: both processes answer some
            async with httpx.AsyncClient() as fresh:
                answer = await fresh.get(f"{url}/v1/tasks", headers=team.headers)
                assert answer.status_code == 200
        labels = {"route": "/v1/tasks", "method": "GET", "status": "200"}
        for _ in range(6):
            async with httpx.AsyncClient() as fresh:
                scraped = samples((await fresh.get(f"{url}/metrics")).text)
            assert value(scraped, "qgw_http_requests_total", **labels) == 40
            assert (
                value(
                    scraped,
                    "qgw_http_request_duration_seconds_count",
                    route="/v1/tasks",
                    method="GET",
                )
                == 40
            )
    finally:
        api.stop()
