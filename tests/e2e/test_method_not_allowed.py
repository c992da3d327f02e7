"""405 with exactly the path's methods (api-contracts §1.4), over the real processes: every path
of the gateway's merged `/openapi.json`, each undeclared method, at the gateway (which answers
from the merged document, before auth) and at the owning service directly; a CORS preflight is
still answered before any method check; unknown paths stay 404."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from paysys.core.allow import allow_value
from tests.support.admin import admin_and_token
from tests.support.servers import Stack

DECLARABLE = ("GET", "POST", "PUT", "PATCH", "DELETE")
UNDECLARED_TRIES = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def _concrete(template: str) -> str:
    while "{" in template:
        start, end = template.index("{"), template.index("}")
        template = template[:start] + str(uuid.uuid4()) + template[end + 1 :]
    return template


def _wait_for_gateway_table(gateway: str) -> None:
    """The gateway loads the merged document in the background after it starts: until then it
    forwards every method (an anonymous DELETE on a Bearer path is 401 at the edge)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if httpx.delete(f"{gateway}/api/payments", timeout=10).status_code == 405:
            return
        time.sleep(0.2)
    raise AssertionError("the gateway never answered 405 from the merged document")


def _assert_405(response: httpx.Response, allow: str, label: str) -> None:
    assert response.status_code == 405, (label, response.status_code, response.text)
    assert response.headers["allow"] == allow, (label, response.headers["allow"])
    if response.request.method != "HEAD":
        error = response.json()["error"]
        assert error["code"] == "METHOD_NOT_ALLOWED", label
        assert error["requestId"] == response.headers["x-request-id"], label


def test_every_path_answers_405_with_exactly_its_methods(stack: Stack) -> None:
    gateway = stack.url("gateway")
    _wait_for_gateway_table(gateway)
    document: dict[str, Any] = httpx.get(f"{gateway}/openapi.json", timeout=20).json()
    checked = 0
    with httpx.Client(timeout=20) as client:
        for template, item in document["paths"].items():
            declared = {method.upper() for method in item if method.upper() in DECLARABLE}
            allow = allow_value(declared)
            path = _concrete(template)
            service = stack.url(template.split("/")[2])
            for method in UNDECLARED_TRIES:
                if method in declared:
                    continue
                for base in (gateway, service):
                    r = client.request(method, base + path)
                    _assert_405(r, allow, f"{method} {template} at {base}")
                    checked += 1
    assert checked > 150
    assert len(document["paths"]) >= 25


def test_head_preflight_and_unknown_paths(stack: Stack) -> None:
    import asyncio

    gateway = stack.url("gateway")
    _wait_for_gateway_table(gateway)
    _, admin = asyncio.run(admin_and_token())
    with httpx.Client(base_url=gateway, timeout=20) as client:
        # HEAD is not declared on the API paths: refused like any other method
        _assert_405(client.head("/api/payments"), "GET, POST", "HEAD /api/payments")
        _assert_405(client.head("/api/payments/recipients"), "GET", "HEAD recipients")
        # a static path beside a template is its own path
        _assert_405(client.delete("/api/payments/recipients"), "GET", "DELETE recipients")
        # a trailing slash is the same path
        _assert_405(client.delete("/api/admin/config/"), "GET, PUT", "DELETE /config/")
        # the gateway's own routes list their methods in the same order
        _assert_405(client.post("/health"), "GET, HEAD", "POST /health")
        # a CORS preflight is answered before auth, limits and method checks
        for method in ("DELETE", "PUT"):
            r = client.options(
                "/api/payments",
                headers={
                    "origin": "http://localhost:4200",
                    "access-control-request-method": method,
                },
            )
            assert r.status_code == 204 and "allow" not in r.headers, r.text
            assert r.headers["access-control-allow-origin"] == "http://localhost:4200"
        # a plain OPTIONS (no preflight headers) is a method like any other
        _assert_405(client.options("/api/payments"), "GET, POST", "OPTIONS /api/payments")
        # with an allowed origin the 405 carries the CORS headers too
        r = client.request("TRACE", "/api/profile", headers={"origin": "http://localhost:4200"})
        _assert_405(r, "GET, PUT, PATCH", "TRACE /api/profile")
        assert r.headers["access-control-allow-origin"] == "http://localhost:4200"
        # declared methods still pass through (to the service's own answer)
        assert client.get("/api/payments", headers=admin).status_code == 200
        # unknown paths stay 404, whatever the method
        for method in ("GET", "DELETE"):
            for path in ("/api/payments/a/b/c", "/api/admin/nothing", "/api/profile/x/y"):
                r = client.request(method, path, headers=admin)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "NOT_FOUND"
        r = client.delete("/api/auth/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert client.delete("/api/nothing/x").status_code == 404
