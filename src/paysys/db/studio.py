"""`paysys db studio`: a web GUI over every table (sqladmin on :5555), the Prisma Studio analogue.

Login required: the email and password of an active ADMIN user (the seeded
``admin@example.com`` in development), checked with the same password verifier the auth
service uses. The session cookie is signed with ``STUDIO_SESSION_SECRET``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqladmin import Admin, ModelView
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from paysys.core.config import Settings
from paysys.core.passwords import verify_password

DEFAULT_PORT = 5555

ADMIN_QUERY = text(
    "SELECT id, password_hash FROM users "
    "WHERE lower(email) = lower(:email) AND role = 'ADMIN' AND is_active AND deleted_at IS NULL"
)


async def check_password(stored_hash: str, password: str) -> bool:
    """The auth service's verifier (argon2id, off the event loop)."""
    matches, _ = await verify_password(stored_hash, password)
    return matches


class AdminLogin(AuthenticationBackend):
    """Session login for the studio: only ADMIN users get in."""

    def __init__(self, secret_key: str, engine: AsyncEngine) -> None:
        super().__init__(secret_key=secret_key, session_cookie="paysys_studio", https_only=False)
        self.engine = engine

    async def login(self, request: Request) -> bool:
        form = await request.form()
        email = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        if not email or not password:
            return False
        async with self.engine.connect() as conn:
            row = (await conn.execute(ADMIN_QUERY, {"email": email})).first()
        if row is None or not await check_password(row.password_hash, password):
            return False
        request.session.update({"user_id": str(row.id)})
        return True

    async def logout(self, request: Request) -> bool:
        request.session.clear()
        return True

    async def authenticate(self, request: Request) -> bool:
        user_id = request.session.get("user_id")
        if not user_id:
            return False
        try:
            uuid.UUID(str(user_id))
        except ValueError:
            return False
        query = text(
            "SELECT 1 FROM users WHERE id = :id AND role = 'ADMIN' AND is_active "
            "AND deleted_at IS NULL"
        )
        async with self.engine.connect() as conn:
            still_admin = (await conn.execute(query, {"id": user_id})).first()
        return still_admin is not None


def model_views() -> list[type[ModelView]]:
    """One read/write view per mapped model of every service (`paysys.db.registry`)."""
    from paysys.core.db import Base
    from paysys.db.registry import load_models

    load_models()
    views: list[type[ModelView]] = []
    mappers = sorted(Base.registry.mappers, key=lambda m: m.class_.__name__)
    for mapper in mappers:
        model = mapper.class_
        attrs: dict[str, Any] = {
            "column_list": [column.key for column in mapper.column_attrs],
            "name": model.__name__,
            "name_plural": getattr(model, "__tablename__", model.__name__),
            "page_size": 50,
        }
        if "password_hash" in attrs["column_list"]:
            attrs["column_list"].remove("password_hash")
            attrs["form_excluded_columns"] = ["password_hash"]
        views.append(type(f"{model.__name__}Studio", (ModelView,), attrs, model=model))
    return views


def create_app(settings: Settings | None = None) -> Starlette:
    from paysys.core.db import create_engine

    settings = settings or Settings()
    engine = create_engine(settings)

    async def home(request: Request) -> Response:
        return RedirectResponse("/admin/")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = Starlette(routes=[Route("/", home)], lifespan=lifespan)
    admin = Admin(
        app,
        engine=engine,
        title="paysys studio",
        authentication_backend=AdminLogin(settings.studio_session_secret, engine),
    )
    for view in model_views():
        admin.add_view(view)
    app.state.engine = engine
    return app


def run(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="info")
