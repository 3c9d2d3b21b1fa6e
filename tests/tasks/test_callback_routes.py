"""Qingbo's callback route: token-checked, it only triggers a re-read; a body that says the
task ended only puts that read ahead of the queue."""

from __future__ import annotations

import asyncpg
import httpx

from service.tasks.queue import enqueue_refresh
from service.tasks.resources import Resources
from service.tasks.submission import hash_token
from service.tasks.tracking import says_finished
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


async def test_a_callback_that_says_the_task_ended_is_read_ahead_of_the_queue(
    client: httpx.AsyncClient, db: asyncpg.Connection, res: Resources
) -> None:
    team = await make_team(client)
    tasks = [await submit(client, team) for _ in range(3)]
    for n, task in enumerate(tasks):
        await db.execute(
            "UPDATE tasks SET dispatch_state = 'submitted', upstream_task_id = $3, "
            "callback_token_hash = $2 WHERE id = $1",
            task["task_id"],
            hash_token("right-token"),
            f"up-{n}",
        )
    queue = res.settings.arq_queue_name
    await enqueue_refresh(res.redis, queue, "a-poll-due-now", poll_count=1)
    bodies = [
        {"task_id": "up-0", "status": "processing", "progress": 40},
        {"task_id": "up-1", "status": "completed", "progress": 100},
        b"not json",  # says nothing: read in its turn
    ]
    for task, body in zip(tasks, bodies, strict=True):
        answer = await client.post(
            f"/internal/qingbo/callback/{task['task_id']}",
            params={"token": "right-token"},
            **({"content": body} if isinstance(body, bytes) else {"json": body}),
        )
        assert answer.status_code == 200, answer.text
    # Only the reads: admissions also queue dispatch kicks, at times of their own.
    jobs = [job.decode() for job in await res.redis.zrange(queue, 0, -1)]
    order = [job for job in jobs if job.startswith("refresh:")]
    assert order[0].startswith(f"refresh:{tasks[1]['task_id']}:cb:")  # the end, first
    assert order[1] == "refresh:a-poll-due-now:1"  # then in the order they came
    assert [j.split(":")[1] for j in order[2:]] == [tasks[0]["task_id"], tasks[2]["task_id"]]


def test_only_a_task_s_own_end_says_finished() -> None:
    assert says_finished(b'{"status": "completed"}') and says_finished(b'{"status": "failed"}')
    for body in (b'{"status": "processing"}', b"[]", b"", b"{", b'{"status": 3}'):
        assert not says_finished(body)
