"""The archive of paid videos: one row per result video of a completed task, written in
the transaction that finishes it (like the webhook outbox), so no crash or Redis flush
loses it. Workers copy each into the object store until the Qingbo link expires.

Revision ID: 0010_archive
Revises: 0009_fault_bounds
Create Date: 2026-12-01
"""

from service.platform.db import run_script

revision = "0010_archive"
down_revision = "0009_fault_bounds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE TABLE video_archives (
            task_id text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            idx integer NOT NULL CHECK (idx >= 0),
            team_id uuid NOT NULL,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'stored', 'failed', 'expired')),
            source_url text NOT NULL,
            expires_at timestamptz,
            object_key text NOT NULL,
            bytes bigint CHECK (bytes >= 0),
            sha256 text,
            content_type text,
            stored_at timestamptz,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            leased_until timestamptz,
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (task_id, idx)
        );
        CREATE INDEX video_archives_due ON video_archives (next_attempt_at)
            WHERE state = 'pending';
        """
    )


def downgrade() -> None:
    run_script("DROP TABLE video_archives;")
