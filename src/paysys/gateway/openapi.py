"""One OpenAPI 3.1 document for the whole API, merged from every service's own document.

Paths are unique per service (each owns `/api/<service>/...`); components that clash by name
with a different definition are renamed `<service>_<Name>` in that service's part (its `$ref`s
rewritten), identical ones are shared. The merged document is cached; it is rebuilt when a
service's document changes (checked after `OPENAPI_CACHE_TTL` seconds, and at once when the
readiness probe sees a service come back, i.e. restart).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from paysys import __version__
from paysys.core.allow import MethodTable
from paysys.core.docs import docs_route
from paysys.core.logging import get_logger
from paysys.gateway.upstreams import ServicePool

log = get_logger("paysys.gateway.openapi")

COMPONENT_SECTIONS = (
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "securitySchemes",
    "links",
    "callbacks",
    "pathItems",
)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value in renames:
                out[key] = renames[value]
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def merge_documents(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge service documents (in the given order) into one OpenAPI 3.1 document."""
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "paysys API",
            "version": __version__,
            "description": "The whole paysys API as served by the gateway: "
            + ", ".join(documents)
            + ".",
        },
        "servers": [{"url": "/"}],
        "paths": {},
        "components": {},
        "tags": [],
    }
    components: dict[str, dict[str, Any]] = merged["components"]
    seen_tags: set[str] = set()
    for service, source in documents.items():
        doc = copy.deepcopy(source)
        renames: dict[str, str] = {}
        source_components = doc.get("components") or {}
        # Decide names first, so refs anywhere in this document can be rewritten. A component
        # is renamed when its definition (with this document's renames applied) differs from
        # the one already merged under that name; renaming one may change others that refer
        # to it, so repeat until nothing changes.
        while True:
            added = False
            for section in COMPONENT_SECTIONS:
                for name, value in (source_components.get(section) or {}).items():
                    ref = f"#/components/{section}/{name}"
                    if ref in renames:
                        continue
                    existing = components.get(section, {}).get(name)
                    if existing is not None and existing != _rewrite_refs(value, renames):
                        renames[ref] = f"#/components/{section}/{service}_{name}"
                        added = True
            if not added:
                break
        for section in COMPONENT_SECTIONS:
            for name, value in (source_components.get(section) or {}).items():
                ref = f"#/components/{section}/{name}"
                final = renames[ref].rsplit("/", 1)[1] if ref in renames else name
                target = components.setdefault(section, {})
                if final not in target:
                    target[final] = _rewrite_refs(value, renames) if renames else value
        for path, item in (doc.get("paths") or {}).items():
            item = _rewrite_refs(item, renames) if renames else item
            current = merged["paths"].get(path)
            if current is None:
                merged["paths"][path] = item
                continue
            for method, operation in item.items():  # same path in two documents: union
                if method in HTTP_METHODS and method in current:
                    log.warning("openapi path clash", path=path, method=method, service=service)
                    continue
                current[method] = operation
        for tag in doc.get("tags") or []:
            if isinstance(tag, dict) and tag.get("name") not in seen_tags:
                seen_tags.add(tag["name"])
                merged["tags"].append(tag)
        for operations in (doc.get("paths") or {}).values():
            for method, operation in operations.items():
                if method not in HTTP_METHODS or not isinstance(operation, dict):
                    continue
                for tag_name in operation.get("tags") or []:
                    if tag_name not in seen_tags:
                        seen_tags.add(tag_name)
                        merged["tags"].append({"name": tag_name})
    if not merged["tags"]:
        del merged["tags"]
    return merged


def method_table(document: dict[str, Any]) -> MethodTable:
    """Each path of a document → the methods of its operations (the gateway's 405s)."""
    paths = document.get("paths") or {}
    return MethodTable(
        {
            path: [method for method in item if method in HTTP_METHODS]
            for path, item in paths.items()
            if isinstance(item, dict)
        }
    )


class OpenAPIAggregator:
    """Fetches the services' documents, merges them, caches the result, and hands each new
    merged document's method table to `on_methods` (the proxy's 405 check)."""

    def __init__(
        self,
        pools: dict[str, ServicePool],
        ttl: float = 30.0,
        timeout: float = 2.0,
        on_methods: Callable[[MethodTable], None] | None = None,
    ) -> None:
        self.pools = pools
        self.on_methods = on_methods
        self.ttl = ttl
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None
        self._sources: dict[str, dict[str, Any]] = {}
        self._hashes: dict[str, str] = {}
        self._body: bytes | None = None
        self._checked_at = 0.0
        self._stale = True
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Re-check the services' documents on the next request (a service restarted)."""
        self._stale = True

    async def _fetch(self, pool: ServicePool) -> bytes | None:
        assert self.session is not None
        for upstream in pool.upstreams:
            try:
                async with self.session.get(
                    upstream.base + "/openapi.json", timeout=self.timeout
                ) as response:
                    if response.status == 200:
                        return await response.read()
            except (TimeoutError, aiohttp.ClientError, OSError):
                continue
        return None

    async def refresh(self) -> None:
        names = list(self.pools)
        bodies = await asyncio.gather(*(self._fetch(self.pools[n]) for n in names))
        changed = self._body is None
        for name, body in zip(names, bodies, strict=True):
            if body is None:
                continue  # keep the last document we had for a service that is down
            digest = hashlib.sha256(body).hexdigest()
            if self._hashes.get(name) == digest:
                continue
            try:
                document = json.loads(body)
            except ValueError:
                log.warning("service returned an invalid OpenAPI document", service=name)
                continue
            self._hashes[name] = digest
            self._sources[name] = document
            changed = True
        if changed:
            ordered = {n: self._sources[n] for n in names if n in self._sources}
            merged = merge_documents(ordered)
            self._body = json.dumps(merged, separators=(",", ":")).encode()
            if self.on_methods is not None:
                self.on_methods(method_table(merged))
        self._checked_at = time.monotonic()
        self._stale = False

    async def document(self) -> bytes:
        if self._stale or time.monotonic() - self._checked_at >= self.ttl:
            async with self._lock:
                if self._stale or time.monotonic() - self._checked_at >= self.ttl:
                    await self.refresh()
        assert self._body is not None
        return self._body

    async def endpoint(self, _: Request) -> Response:
        return Response(await self.document(), media_type="application/json")


docs_endpoint = docs_route("paysys API")
