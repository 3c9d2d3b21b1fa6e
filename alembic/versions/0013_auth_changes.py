"""Tell every API process when a key or a team changes, so that each can keep the callers
it has authenticated in memory (teams/key_cache.py) and forget them at once.

A statement-level trigger NOTIFYs `qgw_auth_changes` (no payload: a process forgets every
caller; such changes are rare). last_used_at, written once a minute per key, is left out.

Revision ID: 0013_auth_changes
Revises: 0012_pending_by_team
Create Date: 2026-12-02
"""

from service.platform.db import run_script

revision = "0013_auth_changes"
down_revision = "0012_pending_by_team"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE FUNCTION qgw_notify_auth_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('qgw_auth_changes', '');
            RETURN NULL;
        END $$;

        CREATE TRIGGER api_keys_auth_change
            AFTER UPDATE OF team_id, key_hash, revoked_at, expires_at, rpm_limit OR DELETE
            ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION qgw_notify_auth_change();
        CREATE TRIGGER teams_auth_change
            AFTER UPDATE OR DELETE ON teams
            FOR EACH STATEMENT EXECUTE FUNCTION qgw_notify_auth_change();
        """
    )


def downgrade() -> None:
    run_script(
        """
        DROP TRIGGER api_keys_auth_change ON api_keys;
        DROP TRIGGER teams_auth_change ON teams;
        DROP FUNCTION qgw_notify_auth_change();
        """
    )
