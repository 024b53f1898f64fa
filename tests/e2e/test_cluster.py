"""The end-to-end suite's own PostgreSQL has what the migrations use."""

from tests.e2e.cluster import PrivateCluster


def test_the_migrations_get_their_extensions_and_the_indexes_built_on_them(
    cluster: PrivateCluster,
) -> None:
    database = cluster.migrated_database()
    extensions = cluster.query("SELECT extname FROM pg_extension", database=database)
    assert {"btree_gin", "pg_trgm"} <= {name for (name,) in extensions}
    indexes = cluster.query(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'tasks' AND indexdef LIKE %s",
        "%USING gin%",
        database=database,
    )
    assert {name for (name,) in indexes} >= {
        "ix_task_owner_id_tags",
        "ix_task_owner_id_title_trgm",
        "ix_task_owner_id_description_trgm",
    }
