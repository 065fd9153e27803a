"""Attestation: nonces, results, per-truck attestation state and quarantine, token signing keys,
release-signing keys and golden releases.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _truck_fk(primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "truck_id", sa.String(64), sa.ForeignKey("trucks.id"), nullable=False, primary_key=primary_key
    )


def upgrade() -> None:
    op.create_table(
        "truck_attestations",
        _truck_fk(primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("release_id", sa.String(64), nullable=True),
        sa.Column("attested_at", _TS, nullable=False),
        sa.Column("attested_until", _TS, nullable=True),
        sa.Column("reset_count", sa.Integer(), nullable=False),
        sa.Column("restart_count", sa.Integer(), nullable=False),
        sa.Column("clock", sa.BigInteger(), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
        sa.Column("quarantine_reason", sa.String(512), nullable=True),
        sa.Column("quarantined_at", _TS, nullable=True),
    )
    op.create_table(
        "attestation_nonces",
        sa.Column("id", sa.String(64), primary_key=True),
        _truck_fk(),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("tender_id", sa.String(128), nullable=True),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("extra_data", sa.LargeBinary(), nullable=False),
        sa.Column("bank", sa.String(16), nullable=False),
        sa.Column("pcrs", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("consumed_at", _TS, nullable=True),
    )
    op.create_index("ix_attestation_nonces_truck", "attestation_nonces", ["truck_id"])
    op.create_table(
        "attestation_results",
        sa.Column("id", sa.String(64), primary_key=True),
        _truck_fk(),
        sa.Column(
            "nonce_id", sa.String(64), sa.ForeignKey("attestation_nonces.id"), nullable=False, unique=True
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trust_vector", sa.Text(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("release_id", sa.String(64), nullable=True),
        sa.Column("rebooted", sa.Boolean(), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
    )
    op.create_index("ix_attestation_results_truck", "attestation_results", ["truck_id"])
    op.create_table(
        "token_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("key_ref", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("retired_at", _TS, nullable=True),
    )
    op.create_table(
        "release_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
    )
    op.create_table(
        "releases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), sa.ForeignKey("release_keys.id"), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("bank", sa.String(16), nullable=False),
        sa.Column("pcrs", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.String(512), nullable=True),
        sa.UniqueConstraint("model", "version", name="uq_releases_model_version"),
    )


def downgrade() -> None:
    for table in (
        "releases",
        "release_keys",
        "token_keys",
        "attestation_results",
        "attestation_nonces",
        "truck_attestations",
    ):
        op.drop_table(table)
