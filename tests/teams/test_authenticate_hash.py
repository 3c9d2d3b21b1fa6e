"""Authenticating by a key's hash (the console's sessions keep only the hash)."""

from __future__ import annotations

import httpx
import pytest

from service.platform.errors import Unauthorized
from service.tasks.resources import Resources
from service.teams.service import authenticate_hash, hash_key
from tests.factories import ADMIN, make_team


async def test_the_hash_of_a_live_key_is_its_caller_until_it_is_revoked(
    client: httpx.AsyncClient, res: Resources
) -> None:
    team = await make_team(client)
    caller = await authenticate_hash(res.pool, key_hash=hash_key(team.key), keys=res.keys)
    assert str(caller.team_id) == team.team["id"]
    key_id = (await client.get(f"/admin/teams/{team.team['id']}/keys", headers=ADMIN)).json()
    await client.delete(f"/admin/keys/{key_id['data'][0]['id']}", headers=ADMIN)
    with pytest.raises(Unauthorized):
        await authenticate_hash(res.pool, key_hash=hash_key(team.key), keys=res.keys)
    with pytest.raises(Unauthorized):
        await authenticate_hash(res.pool, key_hash=hash_key("qgw_unknown"), keys=None)
