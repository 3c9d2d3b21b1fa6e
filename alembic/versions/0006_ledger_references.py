"""The budget ledger's references are checked by `verify-ledger`, not by foreign keys.

Revision ID: 0006_ledger_references
Revises: 0005_budget_shards
Create Date: 2026-11-24

Every admission under budgets writes one ledger entry per budget, and each foreign key
check runs a query that locks the referenced row (KEY SHARE, logged to the WAL): the
budget shard the same statement has just updated, and the task it has just inserted.
Measured through the gateway on the 2-core dev VM (wrk, 16 connections, bench/submit.py's
body under three budgets; median over 7 paired rounds of the p50 ratio to the same load
without budgets): 1.30x with both keys, 1.16x without.

The keys guarded nothing the code could break: entries are written only by the SQL
functions (`qgw_admit_task`, `qgw_settle_task`), for the shard and task they touch in the
same statement, and nothing deletes shards or tasks. `verify-ledger` now also reports
entries whose shard or task does not exist, so the promise stays proven, not assumed.
"""

from service.platform.db import run_script

revision = "0006_ledger_references"
down_revision = "0005_budget_shards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE budget_ledger
            DROP CONSTRAINT budget_ledger_budget_id_starts_at_shard_fkey,
            DROP CONSTRAINT budget_ledger_task_id_fkey;
        """
    )


def downgrade() -> None:
    run_script(
        """
        ALTER TABLE budget_ledger
            ADD CONSTRAINT budget_ledger_budget_id_starts_at_shard_fkey
                FOREIGN KEY (budget_id, starts_at, shard)
                REFERENCES budget_shards (budget_id, starts_at, shard) ON DELETE CASCADE,
            ADD CONSTRAINT budget_ledger_task_id_fkey
                FOREIGN KEY (task_id) REFERENCES tasks (id);
        """
    )
