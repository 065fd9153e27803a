"""Single-use JWT ids (truck request JWTs, client assertions): a row per spent jti until it expires.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spent_jtis",
        sa.Column("purpose", sa.String(32), primary_key=True),
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_spent_jtis_expires_at", "spent_jtis", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_spent_jtis_expires_at", "spent_jtis")
    op.drop_table("spent_jtis")
