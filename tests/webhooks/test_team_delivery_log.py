"""The team's delivery log (the console's webhooks page): its own events only, by status."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from service.platform.errors import InvalidRequest
from service.webhooks.service import team_delivery_log
from tests.factories import make_team, submit
from tests.spend.conftest import finish_as


async def test_a_team_sees_its_own_events_newest_first_by_status(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    mine, theirs = await make_team(client), await make_team(client)
    ids = []
    for team in (mine, mine, theirs):
        task = await submit(client, team, callback_url="http://127.0.0.1:9/hook")
        await finish_as(db, task["task_id"], "failed")
        ids.append(task["task_id"])
    await db.execute("UPDATE webhook_events SET status = 'failed' WHERE task_id = $1", ids[0])
    log = await team_delivery_log(db, team_id=mine.team["id"], status=None)
    assert [e["task_id"] for e in log] == [ids[1], ids[0]]
    failed = await team_delivery_log(db, team_id=mine.team["id"], status="failed")
    assert [e["task_id"] for e in failed] == [ids[0]]
    with pytest.raises(InvalidRequest):
        await team_delivery_log(db, team_id=mine.team["id"], status="lost")
