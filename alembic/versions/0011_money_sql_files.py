"""The money functions come from their source files in service/budgets/sql/.

Revision ID: 0011_money_sql_files
Revises: 0010_archive
Create Date: 2026-12-02

Admission gets its own name, `qgw_reserve_and_insert_task`, and no longer writes the
budget alert webhook itself: the caller writes it in the same transaction, with the USD
amounts formatted as everywhere else ("7.50", not "7.5"). `qgw_admit_task` stays as it
was for API pods of the previous version during a rollout; a later migration drops it.

To change a money function: edit its file, then add a migration that installs it again
with the file's new digest (`install_sql_file`). tests/test_sql_files.py fails until then.
"""

from service.platform.db import install_sql_file, run_script

revision = "0011_money_sql_files"
down_revision = "0010_archive"
branch_labels = None
depends_on = None

FILES = {
    "budgets/sql/periods.sql": "e4ab4ec18c1e31bed3a14d8dfd9e61544d147d6e2460d672287c0b652d3f924f",
    "budgets/sql/share_out.sql": "7f14853d063461ff29f0c5bd2756ed9bf31e2d8acbcef6d371a4fb6051abaa81",
    "budgets/sql/reserve_and_insert_task.sql": (
        "ecef52922038bb323c2cc04a96a67fa640e4c4f27887f25a3fe9575c078f5942"
    ),
    "budgets/sql/settle_task.sql": (
        "7617170392b7829d5e00820d0518e4755c44322f277bd0f7d395c1003cb90f36"
    ),
}


def upgrade() -> None:
    for name, digest in FILES.items():
        install_sql_file(name, sha256=digest)


def downgrade() -> None:
    # periods, share_out and settle_task are the same text as 0003, 0005 and 0007 left.
    run_script(
        """
        DROP FUNCTION qgw_reserve_and_insert_task(text, uuid, uuid, text, text, jsonb, bigint,
            smallint, text, text[], timestamptz, text, int[], boolean);
        """
    )
