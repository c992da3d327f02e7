"""Route classes of the services: JsonBodyRoute for ordinary routes, PlainRoute for hot paths.

Every ordinary FastAPI route is a `JsonBodyRoute` (each service's router is created with
`route_class=JsonBodyRoute`, and `core.http.create_service_app` refuses any other), so a JSON
body is parsed by the one reader, `core.jsonbody.parse`, and never by Starlette's
`json.loads`: FastAPI's documented "custom Request and APIRoute class" customisation.

Plain routes serve the hot paths, documented by FastAPI but without its per-request machinery.
A FastAPI route resolves its dependencies, validates its parameters and serialises its answer
on every request; for a one-query endpoint that machinery costs more CPU than the work itself
(docs/benchmarks.md: ~70 µs of ~530 µs per payments GET). A plain route keeps what FastAPI
gives at build time (the OpenAPI operation: summary, responses, `openapi_extra`, and the
parameters of its query model) and at run time calls the endpoint with the `Request` alone: the
endpoint authenticates and parses for itself (its query with `QueryModel.parse`, the same model
that documents it; a body with `core.jsonbody.read_json`), and returns a `Response`. Errors it
raises take the usual path (`AppError` → the one handler in `core.http`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from paysys.core import jsonbody
from paysys.core.querymodel import QueryModel

PlainEndpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=PlainEndpoint)


class JsonBodyRequest(Request):
    """A request whose `json()` is the one reader; FastAPI reads JSON bodies through it, and a
    malformed one (an `InvalidJSON`, a `JSONDecodeError`) becomes 400 INVALID_JSON."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = jsonbody.parse(await self.body())
        return self._json


class JsonBodyRoute(APIRoute):
    """An APIRoute that hands FastAPI a `JsonBodyRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_body_request(request: Request) -> Response:
            return await handler(JsonBodyRequest(request.scope, request.receive))

        return with_json_body_request


class PlainRoute(APIRoute):
    """An APIRoute whose endpoint is called as `await endpoint(request)`.

    Dependencies never run on a plain route, so it refuses to be built with any (its own or
    its routers'): a guard such as `require_role` would silently not apply."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # FastAPI builds the handler once for the route itself (its own and its router's
        # dependencies) and once per inclusion of its router (dependencies given to
        # `include_router`, held by the inclusion's context while this runs).
        included = fastapi_routing._effective_route_context_var.get()
        dependencies = [*self.dependencies, *(getattr(included, "dependencies", None) or ())]
        if dependencies:
            raise TypeError(
                f"plain route {self.path} cannot honour dependencies ({len(dependencies)} "
                "given, on it or a router); authorise in the endpoint"
            )
        return self.endpoint


def plain_route(
    router: APIRouter,
    path: str,
    method: str,
    *,
    query: type[QueryModel] | None = None,
    **options: Any,
) -> Callable[[E], E]:
    """Register `endpoint(request) -> Response` on `router` as a PlainRoute, in the router's
    order (a plain `/{id}` registered after `/reports` still lets `/reports` match first).

    `query`: the model the endpoint parses its query with (`query.parse(request.query_params)`);
    its fields become the operation's OpenAPI parameters."""
    if query is not None:
        extra = dict(options.get("openapi_extra") or {})
        extra["parameters"] = [*extra.get("parameters", ()), *query.openapi_parameters()]
        options["openapi_extra"] = extra

    def register(endpoint: E) -> E:
        router.add_api_route(
            path, endpoint, methods=[method], route_class_override=PlainRoute, **options
        )
        return endpoint

    return register


def path_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    """The OpenAPI parameter of a path segment a plain endpoint reads itself."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }
