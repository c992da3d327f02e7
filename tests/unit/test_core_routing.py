"""core.routing: plain routes are documented like FastAPI routes and served without DI."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from paysys.core.config import Settings
from paysys.core.errors import NotFound
from paysys.core.http import create_service_app
from paysys.core.routing import JsonBodyRoute, PlainRoute, path_parameter, plain_route

router = APIRouter(prefix="/api/t", route_class=JsonBodyRoute)
calls: list[str] = []


@router.get("/special", summary="A fixed path registered before the plain /{item_id}")
async def special() -> dict[str, str]:
    return {"route": "special"}


@plain_route(
    router,
    "/{item_id}",
    "GET",
    summary="Read one item",
    openapi_extra={"parameters": [path_parameter("item_id", "The item", format="uuid")]},
    responses={404: {"description": "NOT_FOUND"}},
)
async def read(request: Request) -> Response:
    calls.append(type(request).__name__)
    item_id = request.path_params["item_id"]
    if item_id == "missing":
        raise NotFound("NOT_FOUND", "Item not found")
    return JSONResponse({"id": item_id, "q": request.query_params.get("q")})


def test_plain_route_is_documented_from_its_options() -> None:
    doc = create_service_app("t", [router], settings=Settings(background_workers=False)).openapi()
    operation = doc["paths"]["/api/t/{item_id}"]["get"]
    assert operation["summary"] == "Read one item"
    assert operation["parameters"] == [
        {
            "name": "item_id",
            "in": "path",
            "required": True,
            "description": "The item",
            "schema": {"type": "string", "format": "uuid"},
        }
    ]
    assert operation["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert "400" not in operation["responses"]  # no FastAPI validation behind it


async def test_plain_route_gets_the_request_and_errors_keep_their_envelope() -> None:
    service = create_service_app("t", [router], settings=Settings(background_workers=False))
    plain = [route for route in router.routes if isinstance(route, PlainRoute)]
    assert [route.path for route in plain] == ["/api/t/{item_id}"]
    assert plain[0].get_route_handler() is read  # the endpoint itself: no dependency solving
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        calls.clear()
        found = await client.get("/api/t/abc", params={"q": "x"})
        assert found.status_code == 200 and found.json() == {"id": "abc", "q": "x"}
        assert calls == ["Request"]
        missing = await client.get("/api/t/missing")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "Item not found"
        assert missing.headers["x-request-id"]  # through the service's middleware stack
        # Registration order is kept: the fixed path declared first still wins.
        assert (await client.get("/api/t/special")).json() == {"route": "special"}
        assert (await client.post("/api/t/abc")).status_code == 405


class JsonThing(BaseModel):
    x: int


def _guard() -> None:
    raise NotFound("NOT_FOUND", "guarded")


def test_plain_route_refuses_dependencies_it_would_skip() -> None:
    """A guard that gives 403 on a normal route would give 200 on a plain one: refuse."""
    import pytest
    from fastapi import Depends, FastAPI

    async def endpoint(request: Request) -> Response:
        return JSONResponse({})

    guarded = APIRouter(prefix="/api/g", dependencies=[Depends(_guard)])
    with pytest.raises(TypeError, match="cannot honour dependencies"):
        plain_route(guarded, "/x", "GET")(endpoint)
    with pytest.raises(TypeError, match="cannot honour dependencies"):
        plain_route(APIRouter(), "/y", "GET", dependencies=[Depends(_guard)])(endpoint)
    # a plain router included with dependencies (at the app or a parent router) is refused
    # as soon as FastAPI builds the inclusion (its document, or the first request)
    plain = APIRouter()
    plain_route(plain, "/z", "GET")(endpoint)
    app = FastAPI()
    app.include_router(plain, dependencies=[Depends(_guard)])
    with pytest.raises(TypeError, match="cannot honour dependencies"):
        app.openapi()
    parent = APIRouter(dependencies=[Depends(_guard)])
    parent.include_router(plain)
    with pytest.raises(TypeError, match="cannot honour dependencies"):
        FastAPI().include_router(parent)
    # without dependencies the same inclusion builds
    app = FastAPI()
    app.include_router(plain)
    assert "/z" in app.openapi()["paths"]


async def test_service_routes_read_json_with_the_one_reader() -> None:
    """A JsonBodyRoute hands FastAPI the core reader (duplicate keys are refused; Starlette's
    json.loads would keep the last), and the app factory refuses a router without it."""
    import pytest

    reading = APIRouter(prefix="/api/j", route_class=JsonBodyRoute)

    @reading.post("")
    async def take(body: JsonThing, request: Request) -> dict[str, object]:
        return {"x": body.x, "request": type(request).__name__}

    service = create_service_app("t", [reading], settings=Settings(background_workers=False))
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/api/j", json={"x": 1})
        assert ok.json() == {"x": 1, "request": "JsonBodyRequest"}
        duplicate = await client.post(
            "/api/j", content=b'{"x": 1, "x": 2}', headers={"content-type": "application/json"}
        )
        assert duplicate.status_code == 400
        assert duplicate.json()["error"]["code"] == "INVALID_JSON"
        schema = await client.post("/api/j", json={"x": "one"})
        assert schema.json()["error"]["code"] == "VALIDATION_ERROR"

    default = APIRouter(prefix="/api/d")
    default.post("")(take)
    with pytest.raises(TypeError, match="route_class=JsonBodyRoute"):
        create_service_app("t", [default], settings=Settings(background_workers=False))


def test_plain_route_documents_its_query_model_beside_its_own_parameters() -> None:
    """`query=Model`: the model's parameters join the operation's; the endpoint parses with it."""
    from typing import Annotated

    from pydantic import Field

    from paysys.core.querymodel import Integer, QueryModel

    class Paging(QueryModel):
        page: Annotated[int, Integer(1, 9)] = Field(1, description="page")

    listing = APIRouter(prefix="/api/l")

    @plain_route(
        listing,
        "/{group}",
        "GET",
        query=Paging,
        openapi_extra={"parameters": [path_parameter("group", "The group")]},
    )
    async def pages(request: Request) -> Response:
        return JSONResponse({"page": Paging.parse(request.query_params).page})

    app = create_service_app("t", [listing], settings=Settings(background_workers=False))
    parameters = app.openapi()["paths"]["/api/l/{group}"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in parameters] == [("group", "path"), ("page", "query")]
    assert parameters[1] == Paging.openapi_parameters()[0]
    plain = [route for route in listing.routes if isinstance(route, PlainRoute)]
    assert plain[0].get_route_handler() is pages  # still no per-request machinery
