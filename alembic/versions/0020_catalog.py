"""The catalog (issue 30): each task records the catalog digest it was priced under.

Revision ID: 0020_catalog
Revises: 0019_tracking_faults
Create Date: 2026-12-06

The admission statements (budgets/sql/reserve_and_insert_task*.sql) store the task's
request as it was checked; the catalog's digest is written into that request at admission
(`request.catalog_digest`, service/catalog/intake.py) in the same statement, so the column
is generated from it: no admission function changes, and a later price change never
rewrites what an admitted task was priced under. Adding a stored generated column rewrites
`tasks` once (a brief ACCESS EXCLUSIVE lock, proportional to the table). Tasks admitted
before this migration have NULL: they were priced by the per-second table. No
index: nothing on the hot path reads it, and every admission would maintain one.

The operator side (the catalog documents table, GET/PUT /admin/catalog) adds its own
migration.
"""

from service.platform.db import run_script

revision = "0020_catalog"
down_revision = "0019_tracking_faults"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE tasks ADD COLUMN catalog_digest text
            GENERATED ALWAYS AS (request ->> 'catalog_digest') STORED;
        """
    )


def downgrade() -> None:
    run_script("ALTER TABLE tasks DROP COLUMN catalog_digest;")
