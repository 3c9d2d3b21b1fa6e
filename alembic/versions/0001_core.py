"""Core schema: teams, API keys, tasks, idempotency keys, upstream state.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-23
"""

from service.platform.db import run_script

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE TABLE teams (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
            rpm_limit integer CHECK (rpm_limit > 0),
            max_concurrent_tasks integer CHECK (max_concurrent_tasks > 0),
            allowed_models text[],
            webhook_secret text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE api_keys (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
            name text NOT NULL,
            prefix text NOT NULL,
            key_hash bytea NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        );
        CREATE INDEX api_keys_team ON api_keys (team_id);

        -- status is what callers see (Qingbo's five); dispatch_state is the gateway's own
        -- progress through submission: pending -> claimed -> submitting -> submitted -> done.
        CREATE TABLE tasks (
            id text PRIMARY KEY,
            team_id uuid NOT NULL REFERENCES teams (id),
            api_key_id uuid REFERENCES api_keys (id),
            model text NOT NULL,
            action text NOT NULL,
            status text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
            progress smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
            request jsonb NOT NULL,
            cost_micros bigint NOT NULL CHECK (cost_micros >= 0),
            priority smallint NOT NULL DEFAULT 0,
            callback_url text,
            callback_events text[] NOT NULL,
            dispatch_state text NOT NULL DEFAULT 'pending'
                CHECK (dispatch_state IN ('pending', 'claimed', 'submitting', 'submitted', 'done')),
            dispatch_attempts integer NOT NULL DEFAULT 0,
            dispatch_after timestamptz NOT NULL DEFAULT now(),
            claimed_at timestamptz,
            submit_started_at timestamptz,
            upstream_task_id text UNIQUE,
            callback_token_hash bytea,
            next_poll_at timestamptz,
            poll_count integer NOT NULL DEFAULT 0,
            result jsonb,
            error jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            submitted_at timestamptz,
            start_time timestamptz,
            completed_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((dispatch_state = 'done') = (status IN ('completed', 'failed', 'cancelled')))
        );
        CREATE INDEX tasks_team_created ON tasks (team_id, created_at DESC, id DESC);
        CREATE INDEX tasks_pending ON tasks (dispatch_after) WHERE dispatch_state = 'pending';
        CREATE INDEX tasks_in_flight ON tasks (dispatch_state)
            WHERE dispatch_state IN ('claimed', 'submitting', 'submitted');
        CREATE INDEX tasks_poll_due ON tasks (next_poll_at) WHERE dispatch_state = 'submitted';

        CREATE TABLE idempotency_keys (
            team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
            key text NOT NULL,
            request_hash bytea NOT NULL,
            task_id text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (team_id, key)
        );

        -- One row: whether submissions to Qingbo are paused (401/402 from the account).
        CREATE TABLE upstream_state (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            paused_until timestamptz,
            pause_reason text,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO upstream_state DEFAULT VALUES;
        """
    )


def downgrade() -> None:
    run_script("DROP TABLE upstream_state, idempotency_keys, tasks, api_keys, teams")
