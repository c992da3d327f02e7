"""HTTP routes of the admin service (parse, authorise, call the service layer, shape)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/admin", tags=["admin"])
