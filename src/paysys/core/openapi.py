"""Error responses in every service's OpenAPI document, as the apps really answer them.

FastAPI documents request validation as `422 HTTPValidationError`, but `core.http` answers it
with 400 `VALIDATION_ERROR` in the envelope of api-contracts §1.1. This rewrite replaces that
phantom 422 with the real 400 and gives every operation a `default` response in the error
envelope (each error status of §1.4 — 401, 403, 404, 409, 413, 423, 503, … — comes in that
same shape), so clients and contract tests see the truth. A 422 a route documents itself
(e.g. IDEMPOTENCY_KEY_REUSED) is kept, and an error status a route documents by description
only gets the envelope as its schema. The envelope's schema is generated from the one model,
`core.schemas.ErrorEnvelope`, which routes also name in their `responses`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from paysys.core.schemas import ErrorEnvelope

ERROR_SCHEMA_NAME = ErrorEnvelope.__name__
_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
# Every operation needs a bearer access token unless it says otherwise with `security: []`
# (`PUBLIC`, in its `openapi_extra`): register, login, refresh, the PSP webhook.
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
PUBLIC: dict[str, Any] = {"security": []}
_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def error_schemas() -> dict[str, Any]:
    """The envelope's components, generated from the one model, `core.schemas.ErrorEnvelope`."""
    schema = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), ERROR_SCHEMA_NAME: schema}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(_REF)}}}


def _schema_of(response: dict[str, Any]) -> Any:
    return (response.get("content") or {}).get("application/json", {}).get("schema")


def rewrite_error_responses(doc: dict[str, Any]) -> dict[str, Any]:
    """Apply the rewrite to an OpenAPI document (in place; returned for convenience)."""
    for path_item in (doc.get("paths") or {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS or not isinstance(operation, dict):
                continue
            operation.setdefault("security", BEARER)
            responses = operation.setdefault("responses", {})
            phantom = responses.get("422")
            if phantom is not None and _FASTAPI_422 in str(phantom):
                del responses["422"]
                responses.setdefault(
                    "400", _error_response("VALIDATION_ERROR or INVALID_JSON (envelope)")
                )
            responses.setdefault(
                "default", _error_response("Any error, in the envelope of api-contracts §1.1")
            )
            for status, response in responses.items():
                # An error a route documents by description only is still an envelope.
                if status[:1] in "45" and not _schema_of(response):
                    response["content"] = {"application/json": {"schema": dict(_REF)}}
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = dict(
        BEARER_SCHEME
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    # Replaces what FastAPI generated for routes naming the model, so every service's
    # document carries the identical components (the gateway's merge then keeps one).
    schemas.update(error_schemas())
    if _FASTAPI_422 not in str(doc.get("paths")):
        schemas.pop("HTTPValidationError", None)
        if "#/components/schemas/ValidationError" not in str(doc):
            schemas.pop("ValidationError", None)
    return doc


def install_error_docs(app: FastAPI) -> None:
    """Make `app.openapi()` (and `/openapi.json`) return the rewritten document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
