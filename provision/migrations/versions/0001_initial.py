"""Initial schema: certificate authorities, certificates, CRLs, audit trail.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "certificate_authorities",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("key_ref", sa.String(255), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", _TS, nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(42), primary_key=True),
        sa.Column("issuer_id", sa.String(64), sa.ForeignKey("certificate_authorities.id"), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("not_before", _TS, nullable=False),
        sa.Column("not_after", _TS, nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("renewed_from", sa.String(42), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_certificates_issuer_status", "certificates", ["issuer_id", "status"])
    op.create_table(
        "crls",
        sa.Column("issuer_id", sa.String(64), sa.ForeignKey("certificate_authorities.id"), primary_key=True),
        sa.Column("crl_number", sa.Integer(), nullable=False),
        sa.Column("crl_der", sa.LargeBinary(), nullable=False),
        sa.Column("this_update", _TS, nullable=False),
        sa.Column("next_update", _TS, nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("crls")
    op.drop_index("ix_certificates_issuer_status", table_name="certificates")
    op.drop_table("certificates")
    op.drop_table("certificate_authorities")
