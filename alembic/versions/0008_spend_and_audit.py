"""Where the money went: one charge row per finished task, the audit trail of admin
changes, and expiring keys.

Revision ID: 0008_spend_and_audit
Revises: 0007_qingbo_versions
Create Date: 2026-12-01

`task_charges` holds what each finished task cost, with the dimensions reports group by
(team, key, model, resolution, status, the app's metadata, the admission time that picks
its budget window). It is written in the transaction that finishes the task, next to the
budget settlement. Reports read it, not `tasks`: a task row carries its request, Base64
images included, and grouping by a metadata key would detoast every one of them.

`admin_audit` is append-only: a trigger refuses UPDATE, DELETE and TRUNCATE.

The Idempotency-Key's reference to its task is checked at commit, so an admission can claim
the key before it inserts the task.
"""

from service.platform.db import run_script

revision = "0008_spend_and_audit"
down_revision = "0007_qingbo_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE TABLE task_charges (
            task_id text PRIMARY KEY,
            team_id uuid NOT NULL,
            api_key_id uuid,
            model text NOT NULL,
            resolution text NOT NULL,
            status text NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
            metadata jsonb NOT NULL DEFAULT '{}',
            amount_micros bigint NOT NULL CHECK (amount_micros >= 0),
            admitted_at timestamptz NOT NULL,
            settled_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX task_charges_team_admitted ON task_charges (team_id, admitted_at);
        CREATE INDEX task_charges_admitted ON task_charges (admitted_at);
        INSERT INTO task_charges (task_id, team_id, api_key_id, model, resolution, status,
                                  metadata, amount_micros, admitted_at, settled_at)
        SELECT id, team_id, api_key_id, model, coalesce(request ->> 'resolution', ''), status,
               coalesce(request -> 'metadata', '{}'), coalesce(charged_micros, 0), created_at,
               coalesce(completed_at, updated_at)
          FROM tasks WHERE dispatch_state = 'done';

        CREATE TABLE admin_audit (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            action text NOT NULL,
            target_type text NOT NULL,
            target_id text,
            before jsonb,
            after jsonb,
            request_id text,
            source text,
            actor text NOT NULL
        );
        CREATE INDEX admin_audit_target ON admin_audit (target_id, id DESC);
        CREATE INDEX admin_audit_action ON admin_audit (action, id DESC);

        CREATE FUNCTION qgw_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'QB403';
        END
        $$;
        CREATE TRIGGER admin_audit_append_only BEFORE UPDATE OR DELETE ON admin_audit
            FOR EACH ROW EXECUTE FUNCTION qgw_append_only();
        CREATE TRIGGER admin_audit_no_truncate BEFORE TRUNCATE ON admin_audit
            FOR EACH STATEMENT EXECUTE FUNCTION qgw_append_only();

        ALTER TABLE api_keys ADD COLUMN expires_at timestamptz,
                             ADD COLUMN last_used_at timestamptz;

        -- A submission claims its Idempotency-Key before it inserts the task (so a
        -- concurrent retry waits on the key and replays), checked at commit.
        ALTER TABLE idempotency_keys ALTER CONSTRAINT idempotency_keys_task_id_fkey
            DEFERRABLE INITIALLY DEFERRED;
        """
    )


def downgrade() -> None:
    run_script(
        """
        ALTER TABLE idempotency_keys ALTER CONSTRAINT idempotency_keys_task_id_fkey
            NOT DEFERRABLE;
        ALTER TABLE api_keys DROP COLUMN expires_at, DROP COLUMN last_used_at;
        DROP TABLE admin_audit;
        DROP FUNCTION qgw_append_only;
        DROP TABLE task_charges;
        """
    )
