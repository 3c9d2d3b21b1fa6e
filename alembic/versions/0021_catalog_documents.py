"""The catalog documents operators put in force at run time (PUT /admin/catalog).

Revision ID: 0021_catalog_documents
Revises: 0020_catalog
Create Date: 2026-12-06

Every document put in force is kept, newest last: the newest row is the catalog in force,
and with no row the process's own (the shipped one, or QGW_CATALOG_FILE) is. Rows are
never updated, so the trail of what priced the gateway when stays whole; a task names the
digest it was priced under (0020), which finds its document here. The document is stored
as its canonical JSON text (sorted keys, no whitespace), not jsonb: the bytes hash to
`digest` exactly, whatever jsonb would normalise. Each API and worker process reads the
newest digest every QGW_CATALOG_REFRESH_SECONDS (an index-only look-up of one row).
"""

from service.platform.db import run_script

revision = "0021_catalog_documents"
down_revision = "0020_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        CREATE TABLE catalog_documents (
            id bigserial PRIMARY KEY,
            digest text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
            document text NOT NULL,
            label text,
            actor text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX catalog_documents_digest ON catalog_documents (digest);
        """
    )


def downgrade() -> None:
    run_script("DROP TABLE catalog_documents;")
