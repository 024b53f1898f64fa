"""Accounts, refresh-token families and tokens, throttle counters.

Revision ID: auth0001
"""

import sqlalchemy as sa
from alembic import op

revision = "auth0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "auth"


def _timestamp(name: str, *, nullable: bool = False, default: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default else None,
    )


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        _timestamp("created_at", default=True),
        _timestamp("updated_at", default=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_user_email_lower", "user", [sa.text("lower(email)")], unique=True, schema=SCHEMA
    )
    op.create_table(
        "refresh_token_family",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("auth.user.id", ondelete="CASCADE"), nullable=False
        ),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        _timestamp("revoked_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_refresh_token_family_user_id", "refresh_token_family", ["user_id"], schema=SCHEMA
    )
    op.create_table(
        "refresh_token",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "family_id",
            sa.Uuid(),
            sa.ForeignKey("auth.refresh_token_family.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False, unique=True),
        _timestamp("created_at"),
        _timestamp("idle_expires_at"),
        _timestamp("spent_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_index("ix_refresh_token_family_id", "refresh_token", ["family_id"], schema=SCHEMA)
    op.create_table(
        "throttle_counter",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        _timestamp("window_started_at"),
        _timestamp("blocked_until", nullable=True),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("throttle_counter", "refresh_token", "refresh_token_family", "user"):
        op.drop_table(table, schema=SCHEMA)
