"""`qingbo-gateway admin keys|audit` as an operator runs them, in process (click's runner)
against the tests' database; their changes are in the audit trail as the shell user."""

from __future__ import annotations

import getpass
import json

import httpx

from service.config import Settings
from tests.factories import ADMIN, Ran, invoke_cli, make_team


async def admin(settings: Settings, *args: str) -> Ran:
    """`qingbo-gateway admin ARGS` in this process."""
    env = {"QGW_DATABASE_URL": settings.database_url, "QGW_LOG_LEVEL": "WARNING"}
    return await invoke_cli(["admin", *args], env)


async def test_keys_and_audit_from_a_shell(client: httpx.AsyncClient, settings: Settings) -> None:
    team = await make_team(client)
    team_id = team.team["id"]
    issued = await admin(
        settings, "keys", "issue", "--team", team_id, "--name", "ops", "--expires-in-days", "5"
    )
    assert issued.returncode == 0, issued.stderr
    key = json.loads(issued.stdout)
    assert key["key"].startswith("qgw_") and key["expires_at"]
    answer = await client.get("/v1/tasks", headers={"Authorization": f"Bearer {key['key']}"})
    assert answer.status_code == 200

    listed = await admin(settings, "keys", "list", "--team", team_id)
    names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert listed.returncode == 0 and names == ["default", "ops"]
    assert key["key"] not in listed.stdout

    assert (await admin(settings, "keys", "revoke", key["id"])).returncode == 0
    answer = await client.get("/v1/tasks", headers={"Authorization": f"Bearer {key['key']}"})
    assert answer.status_code == 401
    missing = await admin(settings, "keys", "revoke", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "key not found" in missing.stderr
    assert (await admin(settings, "keys", "list", "--team", "not-a-uuid")).returncode == 2

    trail = await admin(settings, "audit", "--target", key["id"])
    entries = [json.loads(line) for line in trail.stdout.splitlines()]
    assert [e["action"] for e in entries] == ["key.revoke", "key.issue"]
    assert {e["actor"] for e in entries} == {f"cli:{getpass.getuser()}"}
    assert key["key"] not in trail.stdout
    via_api = await client.get("/admin/audit", params={"target": key["id"]}, headers=ADMIN)
    assert [e["id"] for e in via_api.json()["data"]] == [e["id"] for e in entries]
