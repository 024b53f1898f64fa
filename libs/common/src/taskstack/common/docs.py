"""Swagger UI, served by each service under its public prefix with its own assets.

FastAPI's built-in page loads Swagger UI from a public CDN, which an
air-gapped cluster or a locked-down network cannot reach. The fastapi-offline
package ships the Swagger UI 5 bundle; each service serves it itself (FastAPI's
"self-hosting JavaScript and CSS for docs"), so the page works wherever the
API does and the browser talks to one origin only.
"""

import base64
import hashlib
import os
import re
from collections.abc import Awaitable, Callable
from importlib import metadata

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

ASSETS_PACKAGE = ("fastapi_offline", "static")
# The assets' URL carries the package version, so an upgrade changes the URL
# and a browser or proxy may keep each version for good.
ASSETS_CACHE_CONTROL = "public, max-age=31536000, immutable"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """A policy that lets ``html`` run its own inline scripts and nothing from elsewhere.

    Swagger UI renders text from the schema and answers it fetches; should any
    of that ever slip through as markup, no script outside the page's own runs.
    Its components set inline styles and CSS data: images, which stay allowed.
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        "default-src 'self'; "
        f"script-src 'self' {hashes}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _page(rendered: HTMLResponse) -> Callable[[], Awaitable[HTMLResponse]]:
    html = bytes(rendered.body).decode()
    headers = {"Content-Security-Policy": content_security_policy(html)}

    # A fresh response each time: the middleware adds headers to the one it sends.
    async def endpoint() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    return endpoint


class _VersionedAssets(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = ASSETS_CACHE_CONTROL
        return response


def docs_paths(public_prefix: str) -> tuple[str, str, str]:
    """The docs page, its OAuth2 redirect page and its assets folder under ``public_prefix``."""
    docs = f"{public_prefix}/docs"
    return docs, f"{docs}/oauth2-redirect", f"{docs}/static/{metadata.version('fastapi-offline')}"


def install_docs(app: FastAPI, public_prefix: str) -> None:
    """Serve Swagger UI for ``app.openapi_url`` at ``<public_prefix>/docs``."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("The docs page needs the app's OpenAPI schema URL.")
    docs_url, redirect_url, assets_url = docs_paths(public_prefix)
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{assets_url}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets_url}/swagger-ui.css",
        swagger_favicon_url=f"{assets_url}/favicon.png",
        oauth2_redirect_url=redirect_url,
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    redirect_page = get_swagger_ui_oauth2_redirect_html()
    assets = _VersionedAssets(packages=[ASSETS_PACKAGE])

    # Routes rather than a mount, so that the request metrics name them like any other.
    async def asset(path: str, request: Request) -> Response:
        return await assets.get_response(path, request.scope)

    for path, endpoint in (
        (docs_url, _page(page)),
        (redirect_url, _page(redirect_page)),
        (f"{assets_url}/{{path:path}}", asset),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
