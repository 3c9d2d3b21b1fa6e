"""Tracking faults: failed reads retried on a short backoff of their own, and polls leased
visibly, so a watched task's next poll can be pulled earlier without breaking a lease.

Revision ID: 0019_tracking_faults
Revises: 0018_team_destinations
Create Date: 2026-12-06

`read_failures` counts a tracked task's reads of Qingbo that failed in a row (429, 5xx,
no answer): the next read is retried on QGW_POLL_RETRY_BASE_SECONDS doubling up to
QGW_POLL_RETRY_MAX_SECONDS, and the count starts again at the next answer recorded. The
regular schedule (`poll_count`) is left alone, so a storm does not push polls out.

`poll_leased_until` is when the lease of a read handed over to the read lane ends (the
poll cron's claim or a callback's): the watched-task pull (README "Tracking") moves only
polls that are not leased, so at most one read of a task is out at a time. An answer
recorded clears it.

`last_read_at` is when Qingbo's last answer about the task was recorded (the submit's,
then each read's): a watched task's next poll is brought to that plus
QGW_POLL_WATCHED_SECONDS, so its pace does not also wait for the poll cron's tick.
"""

from service.platform.db import run_script

revision = "0019_tracking_faults"
down_revision = "0018_team_destinations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE tasks ADD COLUMN read_failures integer NOT NULL DEFAULT 0
                              CHECK (read_failures >= 0),
                          ADD COLUMN poll_leased_until timestamptz,
                          ADD COLUMN last_read_at timestamptz;
        """
    )


def downgrade() -> None:
    run_script(
        "ALTER TABLE tasks DROP COLUMN last_read_at, DROP COLUMN poll_leased_until, "
        "DROP COLUMN read_failures;"
    )
