"""Destinations an operator opened for a team's webhooks (filled in by the hardening work).

Revision ID: 0018_team_destinations
Revises: 0017_disputes
Create Date: 2026-12-06
"""

from service.db import run_script

revision = "0018_team_destinations"
down_revision = "0017_disputes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("SELECT 1;")


def downgrade() -> None:
    pass
