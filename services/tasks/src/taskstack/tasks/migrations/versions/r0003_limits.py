"""Tables task_count (the per-user quota) and rate_limit_window (the per-user rate limit).

task_count holds each owner's number of tasks; creates and deletes change it
in the statement that writes the task, so checking the quota never counts
an owner's rows. It is filled here from the tasks that exist. Tasks that
replicas of the previous release create while a rolling upgrade is under
way are not counted (docs/operations.md has the statement that recounts).

rate_limit_window holds, per fixed window and owner, the requests every
replica has reported; its primary key leads with the window, so the purge of
past windows walks it.

Revision ID: tasks0003
"""

import sqlalchemy as sa
from alembic import op

revision = "tasks0003"
down_revision = "tasks0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_count",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", name="pk_task_count"),
        schema="tasks",
    )
    op.execute(
        "INSERT INTO tasks.task_count (owner_id, tasks) "
        "SELECT owner_id, count(*) FROM tasks.task GROUP BY owner_id"
    )
    op.create_table(
        "rate_limit_window",
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("window_start", "owner_id", name="pk_rate_limit_window"),
        schema="tasks",
    )


def downgrade() -> None:
    op.drop_table("rate_limit_window", schema="tasks")
    op.drop_table("task_count", schema="tasks")
