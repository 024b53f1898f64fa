"""Baseline of schema "auth" (the migration runner creates the schema itself).

Revision ID: auth0001
"""

revision = "auth0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
