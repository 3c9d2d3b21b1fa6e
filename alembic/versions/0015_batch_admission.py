"""Admission of several tasks in one statement (budgets/sql/reserve_and_insert_tasks.sql),
for the API's admission batches (tasks/admission_batch.py).

Revision ID: 0015_batch_admission
Revises: 0014_spend_daily
Create Date: 2026-12-04
"""

from service.platform.db import install_sql_file, run_script

revision = "0015_batch_admission"
down_revision = "0014_spend_daily"
branch_labels = None
depends_on = None

FILES = {
    "budgets/sql/reserve_and_insert_tasks.sql": (
        "b6b31f61d035033958ad4b275b18a81d790d8b53b56d0f1b6808534913d12c02"
    ),
}


def upgrade() -> None:
    for name, digest in FILES.items():
        install_sql_file(name, sha256=digest)


def downgrade() -> None:
    run_script(
        """
        DROP FUNCTION qgw_reserve_and_insert_tasks(text[], uuid[], uuid[], text[], text[],
            jsonb[], bigint[], smallint[], text[], text[], timestamptz[], text);
        """
    )
