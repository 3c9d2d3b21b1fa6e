"""Qingbo's callback route: token-checked, it only triggers a re-read; a body that says the
task ended only puts that read before the others waiting in the read lane."""

from __future__ import annotations

import asyncpg
import httpx

from service.tasks.reads import ReadLane, hand_over
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
    assert await waiting_reads(res) == [task["task_id"]]


async def never(task_id: str) -> None:
    raise AssertionError("this lane only shows what waits")


async def waiting_reads(res: Resources) -> list[str]:
    """The reads handed over to the lane, in the order a worker would run them (taken)."""
    lane = ReadLane(
        res.redis, res.settings.arq_queue_name, read=never, concurrency=1, timeout_seconds=1
    )
    return [task_id.decode() for task_id in await lane.take(1000)]


async def test_a_callback_that_says_the_task_ended_is_read_before_the_others(
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
    await hand_over(res.redis, queue, ["a-poll-due-now"])
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
    order = await waiting_reads(res)
    assert order[0] == tasks[1]["task_id"]  # the end, first
    assert order[1:] == ["a-poll-due-now", tasks[0]["task_id"], tasks[2]["task_id"]]  # as they came


def test_only_a_task_s_own_end_says_finished() -> None:
    assert says_finished(b'{"status": "completed"}') and says_finished(b'{"status": "failed"}')
    for body in (b'{"status": "processing"}', b"[]", b"", b"{", b'{"status": 3}'):
        assert not says_finished(body)
