"""The studio's pages: sign-in, the table index, a table's rows, one row, the edit form."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from paysys.admin import service as admin_service
from paysys.core.errors import AppError
from paysys.db.studio import auth
from paysys.db.studio.tables import LIST_CELL_MAX, PAGE_SIZE, RowNotFound, TableView, show
from paysys.users.models import User

Page = Callable[[Request], Awaitable[Response]]
# An edit of an EDITABLE table through the API's domain function: (session, row key, new value
# as JSON, the admin) → None; an AppError refuses it (answered with its status).
Editor = Callable[[Any, dict[str, str], Any, User], Awaitable[None]]


async def edit_config(session: Any, key: dict[str, str], value: Any, admin: User) -> None:
    """`PUT /api/admin/config/{key}`'s code path: validation, consistency, `config.updated`."""
    await admin_service.update_config(session, {key["key"]: value}, admin.id)


EDITORS: dict[str, Editor] = {"system_config": edit_config}


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    context.setdefault("csrf_token", auth.csrf_token(request))
    context.setdefault("show", show)
    context.setdefault("cell_max", LIST_CELL_MAX)
    return templates.TemplateResponse(request, name, context, status_code=status)


def signed_in(page: Callable[[Request, User], Awaitable[Response]]) -> Page:
    """The page for a signed-in admin; anyone else goes to the sign-in page (a POST: 403)."""

    async def wrapper(request: Request) -> Response:
        admin = await auth.current_admin(request)
        if admin is None:
            if request.method != "GET":
                raise HTTPException(403, "Sign in first")
            request.session.pop("uid", None)
            return RedirectResponse("/login", status_code=303)
        request.state.admin = admin
        return await page(request, admin)

    return wrapper


async def login_page(request: Request) -> Response:
    if request.method == "GET":
        return render(request, "login.html")
    form = await request.form()
    auth.check_csrf(request, form)
    email, password = str(form.get("email") or "").strip(), str(form.get("password") or "")
    if not email or not password:
        return render(request, "login.html", 400, error="Email and password are required")
    try:
        await auth.sign_in(request, email, password)
    except auth.SignInRefused as refused:
        response = render(request, "login.html", refused.status, error=refused.message)
        response.headers.update(refused.headers)
        return response
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    auth.check_csrf(request, await request.form())
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _view(request: Request) -> TableView:
    view: TableView | None = request.app.state.views.get(request.path_params["table"])
    if view is None:
        raise HTTPException(404, "No such table")
    return view


@signed_in
async def index(request: Request, admin: User) -> Response:
    return render(request, "index.html", views=request.app.state.views.values(), admin=admin)


@signed_in
async def table_page(request: Request, admin: User) -> Response:
    view = _view(request)
    try:
        number = max(1, min(int(request.query_params.get("page", "1")), 1_000_000))
    except ValueError:
        number = 1
    async with request.app.state.sessionmaker() as session:
        rows = [dict(r) for r in (await session.execute(view.page(number))).mappings()]
        total = (await session.execute(view.count())).scalar_one()
    return render(
        request,
        "table.html",
        view=view,
        rows=rows[:PAGE_SIZE],
        total=total,
        page=number,
        more=len(rows) > PAGE_SIZE,
        admin=admin,
    )


async def _row(request: Request, view: TableView) -> dict[str, Any]:
    try:
        query = view.one(request.query_params)
    except RowNotFound:
        raise HTTPException(404, "No such row") from None
    async with request.app.state.sessionmaker() as session:
        row = (await session.execute(query)).mappings().first()
    if row is None:
        raise HTTPException(404, "No such row")
    return dict(row)


@signed_in
async def row_page(request: Request, admin: User) -> Response:
    view = _view(request)
    row = await _row(request, view)
    return render(request, "row.html", view=view, row=row, key=view.key_of(row), admin=admin)


@signed_in
async def edit_page(request: Request, admin: User) -> Response:
    """GET: the form; POST: the change, through the table's domain function. Read-only
    tables answer 403 to both (the refusal is here, not only a missing button)."""
    view = _view(request)
    column = view.editable_column
    if column is None:
        raise HTTPException(403, f"{view.name} is read-only in the studio")
    row = await _row(request, view)
    key = view.key_of(row)
    if request.method == "GET":
        text = show(row[column])
        return render(request, "edit.html", view=view, key=key, column=column, text=text)
    form = await request.form()
    auth.check_csrf(request, form)
    text = str(form.get(column) or "")
    try:
        value = json.loads(text)
    except ValueError:
        return render(
            request,
            "edit.html",
            400,
            view=view,
            key=key,
            column=column,
            text=text,
            error=f"{column}: not valid JSON",
        )
    async with request.app.state.sessionmaker() as session:
        try:
            await EDITORS[view.name](session, key, value, admin)
        except AppError as exc:
            return render(
                request,
                "edit.html",
                exc.status,
                view=view,
                key=key,
                column=column,
                text=text,
                error=exc.message,
            )
    return RedirectResponse(f"/tables/{view.name}/row?{urlencode(key)}", status_code=303)
