"""Account lifecycle: verified and disabled accounts, one-time tokens, the mail outbox and
the account-event outbox.

Revision ID: auth0002
"""

import sqlalchemy as sa
from alembic import op

revision = "auth0002"
down_revision = "auth0001"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("user", _timestamp("email_verified_at", nullable=True), schema=SCHEMA)
    op.add_column("user", _timestamp("disabled_at", nullable=True), schema=SCHEMA)
    op.create_table(
        "one_time_token",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("auth.user.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False, unique=True),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        _timestamp("used_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_index("ix_one_time_token_user_id", "one_time_token", ["user_id"], schema=SCHEMA)
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("text_body", sa.String(), nullable=False),
        sa.Column("html_body", sa.String(), nullable=False),
        _timestamp("created_at"),
        _timestamp("next_attempt_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_mail_outbox_next_attempt_at", "mail_outbox", ["next_attempt_at"], schema=SCHEMA
    )
    op.create_table(
        "account_event",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        _timestamp("created_at"),
        _timestamp("next_attempt_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_account_event_next_attempt_at", "account_event", ["next_attempt_at"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in ("account_event", "mail_outbox", "one_time_token"):
        op.drop_table(table, schema=SCHEMA)
    op.drop_column("user", "disabled_at", schema=SCHEMA)
    op.drop_column("user", "email_verified_at", schema=SCHEMA)
