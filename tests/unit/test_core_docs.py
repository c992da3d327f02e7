"""Swagger UI assets are pinned to one version with Subresource Integrity hashes, and the docs
CSP allows that version's path only."""

from __future__ import annotations

import re

from paysys.core.docs import SWAGGER_UI_BASE, SWAGGER_UI_SRI, SWAGGER_UI_VERSION, swagger_ui_html
from paysys.core.middleware import DOCS_CSP


def test_every_asset_is_pinned_with_its_integrity_hash() -> None:
    page = swagger_ui_html("paysys <auth>")
    assert re.fullmatch(r"\d+\.\d+\.\d+", SWAGGER_UI_VERSION)  # exact, never a range like @5
    assets = re.findall(r'(?:src|href)="(https://[^"]+)" integrity="([^"]+)"', page)
    assert sorted(assets) == sorted(
        (f"{SWAGGER_UI_BASE}/{name}", digest) for name, digest in SWAGGER_UI_SRI.items()
    )
    assert all(re.fullmatch(r"sha384-[A-Za-z0-9+/]{64}", d) for d in SWAGGER_UI_SRI.values())
    assert page.count('crossorigin="anonymous"') == 2
    assert "<title>paysys &lt;auth&gt;</title>" in page
    assert page.count("https://") == 2  # nothing else is loaded from elsewhere


def test_the_docs_csp_names_the_pinned_path_only() -> None:
    csp = DOCS_CSP.decode()
    assert f"script-src 'self' 'unsafe-inline' {SWAGGER_UI_BASE}/;" in csp
    assert "cdn.jsdelivr.net;" not in csp and "cdn.jsdelivr.net " not in csp
