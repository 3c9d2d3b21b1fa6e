"""Each team's waiting tasks in dispatch order, so one dispatch claim reads at most
`limit` tasks per team instead of ranking every waiting task (bench/scale.py: a claim of
100 from 100,000 waiting took 590 ms before).

Revision ID: 0012_pending_by_team
Revises: 0011_money_sql_files
Create Date: 2026-12-02
"""

from service.platform.db import run_script

revision = "0012_pending_by_team"
down_revision = "0011_money_sql_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE INDEX tasks_pending_by_team ON tasks (team_id, priority DESC, created_at, id)
            WHERE dispatch_state = 'pending';
        """
    )


def downgrade() -> None:
    run_script("DROP INDEX tasks_pending_by_team;")
