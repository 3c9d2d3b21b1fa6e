"""The simulator follows qingbo-api.md in both generations: auth, validation, lifecycle,
shapes, cancel rules, idempotency, billing, waiting, controls."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SIM_KEY
from tests.factories import task_body, wait_for
from tests.prices import quota

KEY = {"Authorization": f"Bearer {SIM_KEY}"}
BOTH = pytest.mark.parametrize("version", ["2026-04", "2026-09"])
FRAME = "https://img.example/a.png"


async def use(sim: httpx.AsyncClient, version: str, **config: Any) -> None:
    answer = await sim.put("/_sim/config", json={"api_version": version, **config})
    answer.raise_for_status()


def valid_body(version: str, **overrides: Any) -> dict[str, Any]:
    """A body in the generation's own form (2026-09 refuses the older one's fields)."""
    body = task_body(**overrides)
    if version == "2026-04":
        body.setdefault("aspect_ratio", "16:9")
    return body


async def finished(sim: httpx.AsyncClient, task_id: str, seen: set[str]) -> dict[str, Any] | None:
    task = (await sim.get(f"/v1/tasks/{task_id}", headers=KEY)).json()
    seen.add(f"{task['status']}:{task['progress']}")
    return task if task["status"] == "completed" else None


@BOTH
async def test_lifecycle_progress_and_result_in_each_shape(
    sim: httpx.AsyncClient, version: str
) -> None:
    await use(sim, version)
    created = await sim.post("/v1/tasks", json=valid_body(version), headers=KEY)
    assert created.status_code == 200, created.text
    body = created.json()
    fields = {"task_id", "model", "action", "status", "created_at", "progress"}
    if version == "2026-09":
        fields.add("pre_consumed_cost")
        assert body["pre_consumed_cost"] == quota(
            version=version
        )  # 0.3294 USD at 500,000 quota a dollar
    assert set(body) == fields
    assert body["status"] == "queued" and body["progress"] == 0

    seen: set[str] = set()
    done = await wait_for(lambda: finished(sim, body["task_id"], seen), timeout=5, interval=0.02)
    video = done["result"]["videos"][0]
    if version == "2026-04":
        assert done["progress"] == 100 and isinstance(video["url"], str)
        assert done["created_at"] > 10**12  # milliseconds
        assert any(s.startswith("processing:") and s != "processing:0" for s in seen)
    else:
        assert done["progress"] == "100%" and isinstance(video["url"], list)
        assert done["created_at"] < 10**12  # seconds
        assert "queued:" in seen and any(s.endswith("%") and "processing" in s for s in seen)
        assert done["cost"] == quota(version=version) and done["billing_status"] == "settled"
        assert done["urls"]["get"].endswith(f"/v1/tasks/{body['task_id']}")
    assert video["expires_at"] > done["completed_at"]
    mp4 = await sim.get(video["url"] if version == "2026-04" else video["url"][0])
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    assert body["task_id"].encode() in mp4.content  # each task's file is its own


async def test_auth_and_validation_match_the_gateway(sim: httpx.AsyncClient) -> None:
    await use(sim, "2026-04")
    assert (await sim.post("/v1/tasks", json=task_body())).status_code == 401
    wrong = await sim.post("/v1/tasks", json=task_body(), headers={"Authorization": "Bearer other"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    bad = await sim.post("/v1/tasks", json=task_body(duration=10, resolution="1080p"), headers=KEY)
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "message": "duration: 1080p allows only 6 seconds",
        "code": "invalid_request",
        "param": "duration",
    }
    april_only = await sim.post("/v1/tasks", json=task_body(first_frame_image=FRAME), headers=KEY)
    assert april_only.status_code == 400 and april_only.json()["error"]["param"] == (
        "first_frame_image"
    )
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aspect_ratio", "16:9"),
        ("image_urls", [FRAME]),
        ("camera_movement_tags", ["[推进]"]),
        ("negative_prompt", "rain"),
        ("n", 2),
        ("extra", {"x": 1}),
        ("action", "image2video"),
        ("last_frame_image", FRAME),
    ],
)
async def test_current_generation_refuses_undeclared_fields_unbilled(
    sim: httpx.AsyncClient, field: str, value: Any
) -> None:
    await use(sim, "2026-09")
    refused = await sim.post("/v1/tasks", json=task_body(**{field: value}), headers=KEY)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "capability_violation"
    assert refused.json()["error"]["param"] == field
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


async def test_current_generation_rules_and_per_clip_prices(sim: httpx.AsyncClient) -> None:
    await use(sim, "2026-09")
    text_only = {"model": "minimax-hailuo-2.3-fast", "prompt": "a street"}
    fast = await sim.post("/v1/tasks", json=text_only, headers=KEY)
    assert fast.status_code == 400 and fast.json()["error"]["param"] == "first_frame_image"
    seed_02 = task_body(model="minimax-hailuo-02", seed=1)
    assert (await sim.post("/v1/tasks", json=seed_02, headers=KEY)).json()["error"]["param"] == (
        "seed"
    )
    # Since 2026-09-24: seed refused by 2.3-fast too, and 02 priced per clip (768p 5 s 0.252).
    seeded = task_body(model="minimax-hailuo-2.3-fast", first_frame_image=FRAME, seed=9)
    refused = await sim.post("/v1/tasks", json=seeded, headers=KEY)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "seed"
    priced = await sim.post("/v1/tasks", json=task_body(model="minimax-hailuo-02"), headers=KEY)
    assert priced.status_code == 200 and priced.json()["pre_consumed_cost"] == 126_000
    ok = task_body(model="minimax-hailuo-2.3-fast", first_frame_image=FRAME)
    fast_ok = await sim.post("/v1/tasks", json=ok, headers=KEY)
    assert fast_ok.status_code == 200 and fast_ok.json()["pre_consumed_cost"] == 85_500
    assert len((await sim.get("/_sim/tasks")).json()["tasks"]) == 2


@BOTH
async def test_cancel_only_while_queued(sim: httpx.AsyncClient, version: str) -> None:
    await use(sim, version, queue_seconds=60)
    queued = (await sim.post("/v1/tasks", json=valid_body(version), headers=KEY)).json()
    cancelled = await sim.post(f"/v1/tasks/{queued['task_id']}/cancel", headers=KEY)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    if version == "2026-09":
        assert cancelled.json()["refunded"] is True
        assert cancelled.json()["refunded_quota"] == quota(version="2026-09")
        read = (await sim.get(f"/v1/tasks/{queued['task_id']}", headers=KEY)).json()
        assert read["cost"] == 0 and read["progress"] == "100%"
    await use(sim, version, queue_seconds=0, processing_seconds=60)
    running = (await sim.post("/v1/tasks", json=valid_body(version), headers=KEY)).json()
    refused = await sim.post(f"/v1/tasks/{running['task_id']}/cancel", headers=KEY)
    expected = (409, "not_cancellable") if version == "2026-04" else (400, "task_not_cancellable")
    assert (refused.status_code, refused.json()["error"]["code"]) == expected
    assert (await sim.get("/v1/tasks/task-missing", headers=KEY)).status_code == 404


async def test_idempotency_key_gives_the_first_task_and_one_bill(sim: httpx.AsyncClient) -> None:
    await use(sim, "2026-09", bill_factor=1.5)
    headers = {**KEY, "Idempotency-Key": "qgw-task-1"}
    first = (await sim.post("/v1/tasks", json=task_body(), headers=headers)).json()
    again = (await sim.post("/v1/tasks", json=task_body(), headers=headers)).json()
    assert again["task_id"] == first["task_id"]
    [task] = (await sim.get("/_sim/tasks")).json()["tasks"]
    assert task["idempotency_key"] == "qgw-task-1" and task["submissions"] == 2
    assert task["cost"] == 247_050  # 1.5 x 164,700 quota (0.3294 per clip)
    # 2026-04 has no such key: each POST is a new (billed) task.
    await use(sim, "2026-04")
    body = valid_body("2026-04")
    await sim.post("/v1/tasks", json=body, headers=headers)
    await sim.post("/v1/tasks", json=body, headers=headers)
    assert len((await sim.get("/_sim/tasks")).json()["tasks"]) == 3


async def test_controls_inject_failures_and_record_requests(sim: httpx.AsyncClient) -> None:
    config = (await sim.put("/_sim/config", json={"http_429_rate": 1.0})).json()
    assert config["http_429_rate"] == 1.0 and config["queue_seconds"] == 0.3  # partial update
    limited = await sim.post("/v1/tasks", json=task_body(), headers=KEY)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    await sim.put("/_sim/config", json={"http_429_rate": 0.0, "http_5xx_rate": 1.0})
    assert (await sim.post("/v1/tasks", json=task_body(), headers=KEY)).status_code == 500
    await sim.put("/_sim/config", json={"http_5xx_rate": 0.0, "submit_status": 402})
    assert (await sim.post("/v1/tasks", json=task_body(), headers=KEY)).status_code == 402
    await sim.put("/_sim/config", json={"submit_status": None})
    body = task_body(watermark=True)
    await sim.post("/v1/tasks", json=body, headers=KEY)
    recorded = (await sim.get("/_sim/tasks")).json()["tasks"]
    assert [t["request"] for t in recorded] == [body]
    assert (await sim.put("/_sim/config", json={"fail_rate": 2})).status_code == 400
    assert (await sim.put("/_sim/config", json={"api_version": "2025-01"})).status_code == 400


async def test_sync_waits_for_the_result_or_gives_a_poll_url(sim: httpx.AsyncClient) -> None:
    await use(sim, "2026-04")
    done = await sim.post("/v1/tasks/sync", json=valid_body("2026-04"), headers=KEY)
    assert done.json()["status"] == "completed"
    await sim.put("/_sim/config", json={"processing_seconds": 60})
    pending = await sim.post(
        "/v1/tasks/sync", params={"timeout": 0.1}, json=valid_body("2026-04"), headers=KEY
    )
    assert pending.json()["status"] in ("queued", "processing")
    assert pending.json()["poll_url"].endswith(pending.json()["task_id"])
    # 2026-09 removed the page: Prefer: wait on POST /v1/tasks replaces it.
    await use(sim, "2026-09")
    assert (await sim.post("/v1/tasks/sync", json=task_body(), headers=KEY)).status_code == 404


async def test_prefer_wait_answers_the_terminal_task_or_the_state_so_far(
    sim: httpx.AsyncClient,
) -> None:
    await use(sim, "2026-09")
    waited = await sim.post("/v1/tasks", json=task_body(), headers={**KEY, "Prefer": "wait=10"})
    assert waited.headers["preference-applied"] == "wait=10"
    assert waited.json()["status"] == "completed" and waited.json()["cost"] == quota(
        version="2026-09"
    )
    await use(sim, "2026-09", processing_seconds=60)
    early = await sim.post("/v1/tasks", json=task_body(), headers={**KEY, "Prefer": "wait=1"})
    assert early.json()["status"] in ("queued", "processing")
    assert early.json()["pre_consumed_cost"] == quota(version="2026-09")


async def test_result_links_expire_and_downloads_can_fail(sim: httpx.AsyncClient) -> None:
    await use(sim, "2026-09", queue_seconds=0, processing_seconds=0, download_fail_rate=1.0)
    task = (await sim.post("/v1/tasks", json=task_body(), headers=KEY)).json()
    read = (await sim.get(f"/v1/tasks/{task['task_id']}", headers=KEY)).json()
    url = read["result"]["videos"][0]["url"][0]
    assert (await sim.get(url)).status_code == 503
    await sim.put("/_sim/config", json={"download_fail_rate": 0.0, "result_ttl_seconds": 0})
    assert (await sim.get(url)).status_code == 404


async def _receive_one_post(received: asyncio.Queue[bytes]) -> asyncio.Server:
    """A bare HTTP receiver on loopback: the body of each POST it gets, answered 204."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await received.put(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@BOTH
async def test_terminal_patch_is_merged_into_every_terminal_answer(
    sim: httpx.AsyncClient, version: str
) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()
    server = await _receive_one_post(received)
    port = server.sockets[0].getsockname()[1]
    patch = {"cost": 5 * 10**14, "error": {"message": "bad\u0000"}, "extra_member": [1]}
    await use(sim, version, queue_seconds=0, processing_seconds=0.2, terminal_patch=patch)
    body = valid_body(version, callback_url=f"http://127.0.0.1:{port}/hook")
    created = (await sim.post("/v1/tasks", json=body, headers=KEY)).json()
    assert "extra_member" not in created  # the submit answer is not terminal

    async with server:
        called = orjson.loads(await asyncio.wait_for(received.get(), timeout=10))
    read = (await sim.get(f"/v1/tasks/{created['task_id']}", headers=KEY)).json()
    for answer in (called, read):
        assert answer["status"] == "completed" and answer["cost"] == 5 * 10**14
        assert answer["extra_member"] == [1] and answer["error"] == {"message": "bad\u0000"}
        assert answer["result"]["videos"]  # members the patch does not name are kept
    # A member that is an object on both sides is merged one level down.
    await sim.put("/_sim/config", json={"fail_rate": 1.0})
    failing = (await sim.post("/v1/tasks", json=valid_body(version), headers=KEY)).json()

    async def failed() -> dict[str, Any] | None:
        answer = (await sim.get(f"/v1/tasks/{failing['task_id']}", headers=KEY)).json()
        return answer if answer["status"] == "failed" else None

    ended = await wait_for(failed, timeout=5)
    assert ended["error"]["message"] == "bad\u0000" and ended["error"]["code"] in (
        "task_failed",
        "generation_failed",
    )
    cleared = await sim.put("/_sim/config", json={"terminal_patch": None})
    assert cleared.json()["terminal_patch"] is None
    plain = (await sim.get(f"/v1/tasks/{created['task_id']}", headers=KEY)).json()
    assert "extra_member" not in plain and plain.get("cost", 0) != 5 * 10**14
    refused = await sim.put("/_sim/config", json={"terminal_patch": [1]})
    assert refused.status_code == 400
