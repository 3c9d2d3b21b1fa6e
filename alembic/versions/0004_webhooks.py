"""Webhooks to apps: an outbox of events written with the state change, and every attempt.

Revision ID: 0004_webhooks
Revises: 0003_budgets
Create Date: 2026-11-24

`qgw_admit_task` (0003) writes budget-threshold events here when a team has an alert
URL: PL/pgSQL binds table names when it runs, so it needs this table only by then.
"""

from service.platform.db import run_script

revision = "0004_webhooks"
down_revision = "0003_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        -- Secret rotation: the previous secret keeps signing beside the new one until then.
        ALTER TABLE teams ADD COLUMN previous_webhook_secret text,
                          ADD COLUMN previous_secret_expires_at timestamptz;
        -- When the last 'processing' event of the task was written (throttling).
        ALTER TABLE tasks ADD COLUMN webhook_progress_at timestamptz;

        -- One row per event; its id is the webhook-id header, the same on every attempt.
        CREATE TABLE webhook_events (
            id text PRIMARY KEY,
            team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
            task_id text REFERENCES tasks (id) ON DELETE CASCADE,
            event text NOT NULL,
            url text NOT NULL,
            payload jsonb NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'failed', 'stopped')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            leased_until timestamptz,
            last_status_code integer,
            last_error text,
            delivered_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX webhook_events_task ON webhook_events (task_id, created_at);
        CREATE INDEX webhook_events_team_failed ON webhook_events (team_id, created_at)
            WHERE status = 'failed';

        CREATE TABLE webhook_attempts (
            id bigserial PRIMARY KEY,
            event_id text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
            attempt integer NOT NULL,
            started_at timestamptz NOT NULL,
            latency_ms integer,
            status_code integer,
            response_excerpt text,
            error text
        );
        CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id, attempt);

        -- Workers hear of each new event once it is committed (NOTIFY is transactional).
        CREATE FUNCTION qgw_notify_webhook_event() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('qgw_webhook_events', NEW.id);
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER webhook_events_notify AFTER INSERT ON webhook_events
            FOR EACH ROW EXECUTE FUNCTION qgw_notify_webhook_event();
        """
    )


def downgrade() -> None:
    run_script(
        """
        DROP TABLE webhook_attempts, webhook_events;
        DROP FUNCTION qgw_notify_webhook_event();
        ALTER TABLE tasks DROP COLUMN webhook_progress_at;
        ALTER TABLE teams DROP COLUMN previous_webhook_secret,
                          DROP COLUMN previous_secret_expires_at;
        """
    )
