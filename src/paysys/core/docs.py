"""Swagger UI for `/docs` of the gateway and of every service, its assets pinned.

The page loads `swagger-ui-dist` from the jsDelivr CDN at one exact version, each file with its
Subresource Integrity hash, so the browser runs exactly the files hashed here or nothing (a CDN
or a version tag changed under us cannot inject script). To move to another version:
`npm pack swagger-ui-dist@<version>`, then for each file
`openssl dgst -sha384 -binary package/<file> | base64` (jsDelivr serves the npm files as is).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse

SWAGGER_UI_VERSION = "5.36.0"
SWAGGER_UI_BASE = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
SWAGGER_UI_SRI = {
    "swagger-ui-bundle.js": "sha384-"
    "fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
    "swagger-ui.css": "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
}


def swagger_ui_html(title: str, openapi_url: str = "/openapi.json") -> str:
    css, js = "swagger-ui.css", "swagger-ui-bundle.js"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="stylesheet" href="{SWAGGER_UI_BASE}/{css}" integrity="{SWAGGER_UI_SRI[css]}"
 crossorigin="anonymous" referrerpolicy="no-referrer">
</head><body><div id="swagger-ui"></div>
<script src="{SWAGGER_UI_BASE}/{js}" integrity="{SWAGGER_UI_SRI[js]}"
 crossorigin="anonymous" referrerpolicy="no-referrer"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{openapi_url}", dom_id: "#swagger-ui",
  persistAuthorization: true, deepLinking: true}});
</script></body></html>
"""


def docs_route(title: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
    """A Starlette endpoint serving the page for `title`."""
    page = swagger_ui_html(title)

    async def docs(_: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return docs
