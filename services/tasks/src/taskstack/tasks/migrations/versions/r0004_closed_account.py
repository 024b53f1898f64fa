"""Table closed_account: accounts auth deleted or disabled, the deny list of token subjects.

Revision ID: tasks0004
"""

import sqlalchemy as sa
from alembic import op

revision = "tasks0004"
down_revision = "tasks0003"
branch_labels = None
depends_on = None

SCHEMA = "tasks"


def upgrade() -> None:
    op.create_table(
        "closed_account",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_closed_account"),
        schema=SCHEMA,
    )
    op.create_index("ix_closed_account_changed_at", "closed_account", ["changed_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("closed_account", schema=SCHEMA)
