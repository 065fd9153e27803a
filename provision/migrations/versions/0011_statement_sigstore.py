"""Sigstore material of truck statements submitted with an evidence certificate.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "truck_statement_sigstore",
        sa.Column(
            "statement_sha256", sa.String(64), sa.ForeignKey("truck_statements.sha256"), primary_key=True
        ),
        sa.Column("evidence_serial", sa.String(42), sa.ForeignKey("certificates.serial"), nullable=False),
        sa.Column("hashedrekord", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False, unique=True),
        sa.Column("timestamp", sa.LargeBinary(), nullable=False),
        sa.Column("stamped_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("truck_statement_sigstore")
