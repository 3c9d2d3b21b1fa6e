"""Charges beyond the bound become disputes (filled in by the hardening work).

Revision ID: 0017_disputes
Revises: 0016_spend_daily_by_day
Create Date: 2026-12-06
"""

from service.db import run_script

revision = "0017_disputes"
down_revision = "0016_spend_daily_by_day"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("SELECT 1;")


def downgrade() -> None:
    pass
