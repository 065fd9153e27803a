"""OAuth2 clients (client credentials).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("organisation", sa.String(128), nullable=False),
        sa.Column("fleets", sa.Text(), nullable=False),
        sa.Column("insurer_policies", sa.Text(), nullable=False),
        sa.Column("global_admin", sa.Boolean(), nullable=False),
        sa.Column("scopes", sa.String(1024), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("disabled_at", _TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("oauth_clients")
