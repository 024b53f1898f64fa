"""Each service's migrations build exactly the tables its models describe.

Indexes that exist only in the migrations (the tasks service's expression and
GIN indexes, which its own tests check by name and by plan) are not compared.
"""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import URL

from taskstack.auth.models import AuthTable
from taskstack.tasks.models import TasksTable

METADATA = {"auth": AuthTable.metadata, "tasks": TasksTable.metadata}


@pytest.mark.parametrize("schema", sorted(METADATA))
def test_migrated_schema_matches_the_models(migrated_database: URL, schema: str) -> None:
    metadata: MetaData = METADATA[schema]
    engine = create_engine(migrated_database)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, _: type_ != "schema" or name == schema,
                "compare_type": True,
                "version_table_schema": schema,
                "include_object": _declared_or_not_an_index,
            },
        )
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def _declared_or_not_an_index(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (type_ == "index" and reflected and compare_to is None)
