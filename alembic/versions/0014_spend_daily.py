"""A daily roll-up of what finished tasks cost, so a report reads a row per day and group
instead of a row per task (bench/scale.py: a month's report across teams took 9.9 ms at
10^6 tasks against 0.67 ms at 10^3, reading every charge of the month).

`spend_daily` holds one row per admission day (in the budget time zone the roll-up was
made in, `spend_rollup_state.zone`) x team x key x model x resolution x status.
`task_charges.rolled_up` says which charges it holds; the cron that folds charges in
(spend/rollup.py) flips the flag in the same statement, so a report that reads the roll-up
and the charges not yet rolled up, in one snapshot, counts each charge once. Existing
charges start not rolled up: the first fold takes them in.

Revision ID: 0014_spend_daily
Revises: 0013_auth_changes
Create Date: 2026-12-03
"""

from service.platform.db import run_script

revision = "0014_spend_daily"
down_revision = "0013_auth_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE TABLE spend_daily (
            day date NOT NULL,
            team_id uuid NOT NULL,
            api_key_id uuid,
            model text NOT NULL,
            resolution text NOT NULL,
            status text NOT NULL,
            tasks bigint NOT NULL,
            completed bigint NOT NULL,
            amount_micros bigint NOT NULL,
            UNIQUE NULLS NOT DISTINCT (day, team_id, api_key_id, model, resolution, status)
        );
        CREATE INDEX spend_daily_team_day ON spend_daily (team_id, day);

        CREATE TABLE spend_rollup_state (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            zone text NOT NULL
        );

        ALTER TABLE task_charges ADD COLUMN rolled_up boolean NOT NULL DEFAULT false;
        CREATE INDEX task_charges_not_rolled_up ON task_charges (admitted_at)
            WHERE NOT rolled_up;
        """
    )


def downgrade() -> None:
    run_script(
        """
        DROP INDEX task_charges_not_rolled_up;
        ALTER TABLE task_charges DROP COLUMN rolled_up;
        DROP TABLE spend_rollup_state;
        DROP TABLE spend_daily;
        """
    )
