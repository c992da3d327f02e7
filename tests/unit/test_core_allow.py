"""`Allow` on 405 (api-contracts §1.4): the method table the gateway builds from the merged
OpenAPI document, with the services' rule (first matching template names the path)."""

from __future__ import annotations

from paysys.core.allow import MethodTable, allow_value, template_pattern
from paysys.gateway.openapi import method_table

PATHS = {
    "/api/payments": ["post", "get"],
    "/api/payments/recipients": ["get"],
    "/api/payments/{payment_id}": ["get"],
    "/api/payments/{payment_id}/status": ["patch"],
    "/api/admin/users/{user_id}": ["get", "put", "patch", "delete"],
    "/api/admin/config/{key}": ["get", "put"],
}


def test_allow_value_is_ordered_upper_case_and_unique() -> None:
    assert allow_value(["post", "GET", "get"]) == "GET, POST"
    assert allow_value(["delete", "patch", "put", "options", "head"]) == (
        "PUT, PATCH, DELETE, HEAD, OPTIONS"
    )
    assert allow_value(["QUERY", "get"]) == "GET, QUERY"  # unknown ones last, sorted
    assert allow_value([]) == ""


def test_template_pattern_matches_one_segment_per_parameter() -> None:
    pattern = template_pattern("/api/payments/{payment_id}/status")
    assert pattern.fullmatch("/api/payments/abc/status")
    assert not pattern.fullmatch("/api/payments/a/b/status")
    assert not pattern.fullmatch("/api/payments//status")
    assert template_pattern("/a.b/{x}").fullmatch("/a.b/1")
    assert not template_pattern("/a.b/{x}").fullmatch("/axb/1")  # literal parts escaped


def test_refusal_names_exactly_the_paths_methods() -> None:
    table = MethodTable(PATHS)
    assert len(table) == len(PATHS)
    assert table.refusal("/api/payments", "GET") is None
    assert table.refusal("/api/payments", "POST") is None
    for method in ("DELETE", "OPTIONS", "HEAD", "PUT", "TRACE", "QUERY"):
        assert table.refusal("/api/payments", method) == "GET, POST"
    # a static path that a template also matches: the static one is the path
    assert table.refusal("/api/payments/recipients", "GET") is None
    assert table.refusal("/api/payments/recipients", "DELETE") == "GET"
    # concrete paths of templates (any segment, ids not checked here: the service 404s)
    assert table.refusal("/api/payments/123", "GET") is None
    assert table.refusal("/api/payments/123", "POST") == "GET"
    assert table.refusal("/api/payments/123/status", "PATCH") is None
    assert table.refusal("/api/payments/123/status", "PUT") == "PATCH"
    assert table.refusal("/api/admin/users/x", "POST") == "GET, PUT, PATCH, DELETE"
    assert table.refusal("/api/admin/config/payment.minAmount", "DELETE") == "GET, PUT"
    # unknown paths are not refused (forwarded: the service answers 404)
    for path in ("/api/payments/1/2/3", "/api/nothing", "/api/admin/users", "/api/admin/config"):
        assert table.refusal(path, "DELETE") is None


def test_a_method_of_any_matching_template_is_served() -> None:
    # `/things/mine` is GET only, but `/things/{id}` also matches it and has DELETE: a router
    # picks the full match, so DELETE is served (not 405); POST is refused with the first
    # matching template's methods, in declaration order.
    table = MethodTable({"/things/mine": ["get"], "/things/{id}": ["get", "delete"]})
    assert table.refusal("/things/mine", "DELETE") is None
    assert table.refusal("/things/mine", "POST") == "GET"
    assert table.refusal("/things/7", "POST") == "GET, DELETE"
    first = MethodTable({"/things/{id}": ["get", "delete"], "/things/mine": ["get", "put"]})
    assert first.refusal("/things/mine", "POST") == "GET, DELETE"
    assert first.refusal("/things/mine", "PUT") is None


def test_method_table_of_a_document_ignores_non_operations() -> None:
    document = {
        "paths": {
            "/api/x": {"get": {}, "parameters": [], "summary": "s", "post": {}},
            "/api/broken": "not an item",
        }
    }
    table = method_table(document)
    assert table.refusal("/api/x", "PUT") == "GET, POST"
    assert table.refusal("/api/broken", "GET") is None
    assert method_table({}).refusal("/api/x", "GET") is None
