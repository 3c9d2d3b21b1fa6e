"""Qingbo's callback route: token-checked, body ignored, it only triggers a re-read."""

from __future__ import annotations

import asyncpg
import httpx

from service.tasks.resources import Resources
from service.tasks.submission import hash_token
from tests.factories import make_team, submit


async def test_callback_needs_the_tasks_token_and_ignores_the_body(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources
) -> None:
    team = await make_team(client)
    task = await submit(client, team)
    await db.execute(
        "UPDATE tasks SET dispatch_state = 'submitted', upstream_task_id = 'up-1', "
        "callback_token_hash = $2, "
        "next_poll_at = now() + interval '1 hour' WHERE id = $1",
        task["task_id"],
        hash_token("right-token"),
    )
    forged = {
        "task_id": "up-1",
        "status": "completed",
        "result": {"videos": [{"url": "https://evil"}]},
    }
    path = f"/internal/qingbo/callback/{task['task_id']}"
    for token in ("", "wrong-token"):
        denied = await client.post(path, params={"token": token}, json=forged)
        assert denied.status_code == 404 and denied.json()["error"]["code"] == "not_found"
    unknown = await client.post(
        "/internal/qingbo/callback/task-nope", params={"token": "right-token"}
    )
    assert unknown.status_code == 404

    accepted = await client.post(path, params={"token": "right-token"}, json=forged)
    assert accepted.status_code == 200
    stored = await db.fetchrow(
        "SELECT status, result, next_poll_at - now() AS lease FROM tasks WHERE id = $1",
        task["task_id"],
    )
    assert stored["status"] == "queued" and stored["result"] is None  # the body changed nothing
    # The read is enqueued now and holds the poll's lease (no second read by the poller;
    # if it is lost, the task is due again when the lease ends, not in an hour).
    lease = stored["lease"].total_seconds()
    assert 0 < lease <= res.settings.poll_lease_seconds
    queued = await res.redis.zrange(res.settings.arq_queue_name, 0, -1)
    assert any(job.decode().startswith(f"refresh:{task['task_id']}:cb:") for job in queued)
