"""The simulator follows qingbo-api.md: auth, validation, lifecycle, cancel rules, controls."""

from __future__ import annotations

import httpx

from tests.conftest import SIM_KEY
from tests.factories import task_body, wait_for

KEY = {"Authorization": f"Bearer {SIM_KEY}"}


async def test_lifecycle_progress_and_result(sim: httpx.AsyncClient) -> None:
    created = await sim.post("/v1/tasks", json=task_body(), headers=KEY)
    assert created.status_code == 200
    body = created.json()
    assert set(body) == {"task_id", "model", "action", "status", "created_at", "progress"}
    assert body["status"] == "queued" and body["progress"] == 0

    seen: set[str] = set()

    async def finished() -> dict | None:
        task = (await sim.get(f"/v1/tasks/{body['task_id']}", headers=KEY)).json()
        seen.add(task["status"])
        return task if task["status"] == "completed" else None

    done = await wait_for(finished, timeout=5, interval=0.02)
    assert {"queued", "processing", "completed"} <= seen
    assert (
        done["progress"] == 100 and done["result"]["videos"][0]["expires_at"] > done["completed_at"]
    )


async def test_auth_and_validation_match_the_gateway(sim: httpx.AsyncClient) -> None:
    assert (await sim.post("/v1/tasks", json=task_body())).status_code == 401
    wrong = await sim.post("/v1/tasks", json=task_body(), headers={"Authorization": "Bearer other"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    bad = await sim.post("/v1/tasks", json=task_body(duration=10, resolution="1080p"), headers=KEY)
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "message": "duration: 1080p allows only 6 seconds",
        "code": "invalid_request",
    }
    assert (await sim.get("/_sim/tasks")).json()["tasks"] == []


async def test_cancel_only_while_queued(sim: httpx.AsyncClient) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 60})
    queued = (await sim.post("/v1/tasks", json=task_body(), headers=KEY)).json()
    cancelled = await sim.post(f"/v1/tasks/{queued['task_id']}/cancel", headers=KEY)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 60})
    running = (await sim.post("/v1/tasks", json=task_body(), headers=KEY)).json()
    refused = await sim.post(f"/v1/tasks/{running['task_id']}/cancel", headers=KEY)
    assert refused.status_code == 409
    assert (await sim.get("/v1/tasks/task-missing", headers=KEY)).status_code == 404


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


async def test_sync_waits_for_the_result_or_gives_a_poll_url(sim: httpx.AsyncClient) -> None:
    done = await sim.post("/v1/tasks/sync", json=task_body(), headers=KEY)
    assert done.json()["status"] == "completed"
    await sim.put("/_sim/config", json={"processing_seconds": 60})
    pending = await sim.post(
        "/v1/tasks/sync", params={"timeout": 0.1}, json=task_body(), headers=KEY
    )
    assert pending.json()["status"] in ("queued", "processing")
    assert pending.json()["poll_url"].endswith(pending.json()["task_id"])
