"""Insurance policies covering fleets, with their validity (Evidence.insurer_policies comes from here).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "fleet_insurance_policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fleet_id", sa.String(64), sa.ForeignKey("fleets.id"), nullable=False),
        sa.Column("policy_number", sa.String(64), nullable=False),
        sa.Column("valid_from", _TS, nullable=False),
        sa.Column("valid_until", _TS, nullable=True),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.UniqueConstraint("fleet_id", "policy_number", "valid_from", name="uq_fleet_insurance_policies"),
    )
    op.create_index("ix_fleet_insurance_policies_fleet", "fleet_insurance_policies", ["fleet_id"])


def downgrade() -> None:
    op.drop_index("ix_fleet_insurance_policies_fleet", "fleet_insurance_policies")
    op.drop_table("fleet_insurance_policies")
