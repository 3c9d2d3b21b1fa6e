"""A covering index for reports across teams: the roll-up's rows of a window of days,
read from the index alone.

bench/scale.py at 10^6 tasks: the month's report across teams read the roll-up with a
sequential scan of its whole history (the planner's estimate for a day range, and a
generic plan's, made the day-leading unique index no cheaper): 1.9 ms against 1.2-1.4 ms
at 10^3, growing with the history kept. From this index alone: 0.47 ms, custom or generic
plan. The reports of one team keep `spend_daily_team_day`.

Revision ID: 0016_spend_daily_by_day
Revises: 0015_batch_admission
Create Date: 2026-12-04
"""

from service.platform.db import run_script

revision = "0016_spend_daily_by_day"
down_revision = "0015_batch_admission"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE INDEX spend_daily_by_day ON spend_daily (day)
            INCLUDE (team_id, api_key_id, model, resolution, status, tasks, completed,
                     amount_micros);
        """
    )


def downgrade() -> None:
    run_script("DROP INDEX spend_daily_by_day;")
