"""Base64 images are stored beside the task, not in it (issue 15, point 9): lists and reads
never load them; the submission to Qingbo sends them whole."""

from __future__ import annotations

import base64

import asyncpg
import httpx

from service.tasks import submission
from service.tasks.media import MARKER, join_media, split_media
from service.tasks.resources import Resources
from tests.factories import claim, make_team, sim_tasks, submit

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def test_split_and_join_are_inverse_and_leave_urls_alone() -> None:
    image = base64.b64encode(PNG * 100).decode()
    request = {"prompt": "p", "image_urls": ["https://img.example/a.png", image]}
    stored, media = split_media(request)
    assert stored["image_urls"] == ["https://img.example/a.png", f"{MARKER}{len(image) * 3 // 4}"]
    assert media == {"image_urls": request["image_urls"]}
    assert join_media(stored, media) == request
    plain = {"prompt": "p", "first_frame_image": "https://img.example/a.png"}
    assert split_media(plain) == (plain, None)


async def test_a_base64_image_is_kept_beside_the_task_and_sent_whole(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    team = await make_team(client)
    image = base64.b64encode(PNG + b"\x00" * 300_000).decode()
    task = await submit(client, team, image_urls=[image])
    stored = await db.fetchval("SELECT request FROM tasks WHERE id = $1", task["task_id"])
    assert stored["image_urls"] == [f"{MARKER}{len(image) * 3 // 4}"]
    assert len(str(stored)) < 1000  # the row carries no image
    kept = await db.fetchval("SELECT media FROM task_media WHERE task_id = $1", task["task_id"])
    assert kept == {"image_urls": [image]}
    for shown in (
        task,
        (await client.get(f"/v1/tasks/{task['task_id']}", headers=team.headers)).json(),
        (await client.get("/v1/tasks", headers=team.headers)).json()["data"][0],
    ):
        assert shown["image_urls"] == [f"base64 image, about {len(image) * 3 // 4} bytes"]

    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"
    (sent,) = await sim_tasks(sim)
    images = sent["request"].get("image_urls") or [sent["request"].get("first_frame_image")]
    assert images == [image]  # Qingbo gets the image exactly as the app sent it
