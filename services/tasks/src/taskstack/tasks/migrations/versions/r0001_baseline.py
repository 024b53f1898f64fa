"""Baseline of schema "tasks" (the migration runner creates the schema itself).

Revision ID: tasks0001
"""

revision = "tasks0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
