"""core.openapi: FastAPI's phantom 422 becomes the real 400; every operation documents errors."""

from __future__ import annotations

from fastapi import APIRouter, Header
from pydantic import BaseModel

from paysys.core.config import Settings
from paysys.core.http import create_service_app
from paysys.core.openapi import ERROR_SCHEMA_NAME, rewrite_error_responses


class Body(BaseModel):
    x: int


router = APIRouter(prefix="/api/t")


@router.post("", responses={422: {"description": "IDEMPOTENCY_KEY_REUSED"}})
async def create(body: Body, idempotency_key: str | None = Header(default=None)) -> dict:  # type: ignore[type-arg]
    return {}


@router.get("/{item_id}")
async def read(item_id: str) -> dict:  # type: ignore[type-arg]
    return {}


def test_service_documents_real_error_statuses() -> None:
    app = create_service_app("t", [router], settings=Settings(background_workers=False))
    doc = app.openapi()
    assert app.openapi() is doc  # cached
    read_op = doc["paths"]["/api/t/{item_id}"]["get"]["responses"]
    assert "422" not in read_op
    assert read_op["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        ERROR_SCHEMA_NAME
    )
    assert "default" in read_op
    create_op = doc["paths"]["/api/t"]["post"]["responses"]
    assert create_op["422"]["description"] == "IDEMPOTENCY_KEY_REUSED"  # a route's own 422 stays
    # ...and, documented by description only, it is given the envelope as its schema
    assert create_op["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        ERROR_SCHEMA_NAME
    )
    assert "default" in create_op
    schemas = doc["components"]["schemas"]
    assert ERROR_SCHEMA_NAME in schemas
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


def test_rewrite_handles_documents_without_paths() -> None:
    doc = rewrite_error_responses({"openapi": "3.1.0", "info": {}})
    assert ERROR_SCHEMA_NAME in doc["components"]["schemas"]


# The JSON-schema keywords that state a rule; each parameter's documented schema must carry the
# model's own (the document says exactly what QueryModel.parse enforces).
RULE_KEYWORDS = ("type", "enum", "pattern", "minimum", "maximum", "maxLength", "default")


def test_query_models_are_the_documented_parameters() -> None:
    """Each list-like route documents exactly its query model: the same names, required-ness
    and, per parameter, the rule keywords of the model's JSON schema."""
    from paysys.admin.app import create_app as admin_app
    from paysys.payments.app import create_app as payments_app
    from paysys.payments.schemas import PaymentListQuery, RecipientsQuery, ReportQuery

    payments_doc, admin_doc = payments_app().openapi(), admin_app().openapi()
    routes = [
        (payments_doc, "/api/payments", PaymentListQuery),
        (admin_doc, "/api/admin/payments", PaymentListQuery),
        (payments_doc, "/api/payments/recipients", RecipientsQuery),
        (payments_doc, "/api/payments/reports", ReportQuery),
    ]
    for doc, path, model in routes:
        model_schema = model.model_json_schema(by_alias=True)
        documented = {
            p["name"]: p for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"
        }
        assert set(documented) == set(model_schema["properties"]), path
        assert model_schema["additionalProperties"] is False  # unknown parameters → 400
        for name, parameter in documented.items():
            own = model_schema["properties"][name]
            rules = {k: own[k] for k in RULE_KEYWORDS if k in own and own[k] is not None}
            assert {k: parameter["schema"].get(k) for k in rules} == rules, (path, name)
            assert parameter["required"] is (name in model_schema.get("required", ())), name
            assert parameter.get("description"), (path, name)
        # every parameter states at least one rule besides its type, except free text
        for name, parameter in documented.items():
            assert set(parameter["schema"]) & {"enum", "pattern", "maximum", "maxLength"}, name
