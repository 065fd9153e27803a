"""A truck's profile as its fleet's operator sets it: autonomy mode and hazmat certification (Cedar's
Truck.autonomy_mode and Truck.hazmat_certified read them).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Trucks registered before this revision have no profile yet: mode unknown, not hazmat certified
    # (a hazmat tender stays refused until the operator says otherwise).
    op.add_column(
        "trucks", sa.Column("autonomy_mode", sa.String(16), nullable=False, server_default="unknown")
    )
    op.add_column(
        "trucks", sa.Column("hazmat_certified", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("trucks", "hazmat_certified")
    op.drop_column("trucks", "autonomy_mode")
