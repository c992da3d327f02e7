"""The response envelope of api-contracts §1.1 and §1.2."""

from __future__ import annotations

import json
import math
from typing import Any

from paysys.core.context import request_id_var


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    error["requestId"] = request_id_var.get()
    return {"success": False, "error": error}


def error_bytes(code: str, message: str, details: Any = None) -> bytes:
    return json.dumps(error_body(code, message, details), separators=(",", ":")).encode()


def page_of(name: str, items: list[Any], *, page: int, limit: int, total: int) -> dict[str, Any]:
    total_pages = math.ceil(total / limit) if limit else 0
    return {
        name: items,
        "pagination": {
            "page": page,
            "limit": limit,
            "total": total,
            "totalPages": total_pages,
            "hasMore": page < total_pages,
        },
    }
