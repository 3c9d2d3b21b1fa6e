"""Submission against the real simulator, calling the job coroutine directly (no worker
process) so each upstream failure mode is pinned down exactly: the body sent, retries
until the deadline, account pauses, and the ambiguous outcomes under each policy."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from service.ops.state_metrics import STATE, scrape_registry
from service.tasks import dispatch, submission
from service.tasks.resources import Resources
from tests.factories import claim, make_team, metric, row, sim_tasks, submit, variant, wait_for


async def test_submit_sends_the_exact_normalised_body_once(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(
        client, team, resolution="1080P", camera_movement_tags=["dolly-in"], priority=5
    )
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"
    assert await submission.submit(res, task["task_id"], attempt) == "skipped"  # arq re-ran the job

    sent = await sim_tasks(sim)
    assert len(sent) == 1
    body = sent[0]["request"]
    assert body["resolution"] == "1080p" and body["duration"] == 6 and "priority" not in body
    if res.settings.generation.version == "2026-04":
        assert body["camera_movement_tags"] == ["[推进]"] and body["aspect_ratio"] == "16:9"
        assert sent[0]["idempotency_key"] is None
    else:  # written into the prompt; no aspect_ratio; the task's own key
        assert "camera_movement_tags" not in body and "aspect_ratio" not in body
        assert body["prompt"] == "[推进] " + task["prompt"]
        assert sent[0]["idempotency_key"] == f"qgw-{task['task_id']}"
    assert body["callback_url"].startswith(
        f"{res.settings.public_base_url}/internal/qingbo/callback/{task['task_id']}?token="
    )
    stored = await row(db, task["task_id"])
    assert (
        stored["dispatch_state"] == "submitted" and stored["upstream_task_id"] == sent[0]["task_id"]
    )


@pytest.mark.parametrize("knob", ["http_429_rate", "http_5xx_rate"])
async def test_rate_limits_and_server_errors_retry_with_backoff(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    knob: str,
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={knob: 1.0})
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "retry"
    waiting = await row(db, task["task_id"])
    assert waiting["dispatch_state"] == "pending" and waiting["status"] == "queued"
    assert waiting["dispatch_after"] > waiting["updated_at"]  # backed off

    await sim.put("/_sim/config", json={knob: 0.0})
    attempt = await claim(res, db, task["task_id"])
    assert attempt == 2
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"


async def test_retries_run_until_the_deadline_then_fail(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={"http_5xx_rate": 1.0})
    for _ in range(3):  # many attempts: no count stops it while the deadline holds
        attempt = await claim(res, db, task["task_id"])
        assert await submission.submit(res, task["task_id"], attempt) == "retry"
    # A task waiting in the gateway's own queue for hours is not past it: the clock starts
    # at its first send.
    await db.execute(
        "UPDATE tasks SET created_at = now() - interval '5 hours' WHERE id = $1", task["task_id"]
    )
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "retry"
    await db.execute(
        "UPDATE tasks SET first_sent_at = now() - make_interval(secs => $2) WHERE id = $1",
        task["task_id"],
        res.settings.upstream_retry_deadline_seconds + 1,
    )
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "failed"
    failed = await row(db, task["task_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_unavailable"
    assert failed["error"]["message"].startswith("Qingbo unavailable for 1800 s (5 attempts)")
    assert len(await sim_tasks(sim)) == 0  # nothing was ever created, nothing billed


async def test_blind_resubmits_are_bounded_and_counted(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    """`resubmit` against 2026-04 on an upstream that never answers in time: it used to
    loop forever; now QGW_AMBIGUOUS_MAX_RESUBMITS bounds it."""
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={"latency_ms": 2500, "api_version": "2026-04"})
    blind = variant(
        res,
        ambiguous_submit_policy="resubmit",
        ambiguous_max_resubmits=1,
        qingbo_api_version="2026-04",
    )
    before = metric("qgw_upstream_ambiguous_resends_total", policy="resubmit")
    attempt = await claim(blind, db, task["task_id"])
    assert await submission.submit(blind, task["task_id"], attempt) == "ambiguous_resubmit"
    attempt = await claim(blind, db, task["task_id"])
    assert await submission.submit(blind, task["task_id"], attempt) == "ambiguous_gave_up"
    assert metric("qgw_upstream_ambiguous_resends_total", policy="resubmit") == before + 1
    failed = await row(db, task["task_id"])
    assert failed["ambiguous_resends"] == 1 and failed["error"]["code"] == "upstream_ambiguous"
    assert failed["error"]["message"].startswith("every submission to Qingbo went unanswered")


async def test_idempotent_resends_stop_at_the_deadline(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={"latency_ms": 2500, "api_version": "2026-09"})
    current = variant(res, qingbo_api_version="2026-09")
    attempt = await claim(current, db, task["task_id"])
    assert (
        await submission.submit(current, task["task_id"], attempt)
        == "ambiguous_idempotent_resubmit"
    )
    await db.execute(
        "UPDATE tasks SET first_sent_at = now() - interval '1 hour' WHERE id = $1",
        task["task_id"],
    )
    attempt = await claim(current, db, task["task_id"])
    assert await submission.submit(current, task["task_id"], attempt) == "ambiguous_gave_up"
    assert (await row(db, task["task_id"]))["error"]["code"] == "upstream_ambiguous"
    sent = await wait_for(lambda: sim_tasks(sim), timeout=5)
    assert len(sent) == 1 and sent[0]["submissions"] == 2  # one task, whatever was resent


async def test_upstream_400_fails_the_task_with_qingbos_message(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={"submit_status": 400})
    assert (
        await submission.submit(res, task["task_id"], await claim(res, db, task["task_id"]))
        == "failed"
    )
    shown = (await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)).json()
    assert shown["status"] == "failed"
    assert shown["error"] == {"message": "simulated HTTP 400", "code": "invalid_request"}


@pytest.mark.parametrize(("status", "reason"), [(401, "unauthorized"), (402, "balance_exhausted")])
async def test_account_errors_pause_submissions_instead_of_failing_tasks(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    status: int,
    reason: str,
) -> None:
    team = await make_team(client)
    first, second = await submit(client, team), await submit(client, team)
    await sim.put("/_sim/config", json={"submit_status": status})
    before = metric("qgw_upstream_pauses_total", reason=reason)
    attempt = await claim(res, db, first["task_id"])
    assert await submission.submit(res, first["task_id"], attempt) == "paused"
    assert metric("qgw_upstream_pauses_total", reason=reason) == before + 1

    for task in (first, second):
        stored = await row(db, task["task_id"])
        assert stored["status"] == "queued" and stored["dispatch_state"] in ("pending", "claimed")
    assert (await row(db, first["task_id"]))["dispatch_attempts"] == 0  # the pause costs no attempt
    await db.execute("UPDATE tasks SET dispatch_state = 'pending' WHERE dispatch_state = 'claimed'")
    assert await dispatch.dispatch_pending(res) == 0  # paused: nothing goes out
    await STATE.refresh(res, max_age=0)
    assert scrape_registry().get_sample_value("qgw_upstream_paused") == 1

    await db.execute("UPDATE upstream_state SET paused_until = now()")
    await sim.put("/_sim/config", json={"submit_status": None})
    assert await dispatch.dispatch_pending(res) == 2


async def test_ambiguous_submission_fails_without_resending(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    # 2026-04 (no idempotency key): Qingbo receives the task but answers after the
    # gateway's 2 s read timeout.
    await sim.put("/_sim/config", json={"latency_ms": 2500, "api_version": "2026-04"})
    april = variant(res, qingbo_api_version="2026-04")
    before = metric("qgw_upstream_ambiguous_submissions_total", policy="fail")
    assert (
        await submission.submit(april, task["task_id"], await claim(april, db, task["task_id"]))
        == "ambiguous_fail"
    )
    assert metric("qgw_upstream_ambiguous_submissions_total", policy="fail") == before + 1
    failed = await row(db, task["task_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_ambiguous"
    assert len(await wait_for(lambda: sim_tasks(sim), timeout=5)) == 1  # sent once, never again


async def test_ambiguous_submission_can_be_resubmitted_by_policy(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await sim.put("/_sim/config", json={"latency_ms": 2500, "api_version": "2026-04"})
    resubmit = variant(res, ambiguous_submit_policy="resubmit", qingbo_api_version="2026-04")
    assert (
        await submission.submit(
            resubmit, task["task_id"], await claim(resubmit, db, task["task_id"])
        )
        == "ambiguous_resubmit"
    )
    assert (await row(db, task["task_id"]))["dispatch_state"] == "pending"


async def test_a_rerun_after_dying_inside_the_call_is_ambiguous(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    attempt = await claim(res, db, task["task_id"])
    # The first run recorded its intent and died before learning the outcome.
    await db.execute(
        "UPDATE tasks SET dispatch_state = 'submitting', submit_started_at = now() WHERE id = $1",
        task["task_id"],
    )
    assert await submission.submit(res, task["task_id"], attempt) == "ambiguous_fail"
