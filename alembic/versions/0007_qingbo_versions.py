"""Both generations of Qingbo's API: settlement at what Qingbo charged, the answer version
of each team, and what Qingbo reported about each task's billing.

Revision ID: 0007_qingbo_versions
Revises: 0006_ledger_references
Create Date: 2026-12-01

Settlement: the 2026-09 upstream reports each task's `cost` (the quota it charged). A
completed task now settles its reservation into spend as before (`settle`, the reserved
amount) and then moves spend by the difference to what Qingbo charged: `overcharge` or
`undercharge` entries (positive amounts; the ledger stays append-only and balanced:
spent = settle + overcharge - undercharge, reserved = reserve - settle - release).

An overcharge adds spend that no fast admission's shard allowance was shared out for, so
the window's allowances are taken back (every shard locked in shard order, the order the
exclusive admission uses) and the next admission there decides on exact totals and shares
out again: after an overcharge no admission fits on money that is no longer there.
"""

from service.platform.db import install_sql_file, run_script

revision = "0007_qingbo_versions"
down_revision = "0006_ledger_references"
branch_labels = None
depends_on = None

# Pods of the previous version call the two-argument form during a rollout.
SETTLE_TASK_AT_ESTIMATE = """
CREATE OR REPLACE FUNCTION qgw_settle_task(p_task text, p_completed boolean)
RETURNS void LANGUAGE sql AS $$ SELECT qgw_settle_task(p_task, p_completed, NULL::bigint) $$;
"""


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE teams ADD COLUMN api_version text NOT NULL DEFAULT '2026-04'
            CHECK (api_version IN ('2026-04', '2026-09'));

        -- cost_micros stays the estimate (what was reserved); charged_micros is what the
        -- task cost in the end (NULL until terminal). The quota fields are Qingbo's own.
        ALTER TABLE tasks
            ADD COLUMN charged_micros bigint CHECK (charged_micros >= 0),
            ADD COLUMN upstream_api_version text,
            ADD COLUMN first_sent_at timestamptz,
            ADD COLUMN upstream_pre_consumed_quota bigint,
            ADD COLUMN upstream_cost_quota bigint,
            ADD COLUMN upstream_billing_status text;
        UPDATE tasks SET charged_micros = CASE WHEN status = 'completed' THEN cost_micros
                                               ELSE 0 END
         WHERE dispatch_state = 'done';

        ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_kind_check;
        ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_kind_check
            CHECK (kind IN ('reserve', 'settle', 'release', 'overcharge', 'undercharge'));

        -- Lists filtered by the app's metadata (GET /v1/tasks?metadata[project]=atlas).
        CREATE INDEX tasks_metadata ON tasks USING gin ((request -> 'metadata') jsonb_path_ops);
        DROP FUNCTION qgw_settle_task(text, boolean);
        """
    )
    # The three-argument qgw_settle_task is the text of service/budgets/sql/settle_task.sql.
    install_sql_file(
        "budgets/sql/settle_task.sql",
        sha256="7617170392b7829d5e00820d0518e4755c44322f277bd0f7d395c1003cb90f36",
    )
    run_script(SETTLE_TASK_AT_ESTIMATE)


def downgrade() -> None:
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    path = Path(__file__).with_name("0005_budget_shards.py")
    spec = spec_from_file_location("qgw_revision_0005", path)
    assert spec is not None and spec.loader is not None
    before = module_from_spec(spec)
    spec.loader.exec_module(before)
    # Drift entries fold into settle amounts so the 0005 accounting still balances.
    run_script(
        """
        DROP FUNCTION qgw_settle_task(text, boolean);
        DROP FUNCTION qgw_settle_task(text, boolean, bigint);
        DELETE FROM budget_ledger WHERE kind IN ('overcharge', 'undercharge');
        UPDATE budget_shards s SET spent_micros = l.settled
          FROM (SELECT budget_id, starts_at, shard,
                       sum(amount_micros) FILTER (WHERE kind = 'settle') AS settled
                  FROM budget_ledger GROUP BY budget_id, starts_at, shard) l
         WHERE l.budget_id = s.budget_id AND l.starts_at = s.starts_at AND l.shard = s.shard
           AND l.settled IS NOT NULL;
        ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_kind_check;
        ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_kind_check
            CHECK (kind IN ('reserve', 'settle', 'release'));
        DROP INDEX tasks_metadata;
        ALTER TABLE tasks
            DROP COLUMN charged_micros, DROP COLUMN upstream_api_version,
            DROP COLUMN first_sent_at, DROP COLUMN upstream_pre_consumed_quota,
            DROP COLUMN upstream_cost_quota, DROP COLUMN upstream_billing_status;
        ALTER TABLE teams DROP COLUMN api_version;
        """
    )
    run_script(before.SETTLE_TASK)
