"""Tracking faults: answers that cannot be recorded, watched tasks (filled in by the hardening work).

Revision ID: 0019_tracking_faults
Revises: 0018_team_destinations
Create Date: 2026-12-06
"""

from service.db import run_script

revision = "0019_tracking_faults"
down_revision = "0018_team_destinations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("SELECT 1;")


def downgrade() -> None:
    pass
