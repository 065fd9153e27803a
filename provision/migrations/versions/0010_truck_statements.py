"""Truck statements (mission manifests, telemetry snapshots) and each truck's chain head.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "truck_statements",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("truck_id", sa.String(64), sa.ForeignKey("trucks.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_chain_pem", sa.Text(), nullable=False),
        sa.Column("certificate_serial", sa.String(42), nullable=False),
        sa.Column("certificate_status", sa.String(16), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False, unique=True),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("submitted_at", _TS, nullable=False),
        sa.UniqueConstraint("truck_id", "sequence", name="uq_truck_statements_truck_sequence"),
    )
    op.create_table(
        "truck_statement_chains",
        sa.Column("truck_id", sa.String(64), sa.ForeignKey("trucks.id"), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("head_sha256", sa.String(64), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("chain_broken_at", _TS, nullable=True),
        sa.Column("forks", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "truck_statement_forks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("truck_id", sa.String(64), sa.ForeignKey("trucks.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("refused_sha256", sa.String(64), nullable=False),
        sa.Column("held_sha256", sa.String(64), nullable=False),
        sa.Column("previous", sa.String(64), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("detected_at", _TS, nullable=False),
    )
    op.create_index("ix_truck_statement_forks_truck", "truck_statement_forks", ["truck_id"])


def downgrade() -> None:
    op.drop_index("ix_truck_statement_forks_truck", "truck_statement_forks")
    op.drop_table("truck_statement_forks")
    op.drop_table("truck_statement_chains")
    op.drop_table("truck_statements")
