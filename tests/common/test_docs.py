"""Swagger UI under the public prefix, with assets the service serves itself."""

import base64
import hashlib
import re
import time
from html.parser import HTMLParser

import httpx
import pytest

from taskstack.common.docs import ASSETS_CACHE_CONTROL, content_security_policy, docs_paths
from tests.common.test_metrics import requests_counted

DOCS, REDIRECT, ASSETS = docs_paths("/v1/demo")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


class _References(HTMLParser):
    """Every URL a page makes the browser load: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def _referenced(page: str) -> list[str]:
    parser = _References()
    parser.feed(page)
    return parser.urls


def _sha256(script: str) -> str:
    return base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def test_the_page_loads_only_same_origin_assets_under_the_prefix(demo: httpx.Client) -> None:
    response = demo.get(DOCS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    urls = _referenced(page)
    assert len(urls) == 3  # script, stylesheet, icon
    assert all(url.startswith(f"{ASSETS}/") for url in urls)
    assert "://" not in page and "//cdn" not in page
    assert "url: '/v1/demo/openapi.json'" in page
    assert "window.location.origin + '/v1/demo/docs/oauth2-redirect'" in page
    for url in urls:
        asset = demo.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(CONTENT_TYPES[url[url.rindex(".") :]])
        assert asset.headers["cache-control"] == ASSETS_CACHE_CONTROL
        assert asset.headers["x-content-type-options"] == "nosniff"
    bundle = demo.get(next(url for url in urls if url.endswith(".js"))).text
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle), "Swagger UI 5"


def test_assets_revalidate_and_unknown_ones_are_problems(demo: httpx.Client) -> None:
    first = demo.get(f"{ASSETS}/swagger-ui.css")
    again = demo.get(f"{ASSETS}/swagger-ui.css", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["cache-control"] == ASSETS_CACHE_CONTROL
    for missing in (f"{ASSETS}/nothing.js", f"{ASSETS}/../../../../etc/passwd", f"{ASSETS}/"):
        response = demo.get(missing)
        assert response.status_code == 404, missing
        assert response.headers["content-type"] == "application/problem+json"


def test_the_page_may_run_its_own_inline_script_and_nothing_else(demo: httpx.Client) -> None:
    response = demo.get(DOCS)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert len(inline) == 1 and "SwaggerUIBundle(" in inline[0]
    assert policy["script-src"] == f"'self' 'sha256-{_sha256(inline[0])}'"
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    # The page is HTML the service renders; it is not kept like the versioned assets.
    assert response.headers["cache-control"] == "no-store"


def test_content_security_policy_hashes_every_inline_script() -> None:
    page = '<script src="/a.js"></script><script>one()</script><p>x</p><script>\ntwo()\n</script>'
    script_src = next(
        d for d in content_security_policy(page).split("; ") if d.startswith("script-src")
    )
    assert script_src.split() == [
        "script-src",
        "'self'",
        f"'sha256-{_sha256('one()')}'",
        f"'sha256-{_sha256(chr(10) + 'two()' + chr(10))}'",
    ]


def test_the_oauth2_redirect_page_lives_under_the_prefix(demo: httpx.Client) -> None:
    response = demo.get(REDIRECT)
    assert response.status_code == 200
    assert "oauth2" in response.text
    assert "'sha256-" in response.headers["content-security-policy"]
    assert demo.get("/docs/oauth2-redirect").status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/v1/demo/redoc"])
def test_no_docs_outside_the_prefix(demo: httpx.Client, path: str) -> None:
    assert demo.get(path).status_code == 404


def test_asset_requests_are_counted_under_one_route(demo: httpx.Client) -> None:
    route = f"{ASSETS}/{{path:path}}"
    before = requests_counted(demo, route=route, status="200", service="demo")
    demo.get(f"{ASSETS}/swagger-ui.css")
    demo.get(f"{ASSETS}/favicon.png")
    # The middleware counts a request once its answer has gone out: wait for the last one.
    deadline = time.monotonic() + 5
    while (
        counted := requests_counted(demo, route=route, status="200", service="demo")
    ) < before + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert counted - before == 2
