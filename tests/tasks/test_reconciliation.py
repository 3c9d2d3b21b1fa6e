"""The reconciler re-drives what lost its job: stale claims and stale submissions."""

from __future__ import annotations

import asyncpg
import httpx

from service.tasks import reconciliation
from service.tasks.resources import Resources
from tests.factories import claim, make_team, row, submit


async def test_reconciler_requeues_stale_claims_and_resolves_stale_submissions(
    client: httpx.AsyncClient, res: Resources, db: asyncpg.Connection
) -> None:
    team = await make_team(client)
    lost_claim, lost_submit = await submit(client, team), await submit(client, team)
    await claim(res, db, lost_claim["task_id"])
    await claim(res, db, lost_submit["task_id"])
    await db.execute(
        "UPDATE tasks SET claimed_at = now() - interval '1 hour' WHERE id = $1",
        lost_claim["task_id"],
    )
    await db.execute(
        "UPDATE tasks SET dispatch_state = 'submitting', "
        "submit_started_at = now() - interval '1 hour' WHERE id = $1",
        lost_submit["task_id"],
    )
    repairs = await reconciliation.reconcile(res)
    assert repairs == {"stale_claim": 1, "stale_submit": 1}
    assert (await row(db, lost_claim["task_id"]))["dispatch_state"] == "claimed"  # re-dispatched
    assert (await row(db, lost_submit["task_id"]))["error"]["code"] == "upstream_ambiguous"
