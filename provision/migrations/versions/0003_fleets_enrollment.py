"""Fleets, trucks, enrollment tokens and challenges, the enrollment history, hardware swaps.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _truck_fk() -> sa.Column[str]:
    return sa.Column("truck_id", sa.String(64), sa.ForeignKey("trucks.id"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "fleets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "trucks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("fleet_id", sa.String(64), sa.ForeignKey("fleets.id"), nullable=False),
        sa.Column("vin", sa.String(17), nullable=False, unique=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expected_ek_sha256", sa.String(64), nullable=True),
        sa.Column("ek_sha256", sa.String(64), nullable=True, unique=True),
        sa.Column("ak_public", sa.LargeBinary(), nullable=True),
        sa.Column("ak_name", sa.String(98), nullable=True),
        sa.Column("identity_name", sa.String(98), nullable=True),
        sa.Column("certificate_serial", sa.String(42), nullable=True),
        sa.Column("enrolled_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_trucks_fleet", "trucks", ["fleet_id"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        _truck_fk(),
        sa.Column("issued_by", sa.String(128), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
    )
    op.create_table(
        "enrollment_challenges",
        sa.Column("id", sa.String(64), primary_key=True),
        _truck_fk(),
        sa.Column(
            "token_jti", sa.String(64), sa.ForeignKey("enrollment_tokens.jti"), nullable=False, unique=True
        ),
        sa.Column("ek_sha256", sa.String(64), nullable=False),
        sa.Column("ek_certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("ak_public", sa.LargeBinary(), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("certify_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
    )
    op.create_table(
        "truck_enrollments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _truck_fk(),
        sa.Column(
            "challenge_id",
            sa.String(64),
            sa.ForeignKey("enrollment_challenges.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("ek_sha256", sa.String(64), nullable=False),
        sa.Column("ek_certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("ak_public", sa.LargeBinary(), nullable=False),
        sa.Column("ak_name", sa.String(98), nullable=False),
        sa.Column("identity_public", sa.LargeBinary(), nullable=False),
        sa.Column("identity_name", sa.String(98), nullable=False),
        sa.Column("certificate_serial", sa.String(42), nullable=False),
        sa.Column("hardware_swap_id", sa.Integer(), nullable=True),
        sa.Column("enrolled_at", _TS, nullable=False),
    )
    op.create_index("ix_truck_enrollments_truck", "truck_enrollments", ["truck_id"])
    op.create_table(
        "hardware_swaps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _truck_fk(),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("approved_by", sa.String(128), nullable=False),
        sa.Column("approved_at", _TS, nullable=False),
        sa.Column("consumed_at", _TS, nullable=True),
    )
    op.create_index("ix_hardware_swaps_truck", "hardware_swaps", ["truck_id"])


def downgrade() -> None:
    for table in ("hardware_swaps", "truck_enrollments", "enrollment_challenges", "enrollment_tokens"):
        op.drop_table(table)
    op.drop_index("ix_trucks_fleet", table_name="trucks")
    op.drop_table("trucks")
    op.drop_table("fleets")
