"""The values reference generator: descriptions from `# --` comments, defaults from the YAML."""

from docs.hooks.helm_values import (
    VALUES_FILE,
    markdown_table,
    undescribed_keys,
    values_reference,
)

VALUES = """\
# The file's header: not a description.

# -- The name.
name: ""
# -- Labels, described as a whole.
labels:
  app: web
# A plain comment: not a description.
image:
  # -- Registry of the
  # image, on two lines (see --help).
  registry: ghcr.io
  tag: ""
# -- The database.
database:
  # -- Its <host>.
  host: db
  port: 5432
# -- Resources | limits.
resources: {requests: {cpu: 1}}
"""


def test_descriptions_and_defaults_come_from_comments_and_values() -> None:
    reference = {value.key: value for value in values_reference(VALUES)}
    assert list(reference) == [
        *("name", "labels", "image.registry", "database", "database.host", "resources")
    ]
    assert reference["image.registry"].description == (
        "Registry of the image, on two lines (see --help)."
    )
    assert reference["labels"].default == {"app": "web"}
    assert reference["resources"].default == {"requests": {"cpu": 1}}
    assert reference["database"].group and not reference["labels"].group


def test_a_key_nothing_describes_is_reported() -> None:
    # image.tag has no comment; database.port sits in a mapping whose keys are
    # described one by one; labels.app is covered by its described mapping.
    assert undescribed_keys(VALUES) == ["image.tag", "database.port"]


def test_the_table_shows_defaults_as_json_and_keeps_cells_intact() -> None:
    table = markdown_table(values_reference(VALUES))
    assert '| `name` | `""` | The name. |' in table
    assert "| `database` |  | The database. |" in table
    assert '| `database.host` | `"db"` | Its &lt;host&gt;. |' in table
    assert '| `resources` | `{"requests": {"cpu": 1}}` | Resources \\| limits. |' in table


def test_every_key_of_the_chart_is_described() -> None:
    assert undescribed_keys(VALUES_FILE.read_text()) == []
