"""Item 11: a person with a browser uses each service's Swagger UI through the gateway.

Headless Chromium (Debian's, driven by Playwright) opens the docs pages on the
gateway's origin, signs in with the OAuth2 password flow behind the Authorize
button and runs "Try it out" on ``GET /v1/tasks``. Screenshots are kept as
test artifacts under ``ARTIFACTS_DIR`` (default ``<rootdir>/.reports``).
"""

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

from tests.e2e.harness import Stack
from tests.e2e.report import Reliability
from tests.support.auth import STRONG_PASSWORD, bearer, login, register
from tests.support.tools import require

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--no-sandbox",  # the suite runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
ARTIFACTS_ENV = "ARTIFACTS_DIR"


@dataclass
class Visit:
    """What one page did on the network and in its console."""

    page: Page
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def urls(self) -> list[str]:
        return [request.url for request in self.requests]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Debian's browser: Playwright's own browser download needs a host that
    # neither CI nor an air-gapped developer can reach.
    chromium = require("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def screenshots(pytestconfig: pytest.Config) -> Path:
    root = Path(os.environ.get(ARTIFACTS_ENV) or pytestconfig.rootpath / ".reports")
    directory = root / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def open_docs(browser: Browser, stack: Stack, service: str) -> Visit:
    """Open ``service``'s docs page through the gateway; return once its schema has rendered."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    visit = Visit(page)
    page.on("request", lambda request: visit.requests.append(request))
    page.on("pageerror", lambda error: visit.problems.append(f"page error: {error}"))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            visit.problems.append(f"console: {message.text}")

    page.on("console", console)
    schema_url = f"{stack.gateway}/v1/{service}/openapi.json"
    with page.expect_response(schema_url) as schema:
        page.goto(f"{stack.gateway}/v1/{service}/docs")
    assert schema.value.status == 200
    page.locator(".opblock").first.wait_for()
    return visit


def _shown(path: Path) -> str:
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def elsewhere(visit: Visit, stack: Stack) -> list[str]:
    """The URLs the page requested from anywhere but the gateway (a CDN, say)."""
    gateway = urlsplit(stack.gateway).netloc
    return [url for url in visit.urls() if urlsplit(url).netloc != gateway]


def test_swagger_ui_through_the_gateway(
    browser: Browser, stack: Stack, reliability: Reliability, screenshots: Path
) -> None:
    client = stack.client()
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    assert register(client, email).status_code == 202
    title = f"Seen in the browser {uuid.uuid4().hex[:6]}"
    created = client.post(
        "/v1/tasks",
        json={"title": title},
        headers=bearer(login(client, email).json()["access_token"]),
    )
    assert created.status_code == 201, created.text

    auth = open_docs(browser, stack, "auth")
    token_operation = auth.page.locator('.opblock-summary-path[data-path="/v1/auth/token"]')
    assert token_operation.count() == 1
    auth.page.screenshot(path=screenshots / "swagger-auth.png")

    tasks = open_docs(browser, stack, "tasks")
    page = tasks.page
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#oauth_username").fill(email)
    dialog.locator("#oauth_password").fill(STRONG_PASSWORD)
    with page.expect_response(f"{stack.gateway}/v1/auth/token") as token_answer:
        dialog.get_by_role("button", name="Apply given OAuth2 credentials").click()
    token = token_answer.value
    assert (token.request.method, token.status) == ("POST", 200)
    assert "grant_type=password" in (token.request.post_data or "")
    dialog.get_by_role("heading", name="Authorized").wait_for()
    access_token = token.json()["access_token"]
    page.screenshot(path=screenshots / "swagger-tasks-authorized.png")
    dialog.get_by_role("button", name="Close").click()

    operation = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/tasks"]')
    )
    operation.locator(".opblock-summary-control").click()
    operation.get_by_role("button", name="Try it out").click()
    listed_url = re.compile(rf"^{re.escape(stack.gateway)}/v1/tasks(\?.*)?$")
    with page.expect_response(listed_url) as list_answer:
        operation.get_by_role("button", name="Execute").click()
    listed = list_answer.value
    assert listed.status == 200
    assert listed.request.headers["authorization"] == f"Bearer {access_token}"
    live = operation.locator(".live-responses-table .response")
    assert live.locator(".response-col_status").inner_text().strip() == "200"
    assert title in live.locator(".response-col_description").inner_text()
    live.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "swagger-tasks.png")
    page.screenshot(path=screenshots / "swagger-tasks-full.png", full_page=True)

    for visit in (auth, tasks):
        assert elsewhere(visit, stack) == [], "every request stays on the gateway's origin"
        assert visit.problems == [], "no script error and no Content-Security-Policy violation"
    shown = screenshots / "swagger-tasks.png"
    reliability.record(
        11,
        "Swagger UI in a browser",
        "auth and tasks docs through nginx in headless Chromium: schemas from "
        "/v1/auth/openapi.json and /v1/tasks/openapi.json (200), "
        f"{len(tasks.requests) + len(auth.requests)} requests, all to the gateway; "
        "Authorize (password flow) → POST /v1/auth/token 200; "
        f"Try it out GET /v1/tasks → {listed.status}; screenshot {_shown(shown)}",
    )
