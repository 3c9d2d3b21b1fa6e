"""Notify listeners (sync waiters) when a task's status or progress changes.

Revision ID: 0002_task_notify
Revises: 0001_core
Create Date: 2026-11-24
"""

from service.platform.db import run_script

revision = "0002_task_notify"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOTIFY is transactional: listeners hear of a change only once it is committed.
    run_script(
        """
        CREATE FUNCTION qgw_notify_task_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('qgw_task_events', NEW.id);
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER tasks_notify_change
            AFTER UPDATE OF status, progress ON tasks
            FOR EACH ROW
            WHEN (OLD.status IS DISTINCT FROM NEW.status
                  OR OLD.progress IS DISTINCT FROM NEW.progress)
            EXECUTE FUNCTION qgw_notify_task_change();
        """
    )


def downgrade() -> None:
    run_script("DROP TRIGGER tasks_notify_change ON tasks; DROP FUNCTION qgw_notify_task_change();")
