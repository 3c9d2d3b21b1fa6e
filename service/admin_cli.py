"""`qingbo-gateway admin ...`: operator commands that talk to Postgres directly."""

from __future__ import annotations

import argparse
import json

from service.config import Settings
from service.db import create_pool
from service.teams import service as teams
from service.teams.schemas import TeamCreate


async def run(args: argparse.Namespace, settings: Settings) -> None:
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            if args.admin_command == "create-team":
                async with conn.transaction():
                    team = await teams.create_team(conn, body=TeamCreate(name=args.name))
                    key_row, key = await teams.issue_key(
                        conn, team_id=team["id"], name=args.key_name
                    )
                print(
                    json.dumps(
                        {"team_id": str(team["id"]), "key_id": str(key_row["id"]), "key": key}
                    )
                )
    finally:
        await pool.close()
