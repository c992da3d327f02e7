"""`paysys db studio`: sqladmin over every model, reachable only after an ADMIN login."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from paysys.core.config import Settings
from paysys.core.db import Base
from paysys.db import studio
from paysys.db.registry import load_models
from tests.support.cli import PAYSYS, fetch, flat, http_ok, seeded_database, stop_process, wait_for
from tests.support.servers import free_port

PASSWORD = "TestPassword123!"


@pytest.fixture(scope="module")
def seeded_db() -> Iterator[str]:
    """A scratch database migrated and seeded with `paysys setup` (admin@example.com...)."""
    with seeded_database("studio") as url:
        yield url


@pytest.fixture
async def client(seeded_db: str) -> AsyncIterator[httpx.AsyncClient]:
    app = studio.create_app(Settings(database_url=seeded_db))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            yield client


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/admin/login", data={"username": email, "password": password})


async def test_login_required_and_only_admins_get_in(
    client: httpx.AsyncClient, seeded_db: str
) -> None:
    home = await client.get("/")
    assert home.status_code in (302, 307) and home.headers["location"] == "/admin/"
    anonymous = await client.get("/admin/user/list")
    assert anonymous.status_code in (302, 303, 307)
    assert "/admin/login" in anonymous.headers["location"]

    assert (await login(client, "customer@example.com", PASSWORD)).status_code == 400
    assert (await login(client, "admin@example.com", "WrongPassword123!")).status_code == 400
    assert (await login(client, "", "")).status_code == 400
    assert "paysys_studio" not in client.cookies

    ok = await login(client, "ADMIN@example.com", PASSWORD)
    assert ok.status_code == 302, ok.text
    users = await client.get("/admin/user/list")
    assert users.status_code == 200
    assert "customer@example.com" in users.text
    assert "$argon2" not in users.text  # password hashes are never shown

    # A deactivated admin's session stops working at once.
    await fetch(seeded_db, "UPDATE users SET is_active = false WHERE email = 'admin@example.com'")
    try:
        kicked = await client.get("/admin/user/list")
        assert kicked.status_code in (302, 303, 307)
    finally:
        await fetch(
            seeded_db, "UPDATE users SET is_active = true WHERE email = 'admin@example.com'"
        )

    logout = await client.get("/admin/logout")
    assert logout.status_code in (302, 303, 307)
    assert (await client.get("/admin/user/list")).status_code in (302, 303, 307)


async def test_a_forged_session_is_refused(client: httpx.AsyncClient) -> None:
    client.cookies.set("paysys_studio", "forged")
    assert (await client.get("/admin/user/list")).status_code in (302, 303, 307)


async def test_check_password_uses_the_auth_verifier() -> None:
    from paysys.core.passwords import hash_password

    stored = await hash_password(PASSWORD)
    assert await studio.check_password(stored, PASSWORD)
    assert not await studio.check_password(stored, PASSWORD + "x")


async def test_authenticate_rejects_bad_user_ids(seeded_db: str) -> None:
    from paysys.core.db import create_engine

    engine = create_engine(Settings(database_url=seeded_db))
    backend = studio.AdminLogin("s" * 40, engine)

    class FakeRequest:
        def __init__(self, user_id: str) -> None:
            self.session = {"user_id": user_id}

    try:
        assert not await backend.authenticate(FakeRequest("not-a-uuid"))  # type: ignore[arg-type]
        missing = "00000000-0000-0000-0000-000000000000"
        assert not await backend.authenticate(FakeRequest(missing))  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def test_every_model_has_a_view() -> None:
    load_models()
    tables = {mapper.class_.__tablename__ for mapper in Base.registry.mappers}
    views = {view.name_plural for view in studio.model_views()}
    assert tables <= views
    assert {"users", "outbox"} <= views


def test_studio_command_serves_on_its_port(seeded_db: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "studio.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*PAYSYS, "db", "studio", "--port", str(port)],
            env={**os.environ, "DATABASE_URL": seeded_db},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/admin/login"), 60, "studio up")
        page = httpx.get(f"http://127.0.0.1:{port}/admin/login", timeout=5)
        assert "paysys studio" in page.text
    finally:
        assert stop_process(proc, signal.SIGINT) == 0
    assert f"studio on http://127.0.0.1:{port}/admin/" in flat(log.read_text())
