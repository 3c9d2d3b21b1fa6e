"""Charges beyond the bound become disputes; answers that cannot be recorded end the task.

Revision ID: 0017_disputes
Revises: 0016_spend_daily_by_day
Create Date: 2026-12-06

Budgets are charged at most the reservation times QGW_CHARGE_CAP_FACTOR (issue 31): what
Qingbo reported beyond that is a row of `charge_disputes`, open until an admin accepts it
(the excess becomes spend) or rejects it. The ledger gains the kind 'disputed': the excess,
recorded beside each budget of the task, counted as neither spent nor reserved.
`tasks.record_failures` counts the reads whose terminal answer Postgres refused to record,
so that after QGW_UPSTREAM_ANSWER_MAX_RECORD_TRIES the task fails instead of holding its
reservation and in-flight slot forever.
"""

from service.platform.db import install_sql_file, run_script

revision = "0017_disputes"
down_revision = "0016_spend_daily_by_day"
branch_labels = None
depends_on = None

FILES = {
    "budgets/sql/settle_task.sql": (
        "6599a7e54d4c483c830b008930581174aed0407ee2f2c6f10be3e5f8c64736ec"
    ),
}


def upgrade() -> None:
    run_script(
        """
        ALTER TABLE tasks ADD COLUMN record_failures smallint NOT NULL DEFAULT 0;

        ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_kind_check;
        ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_kind_check
            CHECK (kind IN ('reserve', 'settle', 'release', 'overcharge', 'undercharge',
                            'disputed'));

        CREATE TABLE charge_disputes (
            id bigserial PRIMARY KEY,
            task_id text NOT NULL UNIQUE REFERENCES tasks (id),
            team_id uuid NOT NULL REFERENCES teams (id),
            model text NOT NULL,
            -- All in micro-dollars: what the task reserved, what Qingbo reported, what the
            -- budgets were charged (the cap), and the difference in dispute.
            reserved_micros bigint NOT NULL CHECK (reserved_micros >= 0),
            reported_micros bigint NOT NULL CHECK (reported_micros >= 0),
            charged_micros bigint NOT NULL CHECK (charged_micros >= 0),
            excess_micros bigint NOT NULL CHECK (excess_micros > 0),
            status text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'accepted', 'rejected')),
            created_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz,
            CHECK (reported_micros = charged_micros + excess_micros),
            CHECK ((status = 'open') = (resolved_at IS NULL))
        );
        CREATE INDEX charge_disputes_status ON charge_disputes (status, id);
        """
    )
    for name, digest in FILES.items():
        install_sql_file(name, sha256=digest)


def downgrade() -> None:
    # Accepted excess stays as the overcharges it became; the disputed records go.
    run_script(
        """
        DROP FUNCTION qgw_charge_dispute(text, bigint);
        DROP FUNCTION qgw_dispute_task(text, bigint);
        DROP TABLE charge_disputes;
        DELETE FROM budget_ledger WHERE kind = 'disputed';
        ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_kind_check;
        ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_kind_check
            CHECK (kind IN ('reserve', 'settle', 'release', 'overcharge', 'undercharge'));
        ALTER TABLE tasks DROP COLUMN record_failures;
        """
    )
