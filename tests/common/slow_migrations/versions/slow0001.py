"""Takes a second and records that it ran, so a test can count how often it did."""

from alembic import op

revision = "slow0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE lockdemo.applied (at timestamptz NOT NULL DEFAULT now())")
    op.execute("SELECT pg_sleep(1)")
    op.execute("INSERT INTO lockdemo.applied DEFAULT VALUES")


def downgrade() -> None:
    op.execute("DROP TABLE lockdemo.applied")
