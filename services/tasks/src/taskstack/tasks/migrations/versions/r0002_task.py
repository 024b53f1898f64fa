"""Tables task and idempotency_key, with the indexes the list queries need.

Every list query filters on owner_id first, so each btree index leads with it
and then carries one sort key and the id tie-breaker; a scan in either
direction serves ascending and descending order. due_at sorts nulls last in
both directions, through coalesce() with +/-infinity: one index per direction.
Tag and text filters get GIN indexes that also lead with owner_id (btree_gin
gives uuid a GIN operator class), so even they read only the caller's
entries; a GIN index on tags or titles alone would make PostgreSQL walk every
user's matches for a common tag or word. Those GIN indexes need the btree_gin
and pg_trgm extensions, created when this role may; without them the tag and
text filters are still confined to the caller's rows by the btree indexes.

Revision ID: tasks0002
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

revision = "tasks0002"
down_revision = "tasks0001"
branch_labels = None
depends_on = None

logger = logging.getLogger("alembic.runtime.migration")

SORT_INDEXES = {
    "ix_task_owner_id_created_at": "owner_id, created_at, id",
    "ix_task_owner_id_updated_at": "owner_id, updated_at, id",
    "ix_task_owner_id_due_at_asc": "owner_id, coalesce(due_at, 'infinity'::timestamptz), id",
    "ix_task_owner_id_due_at_desc": "owner_id, coalesce(due_at, '-infinity'::timestamptz), id",
    "ix_task_owner_id_priority": "owner_id, priority, id",
    "ix_task_owner_id_title": 'owner_id, (title COLLATE "C"), id',
}
TRIGRAM_INDEXES = {
    "ix_task_owner_id_title_trgm": "title",
    "ix_task_owner_id_description_trgm": "description",
}


def upgrade() -> None:
    op.create_table(
        "task",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("completed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="1"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "tags",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.PrimaryKeyConstraint("id", name="pk_task"),
        # The API validates all of these; the database holds the line for any other writer.
        sa.CheckConstraint("priority BETWEEN 0 AND 2", name="ck_task_priority"),
        sa.CheckConstraint("completed = (completed_at IS NOT NULL)", name="ck_task_completed_at"),
        sa.CheckConstraint("char_length(title) BETWEEN 1 AND 200", name="ck_task_title_length"),
        sa.CheckConstraint("char_length(description) <= 10000", name="ck_task_description_length"),
        sa.CheckConstraint("cardinality(tags) <= 20", name="ck_task_tag_count"),
        schema="tasks",
    )
    for name, columns in SORT_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON tasks.task ({columns})")
    if _ensure_extension("btree_gin") is not None:
        op.execute("CREATE INDEX ix_task_owner_id_tags ON tasks.task USING gin (owner_id, tags)")
        trigram_schema = _ensure_extension("pg_trgm")
        if trigram_schema is not None:
            for name, column in TRIGRAM_INDEXES.items():
                trigrams = f'{column} "{trigram_schema}".gin_trgm_ops'
                op.execute(f"CREATE INDEX {name} ON tasks.task USING gin (owner_id, {trigrams})")

    op.create_table(
        "idempotency_key",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("response_status", sa.SmallInteger(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("response_headers", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "key", name="pk_idempotency_key"),
        schema="tasks",
    )
    # The bounded purge of expired keys walks this index.
    op.create_index(
        "ix_idempotency_key_expires_at", "idempotency_key", ["expires_at"], schema="tasks"
    )


def _ensure_extension(name: str) -> str | None:
    """The schema extension ``name`` lives in, creating it if this role may; else None.

    btree_gin and pg_trgm are trusted extensions (PostgreSQL 13+): the database
    owner, or any role with CREATE on the database, can create them, on Neon too.
    """
    connection = op.get_bind()
    try:
        with connection.begin_nested():
            connection.execute(sa.text(f"CREATE EXTENSION IF NOT EXISTS {name}"))
    except DBAPIError as exc:
        logger.warning("extension %s is not available; its indexes are skipped: %s", name, exc.orig)
        return None
    schema = connection.execute(
        sa.text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = :name"),
        {"name": name},
    ).scalar_one()
    return str(schema).strip('"')


def downgrade() -> None:
    op.drop_table("idempotency_key", schema="tasks")
    op.drop_table("task", schema="tasks")
