"""The documentation site builds in strict mode, and says what the code does."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from docs.hooks.helm_values import VALUES_FILE, values_reference
from docs.hooks.openapi_documents import SERVICES, document_path

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
RULES = ROOT / "deploy" / "observability" / "rules" / "taskstack.yaml"

# Relative links of the README: [text](docs/page.md#anchor).
_RELATIVE_LINK = re.compile(r"\]\((?!https?:)([^)#]+)(?:#[^)]*)?\)")
# Mentions of an operation on an API page: `GET /v1/tasks/{task_id}`, `DELETE /v1/tasks?...`.
_OPERATION = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)")


def build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    paths = ["--config-file", str(config), "--site-dir", str(site_dir)]
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", *paths],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", site_dir)
    assert result.returncode == 0, result.stderr
    return site_dir


def test_every_page_is_built(site: Path) -> None:
    pages = [p.relative_to(DOCS) for p in DOCS.rglob("*.md")]
    assert len(pages) > 20
    for page in pages:
        directory = page.parent if page.stem == "index" else page.with_suffix("")
        assert (site / directory / "index.html").is_file(), f"{page} was not built"


def test_broken_links_and_unknown_anchors_fail_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("hooks"))
    with (docs / "index.md").open("a") as index:
        index.write(
            "\n[a](security.md#no-such-anchor) [b](no-such-page.md) [c](/no-such-absolute.md)\n"
        )
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.pop("hooks")  # the generated files aside, every link is checked as usual
    config["docs_dir"] = str(docs)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    for broken in ("#no-such-anchor", "no-such-page.md", "/no-such-absolute.md"):
        assert broken in result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_openapi_document_is_published_and_its_operations_documented(
    site: Path, service: str
) -> None:
    document = json.loads((site / document_path(service)).read_text())
    assert document["info"]["title"] == f"taskstack {service}"
    published = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    page = (DOCS / "api" / f"{service}.md").read_text()
    documented = set(_OPERATION.findall(page))
    assert published - documented == set(), f"docs/api/{service}.md does not document these"
    assert documented - published == set(), f"docs/api/{service}.md documents what is not served"
    assert f"]({Path(document_path(service)).name})" in page  # the page links its document


def test_every_alert_names_its_runbook_section(site: Path) -> None:
    operations = (site / "operations" / "index.html").read_text()
    alerts = [
        rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) >= 10
    for alert in alerts:
        anchor = alert["alert"].lower()
        page, _, linked = alert["annotations"]["runbook_url"].partition("#")
        assert page.endswith("/docs/operations.md") and linked == anchor
        assert f'id="{anchor}"' in operations, f"no runbook section for {alert['alert']}"


def test_the_values_reference_lists_every_described_key(site: Path) -> None:
    page = (site / "deployment" / "values" / "index.html").read_text()
    reference = values_reference(VALUES_FILE.read_text())
    assert len(reference) > 100
    for value in reference:
        assert f"<code>{value.key}</code>" in page, value.key


def test_the_readme_links_to_pages_that_exist() -> None:
    links = _RELATIVE_LINK.findall((ROOT / "README.md").read_text())
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), f"README.md links to {link}, which does not exist"
