"""Bounds that hold under faults: how many times a task's unknown submission outcome was
resolved by sending again.

Revision ID: 0009_fault_bounds
Revises: 0008_spend_and_audit
Create Date: 2026-12-01

`ambiguous_resends` counts the resends after an unknown outcome (read timeout, reset, 504,
a worker killed inside the call). With an upstream Idempotency-Key they are safe and only
the retry deadline bounds them; under `QGW_AMBIGUOUS_SUBMIT_POLICY=resubmit` each one may
be a second paid video, so `QGW_AMBIGUOUS_MAX_RESUBMITS` bounds them too.

`webhook_attempts.response_headers` keeps the receiver's answer headers (cookies and
credentials dropped): the team-facing delivery log shows them instead of the response
body, which only the admin API shows. An attempt is logged when it starts and completed
when it ends (`finished_at`), so one cut short by a crash or a cancelled job still shows,
and the next claim of its event marks it interrupted.

`task_media` holds a task's Base64 images, out of `tasks.request` (which keeps a marker
naming each one's size): lists, reads, events and webhooks never read them; only the
submission to Qingbo does (bench/list_images.py).
"""

from service.platform.db import run_script

revision = "0009_fault_bounds"
down_revision = "0008_spend_and_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE tasks ADD COLUMN ambiguous_resends integer NOT NULL DEFAULT 0
            CHECK (ambiguous_resends >= 0);
        ALTER TABLE webhook_attempts ADD COLUMN response_headers jsonb,
                                     ADD COLUMN finished_at timestamptz;
        UPDATE webhook_attempts SET finished_at = started_at;
        CREATE INDEX webhook_attempts_unfinished ON webhook_attempts (event_id)
            WHERE finished_at IS NULL;
        CREATE TABLE task_media (
            task_id text PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
            media jsonb NOT NULL
        );
        """
    )


def downgrade() -> None:
    run_script(
        """
        DROP TABLE task_media;
        ALTER TABLE webhook_attempts DROP COLUMN response_headers, DROP COLUMN finished_at;
        ALTER TABLE tasks DROP COLUMN ambiguous_resends;
        """
    )
