"""The `Allow` header of a 405 (api-contracts §1.4): exactly the methods of the requested path.

A path is a template (`/api/payments/{payment_id}`); its methods are those of every operation
declared under it. A concrete path is served by the first template (in declaration order) that
matches it *with* the method; when none has the method, the answer is 405 with the methods of
the first template that matches at all (Starlette's rule: `/api/payments/recipients` is that
path, not `/api/payments/{payment_id}`). The services apply the rule to their routes
(`core.http`), the gateway to the paths of the merged OpenAPI document (`gateway.methods`), so
both give the same answer. Free of FastAPI: the gateway imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# The order `Allow` lists methods in (RFC 9110 leaves it free; one order everywhere).
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
_PARAMETER = re.compile(r"\{[^/{}]+\}")


def allow_value(methods: Iterable[str]) -> str:
    """`GET, POST`: the methods upper-cased, in `METHOD_ORDER`, each once."""
    upper = {method.upper() for method in methods}
    known = [method for method in METHOD_ORDER if method in upper]
    return ", ".join([*known, *sorted(upper.difference(METHOD_ORDER))])


def template_pattern(template: str) -> re.Pattern[str]:
    """`/a/{id}/b` → a regex matching the concrete paths of the template (a parameter is one
    non-empty segment, as Starlette's default `str` convertor)."""
    parts = _PARAMETER.split(template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


class MethodTable:
    """Path templates (in declaration order) → their methods; answers "which `Allow`, if any".

    `refusal(path, method)` is on the gateway's hot path: a static path is one dict lookup,
    a concrete path of a template a few anchored regex matches among the templates with the
    same number of segments."""

    def __init__(self, paths: Mapping[str, Iterable[str]]) -> None:
        templates: list[tuple[str, re.Pattern[str], frozenset[str]]] = []
        for template, methods in paths.items():
            upper = frozenset(method.upper() for method in methods)
            templates.append((template, template_pattern(template), upper))
        self._dynamic: dict[int, list[tuple[re.Pattern[str], frozenset[str], str]]] = {}
        for template, pattern, methods in templates:
            if _PARAMETER.search(template):
                self._dynamic.setdefault(template.count("/"), []).append(
                    (pattern, methods, allow_value(methods))
                )
        # A static path: every method any matching template serves, and its own `Allow`.
        self._static: dict[str, tuple[frozenset[str], str]] = {}
        for template, _, _methods in templates:
            if not _PARAMETER.search(template):
                matching = [m for _, pattern, m in templates if pattern.fullmatch(template)]
                served = frozenset().union(*matching)
                self._static[template] = (served, allow_value(matching[0]))

    def refusal(self, path: str, method: str) -> str | None:
        """The `Allow` value when `path` is known and does not serve `method`; None when the
        method is served or the path is unknown (then the service answers, e.g. 404)."""
        static = self._static.get(path)
        if static is not None:
            return None if method in static[0] else static[1]
        first: str | None = None
        for pattern, methods, allow in self._dynamic.get(path.count("/"), ()):
            if pattern.fullmatch(path):
                if method in methods:
                    return None
                if first is None:
                    first = allow
        return first

    def __len__(self) -> int:
        return len(self._static) + sum(len(group) for group in self._dynamic.values())
