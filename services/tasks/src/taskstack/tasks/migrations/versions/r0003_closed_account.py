"""Table closed_account: accounts auth deleted or disabled, the deny list of token subjects.

Revision ID: tasks0003
"""

import sqlalchemy as sa
from alembic import op

revision = "tasks0003"
down_revision = "tasks0002"
branch_labels = None
depends_on = None

SCHEMA = "tasks"


def upgrade() -> None:
    op.create_table(
        "closed_account",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_closed_account_changed_at", "closed_account", ["changed_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("closed_account", schema=SCHEMA)
