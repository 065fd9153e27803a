"""OAuth client authentication methods and public keys for private_key_jwt (RFC 7523 §2.2), and the
end of a retired token key's publication (access-token key rotation with overlap).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Clients registered before this revision authenticated with a secret (Basic by default).
    op.add_column(
        "oauth_clients",
        sa.Column(
            "token_endpoint_auth_method",
            sa.String(32),
            nullable=False,
            server_default="client_secret_basic",
        ),
    )
    op.create_table(
        "oauth_client_keys",
        sa.Column("client_id", sa.String(64), sa.ForeignKey("oauth_clients.id"), primary_key=True),
        sa.Column("kid", sa.String(128), primary_key=True),
        sa.Column("algorithms", sa.String(64), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    # A retired key verifies (and is published) until this instant: every token it signed has expired.
    op.add_column("token_keys", sa.Column("published_until", _TS, nullable=True))


def downgrade() -> None:
    op.drop_column("token_keys", "published_until")
    op.drop_table("oauth_client_keys")
    op.drop_column("oauth_clients", "token_endpoint_auth_method")
