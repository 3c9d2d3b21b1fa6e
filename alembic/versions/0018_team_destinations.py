"""Destinations an operator opened for a team's webhooks; the generic error class of each
webhook attempt (what the team's delivery log shows); the team of each new event in its
notification (workers share attempt slots fairly across teams before claiming it).

Revision ID: 0018_team_destinations
Revises: 0017_disputes
Create Date: 2026-12-06
"""

from service.platform.db import run_script

revision = "0018_team_destinations"
down_revision = "0017_disputes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        -- CIDRs, host names and *.suffix patterns (service/platform/egress.py).
        ALTER TABLE teams ADD COLUMN open_destinations text[] NOT NULL DEFAULT '{}';
        -- timeout, connection_refused, dns_failure, tls_error, blocked_destination, ...:
        -- the team sees this; `error` keeps the detail for operators. Older attempts have
        -- none and show as 'error'.
        ALTER TABLE webhook_attempts ADD COLUMN error_class text;
        ALTER TABLE webhook_events ADD COLUMN last_error_class text;

        -- "<event id> <team id>": a worker that still reads only the id finds no such
        -- event, skips it, and the sweeper sends it a few seconds later.
        CREATE OR REPLACE FUNCTION qgw_notify_webhook_event() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('qgw_webhook_events', NEW.id || ' ' || NEW.team_id);
            RETURN NULL;
        END
        $$;
        """
    )


def downgrade() -> None:
    run_script(
        """
        CREATE OR REPLACE FUNCTION qgw_notify_webhook_event() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('qgw_webhook_events', NEW.id);
            RETURN NULL;
        END
        $$;
        ALTER TABLE webhook_events DROP COLUMN last_error_class;
        ALTER TABLE webhook_attempts DROP COLUMN error_class;
        ALTER TABLE teams DROP COLUMN open_destinations;
        """
    )
