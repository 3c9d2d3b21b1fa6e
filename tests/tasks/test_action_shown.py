"""The `action` a task shows, in each answer version, through the real API, simulator and
database. Qingbo's status.mdx: `action` is "identical to the value submitted"; only its
Hailuo page fixes one (`generate`, their only action in 2026-09). So a chained action
(extend, regenerate, finalize) or a model whose first action is not generate shows its own
action under 2026-09 too, on the submit answer, on reads and in lists, and the simulator
answers the same; Hailuo's tasks show `generate` under 2026-09 and what was stored under
2026-04, as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from service.catalog.wire import APRIL_2026_WIRE, SEPTEMBER_2026_WIRE
from service.tasks import submission
from service.tasks.resources import Resources
from service.tasks.tracking import refresh_from_upstream
from tests.conftest import SIM_KEY
from tests.factories import FIRST_FRAME, TeamKey, claim, make_team, task_body, wait_for
from tests.prices import VERSION

CURRENT_ONLY = pytest.mark.skipif(
    VERSION != "2026-09", reason="the other families: the current generation only"
)
APRIL = {"Qingbo-Version": "2026-04"}
CURRENT = {"Qingbo-Version": "2026-09"}
SIM_AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
CLIP = "https://cdn.example.com/source.mp4"


async def _run(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    team: TeamKey,
    body: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """Submit `body` asking for the 2026-09 shape and run it to completed through the
    simulator: the submit answer and the task's upstream id."""
    answer = await client.post("/v1/tasks", json=body, headers={**team.headers, **CURRENT})
    assert answer.status_code == 200, answer.text
    task = answer.json()
    attempt = await claim(res, db, task["task_id"])
    assert await submission.submit(res, task["task_id"], attempt) == "submitted"

    async def completed() -> bool:
        await refresh_from_upstream(res.pool, res.qingbo, res.settings, task["task_id"])
        status = await db.fetchval("SELECT status FROM tasks WHERE id = $1", task["task_id"])
        return bool(status == "completed")

    await wait_for(completed, timeout=10)
    upstream = await db.fetchval(
        "SELECT upstream_task_id FROM tasks WHERE id = $1", task["task_id"]
    )
    return task, str(upstream)


async def _read(
    client: httpx.AsyncClient, team: TeamKey, task_id: str, version: dict[str, str]
) -> dict[str, Any]:
    answer = await client.get(f"/v1/tasks/{task_id}", headers={**team.headers, **version})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _sent_and_shown_by_qingbo(sim: httpx.AsyncClient, upstream_id: str) -> tuple[str, str]:
    """The action the simulator was sent for a task, and the one its own read shows."""
    tasks = (await sim.get("/_sim/tasks")).json()["tasks"]
    [sent] = [t["request"].get("action") for t in tasks if t["task_id"] == upstream_id]
    read = await sim.get(f"/v1/tasks/{upstream_id}", headers=SIM_AUTH)
    assert read.status_code == 200, read.text
    return sent, read.json()["action"]


# (source body or None, the body under test given the source's gateway id, its action)
Case = tuple[dict[str, Any] | None, Callable[[str], dict[str, Any]], str]
CASES: dict[str, Case] = {
    "pixverse extend": (
        {"model": "pixverse-v6", "prompt": "corgi", "resolution": "540p", "duration": 5},
        lambda src: {
            "model": "pixverse-v6",
            "action": "extend",
            "ref_task_id": src,
            "prompt": "keeps walking",
            "resolution": "540p",
            "duration": 5,
        },
        "extend",
    ),
    "veo economy extend": (
        {"model": "veo3.1-fast-rev", "prompt": "a shop", "duration": 8, "resolution": "720p"},
        lambda src: {
            "model": "veo3.1-fast-rev",
            "action": "extend",
            "ref_task_id": src,
            "prompt": "into the shop",
        },
        "extend",
    ),
    "flux finalize": (
        {"model": "flux-3-video-draft", "prompt": "observatory", "resolution": "hd", "duration": 5},
        lambda src: {
            "model": "flux-3-video",
            "action": "finalize",
            "ref_task_id": src,
            "resolution": "fhd",
        },
        "finalize",
    ),
    # No action sent: the model's only one (regenerate) is stored, sent and shown.
    "h3 regeneration, action left out": (
        {"model": "minimax-h3", "prompt": "p", "duration": 5, "resolution": "768p"},
        lambda src: {"model": "minimax-h3-regeneration", "ref_task_id": src},
        "regenerate",
    ),
    # Not chained, and its only action is not generate (its schema requires it sent).
    "wan videoedit": (
        None,
        lambda _: {
            "model": "wan2.7-videoedit",
            "action": "edit",
            "video_urls": [CLIP],
            "duration": 10,
        },
        "edit",
    ),
}


@CURRENT_ONLY
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_a_non_generate_action_shows_as_itself_in_both_versions(
    client: httpx.AsyncClient,
    res: Resources,
    db: asyncpg.Connection,
    sim: httpx.AsyncClient,
    case: str,
) -> None:
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 0.2})
    source_body, make_body, expected = CASES[case]
    team = await make_team(client)
    ids: dict[str, str] = {}  # every task of the team: the action it shows
    source_id = ""
    if source_body is not None:
        source, _ = await _run(client, res, db, team, source_body)
        assert source["action"] == "generate"
        source_id = source["task_id"]  # the app names its own gateway task
        ids[source_id] = "generate"
    task, upstream_id = await _run(client, res, db, team, make_body(source_id))
    ids[task["task_id"]] = expected

    # The submit answer, in the 2026-09 shape (with its reservation).
    assert task["action"] == expected and "pre_consumed_cost" in task
    # Qingbo (the simulator) was sent that action and shows it on its own read.
    assert await _sent_and_shown_by_qingbo(sim, upstream_id) == (expected, expected)
    # The gateway's reads: the same in 2026-09 as in 2026-04 (which was already right).
    current = await _read(client, team, task["task_id"], CURRENT)
    assert current["status"] == "completed" and current["action"] == expected
    assert current["progress"] == "100%" and "cost" in current  # the 2026-09 shape
    april = await _read(client, team, task["task_id"], APRIL)
    assert april["action"] == expected and april["progress"] == 100
    # The list shows each task's own action.
    for version in (CURRENT, APRIL):
        listed = await client.get("/v1/tasks", headers={**team.headers, **version})
        assert listed.status_code == 200, listed.text
        assert {t["task_id"]: t["action"] for t in listed.json()["data"]} == ids


async def test_hailuo_shows_generate_in_2026_09_and_what_was_stored_in_2026_04(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection, sim: httpx.AsyncClient
) -> None:
    """Unchanged by the fix: an image task is stored as image2video (the April form); the
    current generation is sent and shows `generate`, the April one `image2video`."""
    await sim.put("/_sim/config", json={"queue_seconds": 0, "processing_seconds": 0.2})
    team = await make_team(client)
    body = task_body(model="minimax-hailuo-2.3", image_urls=[FIRST_FRAME])
    task, upstream_id = await _run(client, res, db, team, body)
    assert task["action"] == "generate"
    stored = await db.fetchval("SELECT action FROM tasks WHERE id = $1", task["task_id"])
    assert stored == "image2video"
    assert (await _read(client, team, task["task_id"], CURRENT))["action"] == "generate"
    assert (await _read(client, team, task["task_id"], APRIL))["action"] == "image2video"
    # The upstream generation is sent the action it takes, and echoes it.
    sent = "generate" if VERSION == "2026-09" else "image2video"
    assert await _sent_and_shown_by_qingbo(sim, upstream_id) == (sent, sent)

    text = await client.post("/v1/tasks", json=task_body(), headers={**team.headers, **APRIL})
    assert text.status_code == 200 and text.json()["action"] == "generate"


def test_only_the_generations_own_models_have_a_fixed_action() -> None:
    assert SEPTEMBER_2026_WIRE.show_action("image2video", own_model=True) == "generate"
    for action in ("extend", "regenerate", "edit", "finalize", "generate"):
        assert SEPTEMBER_2026_WIRE.show_action(action, own_model=False) == action
        assert APRIL_2026_WIRE.show_action(action, own_model=False) == action
    assert APRIL_2026_WIRE.show_action("image2video", own_model=True) == "image2video"


@pytest.mark.parametrize("version", ["2026-04", "2026-09"])
async def test_the_simulator_shows_the_action_it_was_sent_or_the_models_own(
    sim: httpx.AsyncClient, version: str
) -> None:
    """Straight to the simulator: an action left out is the model's own (a catalog model's
    first, as the gateway stores it), never a blanket `generate`."""
    config = {"api_version": version, "queue_seconds": 0, "processing_seconds": 0}
    (await sim.put("/_sim/config", json=config)).raise_for_status()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "minimax-hailuo-2.3", "prompt": "p"}, "generate"),
        ({"model": "minimax-hailuo-2.3", "prompt": "p", "action": "generate"}, "generate"),
    ]
    if version == "2026-09":
        h3 = {"model": "minimax-h3", "prompt": "p", "duration": 5, "resolution": "768p"}
        source = await sim.post("/v1/tasks", json=h3, headers=SIM_AUTH)  # done at once
        assert source.status_code == 200, source.text
        regenerate = {"model": "minimax-h3-regeneration", "ref_task_id": source.json()["task_id"]}
        videoedit = {"model": "wan2.7-videoedit", "video_urls": [CLIP], "action": "edit"}
        cases += [(regenerate, "regenerate"), (videoedit, "edit")]
    else:
        image = {"model": "minimax-hailuo-2.3", "prompt": "p", "image_urls": [FIRST_FRAME]}
        cases.append(({**image, "action": "image2video"}, "image2video"))
    for body, expected in cases:
        answer = await sim.post("/v1/tasks", json=body, headers=SIM_AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] == expected, body
        read = await sim.get(f"/v1/tasks/{answer.json()['task_id']}", headers=SIM_AUTH)
        assert read.json()["action"] == expected, body
