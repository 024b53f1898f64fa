"""MkDocs hook: the Helm chart's values reference, generated from values.yaml at every build.

A key's description is its ``# --`` comment (helm-docs' convention: the
comment lines right above the key, the first one starting with ``# --``); its
default is the parsed value. The page ``deployment/values.md`` holds the marker
below where the table goes, so the reference cannot drift from the chart.

helm-docs itself is a Go program, and YAML libraries do not tie comments to
keys in a usable way, so the comments are read line by line here: the chart's
values.yaml is block-style YAML whose keys each start a line.
"""

import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

VALUES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "taskstack" / "values.yaml"
MARKER = "<!-- values reference: generated from deploy/helm/taskstack/values.yaml -->"

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(?:\s|$)")

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Value:
    path: KeyPath
    description: str
    default: Any
    # A mapping whose keys are described one by one: the row only introduces them.
    group: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _described_keys(text: str) -> tuple[list[KeyPath], dict[KeyPath, str]]:
    """Every key in file order, and the description of those that have one."""
    keys: list[KeyPath] = []
    descriptions: dict[KeyPath, str] = {}
    enclosing: list[tuple[int, str]] = []  # (indentation, key) of the keys above this one
    pending: list[str] | None = None  # the description being read, line by line
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = stripped[1:].strip()
            if comment == "--" or comment.startswith("-- "):
                pending = [comment[2:].strip()]
            elif pending is not None:
                pending.append(comment)
            continue
        match = _KEY_LINE.match(line)
        if match is None:  # a blank line, or a line inside a value
            pending = None
            continue
        indent = len(match["indent"])
        while enclosing and enclosing[-1][0] >= indent:
            enclosing.pop()
        path = (*(key for _, key in enclosing), match["key"])
        enclosing.append((indent, match["key"]))
        keys.append(path)
        if pending is not None:
            descriptions[path] = " ".join(part for part in pending if part)
        pending = None
    return keys, descriptions


def _default(values: Any, path: KeyPath) -> Any:
    for key in path:
        values = values[key]
    return values


def _has_keys_below(path: KeyPath, others: Iterable[KeyPath]) -> bool:
    return any(other[: len(path)] == path and other != path for other in others)


def _nearest_described(path: KeyPath, descriptions: dict[KeyPath, str]) -> KeyPath | None:
    for end in range(len(path), 0, -1):
        if path[:end] in descriptions:
            return path[:end]
    return None


def values_reference(text: str) -> list[Value]:
    """The described keys of a values file, in file order."""
    keys, descriptions = _described_keys(text)
    values = yaml.safe_load(text)
    return [
        Value(
            path=path,
            description=descriptions[path],
            default=_default(values, path),
            group=_has_keys_below(path, descriptions),
        )
        for path in keys
        if path in descriptions
    ]


def undescribed_keys(text: str) -> list[str]:
    """Keys no description covers.

    A key is covered by its own description, or by that of a mapping it is part
    of when that mapping is described as a whole (none of its keys has one).
    """
    keys, descriptions = _described_keys(text)
    groups = {path for path in descriptions if _has_keys_below(path, descriptions)}
    missing = []
    for path in keys:
        if _has_keys_below(path, keys):
            continue  # a mapping written out key by key: its keys are checked
        nearest = _nearest_described(path, descriptions)
        if nearest is None or (nearest != path and nearest in groups):
            missing.append(".".join(path))
    return missing


def _cell(text: str) -> str:
    """Text for a table cell: no pipe ends it, no <name> is taken for HTML (code spans aside)."""
    parts = text.replace("|", "\\|").split("`")
    parts[::2] = [html.escape(part, quote=False) for part in parts[::2]]
    return "`".join(parts)


def markdown_table(reference: list[Value]) -> str:
    rows = ["| key | default | description |", "|---|---|---|"]
    for value in reference:
        default = "" if value.group else f"`{json.dumps(value.default)}`"
        rows.append(f"| `{value.key}` | {default} | {_cell(value.description)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if MARKER not in markdown:
        return markdown
    text = VALUES_FILE.read_text()
    if missing := undescribed_keys(text):
        raise PluginError(f"{VALUES_FILE.name}: no `# --` description for {', '.join(missing)}")
    return markdown.replace(MARKER, markdown_table(values_reference(text)))
