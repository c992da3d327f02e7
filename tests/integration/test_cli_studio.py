"""`paysys db studio`: ADMIN sign-in with the API login's lockout, hidden secret columns,
read-only tables, CSRF on every form, production refusal (in-process against the run's real
PostgreSQL and Redis; the command itself as a process). The browser test is
tests/e2e/test_studio_browser.py."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paysys.auth import service as auth_service
from paysys.core.config import Settings
from paysys.db import studio
from paysys.db.registry import load_models
from paysys.db.studio.tables import EDITABLE, is_secret, table_views
from tests.support.cli import PAYSYS, fetch, flat, http_ok, seeded_database, stop_process, wait_for
from tests.support.servers import free_port

PASSWORD = "TestPassword123!"
ADMIN = "admin@example.com"
CUSTOMER = "customer@example.com"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
READ_ONLY = ("users", "payments", "audit_logs", "outbox", "auth_sessions")
PRODUCTION = {
    "env": "production",
    "jwt_access_secret": "a" * 40,
    "jwt_refresh_secret": "r" * 40,
    "psp_webhook_secret": "w" * 40,
    "studio_session_secret": "s" * 40,
}


@pytest.fixture(scope="module")
def seeded_db() -> Iterator[str]:
    """A scratch database migrated and seeded with `paysys setup` (admin@example.com...)."""
    with seeded_database("studio") as url:
        yield url


def new_ip() -> str:
    """A client address of its own: each test's lockout counts start at zero."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


class Browser:
    """An httpx client on the in-process studio that behaves like one browser at `ip`."""

    def __init__(self, client: httpx.AsyncClient, ip: str) -> None:
        self.client, self.ip = client, ip

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params, headers={"X-Forwarded-For": self.ip})

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return await self.client.post(path, data=data, headers={"X-Forwarded-For": self.ip})

    async def csrf(self, path: str = "/login") -> str:
        page = await self.get(path)
        found = CSRF_RE.search(page.text)
        assert found, page.text
        return found.group(1)

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        token = await self.csrf()
        return await self.post(
            "/login", {"email": email, "password": password, "csrf_token": token}
        )


@pytest.fixture
async def studio_app(seeded_db: str) -> AsyncIterator[Any]:
    app = studio.create_app(Settings(database_url=seeded_db, trusted_proxies=["127.0.0.1"]))
    async with app.router.lifespan_context(app):
        yield app


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://studio")


@pytest.fixture
async def browser(studio_app: Any) -> AsyncIterator[Browser]:
    async with _client(studio_app) as client:
        yield Browser(client, new_ip())


@pytest.fixture
async def admin(browser: Browser) -> Browser:
    signed_in = await browser.sign_in(ADMIN)
    assert signed_in.status_code == 303, signed_in.text
    return browser


# --- sign-in ---------------------------------------------------------------------------------


async def test_only_admins_sign_in(browser: Browser, seeded_db: str) -> None:
    home = await browser.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/login"
    assert (await browser.get("/tables/users")).status_code == 303

    logins = "SELECT count(*) FROM outbox WHERE type = 'user.logged_in'"
    before = await fetch(seeded_db, logins)
    customer = await browser.sign_in(CUSTOMER)
    assert customer.status_code == 403 and "Only ADMIN accounts" in customer.text
    assert await fetch(seeded_db, logins) == before  # refused: no USER_LOGIN in the audit
    wrong = await browser.sign_in(ADMIN, "WrongPassword123!")
    assert wrong.status_code == 401 and "Invalid email or password" in wrong.text
    missing = await browser.post("/login", {"csrf_token": await browser.csrf()})
    assert missing.status_code == 400
    assert (await browser.get("/")).status_code == 303  # none of them signed in

    ok = await browser.sign_in("ADMIN@example.com")
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert await fetch(seeded_db, logins) == before + 1  # type: ignore[operator]
    index = await browser.get("/")
    assert index.status_code == 200
    assert ADMIN in index.text and "/tables/users" in index.text


async def test_the_session_cookie_is_httponly_and_strict(browser: Browser, seeded_db: str) -> None:
    page = await browser.get("/login")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("paysys_studio=")
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()  # development on a loopback address: plain HTTP
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for app in (
        studio.create_app(Settings(database_url=seeded_db), host="0.0.0.0"),
        studio.create_app(Settings(database_url=seeded_db, studio_enabled=True, **PRODUCTION)),
    ):
        async with app.router.lifespan_context(app), _client(app) as client:
            remote = await client.get("/login")
        assert "; secure" in remote.headers["set-cookie"].lower()


async def test_sessions_end_with_the_admins_rights(admin: Browser, seeded_db: str) -> None:
    assert (await admin.get("/tables/users")).status_code == 200
    bump = "UPDATE users SET token_version = token_version + 1 WHERE email = $1"
    await fetch(seeded_db, bump, ADMIN)  # e.g. a password change or logout of all sessions
    assert (await admin.get("/tables/users")).status_code == 303
    assert (await admin.sign_in(ADMIN)).status_code == 303
    await fetch(seeded_db, "UPDATE users SET is_active = false WHERE email = $1", ADMIN)
    try:
        assert (await admin.get("/tables/users")).status_code == 303
    finally:
        await fetch(seeded_db, "UPDATE users SET is_active = true WHERE email = $1", ADMIN)


async def test_a_forged_session_is_refused(browser: Browser) -> None:
    browser.client.cookies.set("paysys_studio", "forged")
    assert (await browser.get("/tables/users")).status_code == 303


async def test_sign_out(admin: Browser) -> None:
    token = await admin.csrf("/")
    assert (await admin.get("/logout")).status_code == 405  # never a GET (no CSRF-able link)
    out = await admin.post("/logout", {"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert (await admin.get("/tables/users")).status_code == 303


# --- the API login's lockout, shared ---------------------------------------------------------


async def test_failures_at_the_studio_and_the_api_share_one_lockout(
    browser: Browser, app_client: Any, seeded_db: str
) -> None:
    """5 failures per account and address, wherever they were made, lock both doors for that
    address only (api-contracts §3)."""
    api = await app_client("auth", database_url=seeded_db, trusted_proxies=["127.0.0.1"])
    body = {"email": ADMIN, "password": "WrongPassword123!"}
    at_a = {"X-Forwarded-For": browser.ip}
    for _ in range(2):
        assert (await api.post("/api/auth/login", json=body, headers=at_a)).status_code == 401
    for _ in range(3):
        assert (await browser.sign_in(ADMIN, "WrongPassword123!")).status_code == 401
    locked = await browser.sign_in(ADMIN)  # the right password waits too
    assert locked.status_code == 423 and "Too many failed login attempts" in locked.text
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    right = {"email": ADMIN, "password": PASSWORD}
    api_locked = await api.post("/api/auth/login", json=right, headers=at_a)
    assert api_locked.status_code == 423
    assert api_locked.json()["error"]["code"] == "ACCOUNT_LOCKED"

    # Another address is not locked out: the owner signs in there, at either door.
    elsewhere = Browser(browser.client, new_ip())
    assert (await elsewhere.sign_in(ADMIN)).status_code == 303

    # The other direction: 5 API failures from a third address lock the studio there.
    third = Browser(browser.client, new_ip())
    for _ in range(5):
        wrong = await api.post("/api/auth/login", json=body, headers={"X-Forwarded-For": third.ip})
        assert wrong.status_code == 401
    assert (await third.sign_in(ADMIN)).status_code == 423


async def test_unknown_emails_take_as_long_as_wrong_passwords(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One argon2 verification either way: a dummy one for an unknown email."""
    burned: list[str] = []
    real_burn = auth_service.burn_password_check

    async def counting_burn(password: str) -> None:
        burned.append(password)
        await real_burn(password)

    monkeypatch.setattr(auth_service, "burn_password_check", counting_burn)
    unknown: list[float] = []
    known: list[float] = []
    for i in range(7):  # interleaved, each from its own address: no lockout, same conditions
        for email, times in (
            (f"nobody-{uuid.uuid4().hex[:8]}@example.com", unknown),
            (ADMIN, known),
        ):
            one = Browser(browser.client, new_ip())
            token = await one.csrf()
            started = time.perf_counter()
            answer = await one.post(
                "/login", {"email": email, "password": f"Wrong-{i}-pass", "csrf_token": token}
            )
            times.append(time.perf_counter() - started)
            assert answer.status_code == 401 and "Invalid email or password" in answer.text
    assert len(burned) == 7  # every unknown email, and only those, paid the dummy verification
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (unknown, known)


# --- CSRF ------------------------------------------------------------------------------------


async def test_forms_without_this_sessions_csrf_token_are_refused(
    admin: Browser, studio_app: Any, seeded_db: str
) -> None:
    async with _client(studio_app) as other_client:
        other = Browser(other_client, new_ip())
        foreign_token = await other.csrf()  # valid, but another session's
        no_token = await other.post("/login", {"email": ADMIN, "password": PASSWORD})
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        wrong = {"email": ADMIN, "password": PASSWORD, "csrf_token": "x" * 43}
        assert (await other.post("/login", wrong)).status_code == 403
        assert (await other.get("/")).status_code == 303  # not signed in by either

    await _config_row(seeded_db)
    key = {"key": "maintenance.message"}
    edit = "/tables/system_config/edit?key=maintenance.message"
    assert (await admin.get("/tables/system_config/edit", **key)).status_code == 200
    for data in ({"value": '"hacked"'}, {"value": '"hacked"', "csrf_token": foreign_token}):
        assert (await admin.post(edit, data)).status_code == 403
        assert (await admin.post("/logout", data)).status_code == 403
    assert await _config_value(seeded_db) == '"Back soon"'
    assert (await admin.get("/")).status_code == 200  # still signed in


# --- secrets never shown ---------------------------------------------------------------------


def test_every_secret_looking_column_is_hidden() -> None:
    views = table_views()
    tables = set(load_models().tables)
    assert set(views) == tables and {"users", "outbox", "system_config"} <= tables
    hidden = {(name, col) for name, view in views.items() for col in view.hidden}
    assert {
        ("users", "password_hash"),
        ("auth_sessions", "refresh_hash"),
        ("auth_sessions", "previous_hash"),
    } <= hidden
    for view in views.values():
        for column in view.columns:
            assert not re.search(r"password|secret|hash$|_token$", column.name), column.name
    assert not is_secret("token_version") and is_secret("api_token") and is_secret("hash")


async def test_secret_columns_are_absent_from_every_page(
    admin: Browser, app_client: Any, seeded_db: str
) -> None:
    api = await app_client("auth", database_url=seeded_db)
    assert (
        await api.post("/api/auth/login", json={"email": ADMIN, "password": PASSWORD})
    ).is_success
    stored_hash = str(
        await fetch(seeded_db, "SELECT password_hash FROM users WHERE email=$1", ADMIN)
    )
    refresh_hash = str(await fetch(seeded_db, "SELECT refresh_hash FROM auth_sessions LIMIT 1"))
    admin_id = str(await fetch(seeded_db, "SELECT id FROM users WHERE email = $1", ADMIN))
    sid = str(await fetch(seeded_db, "SELECT id FROM auth_sessions LIMIT 1"))
    pages = [
        await admin.get("/tables/users"),
        await admin.get("/tables/users/row", id=admin_id),
        await admin.get("/tables/auth_sessions"),
        await admin.get("/tables/auth_sessions/row", id=sid),
    ]
    for page in pages:
        assert page.status_code == 200
        for secret in ("password_hash", "$argon2", stored_hash, "refresh_hash", refresh_hash):
            assert secret not in page.text
    assert ADMIN in pages[1].text and "token_version" in pages[1].text


async def test_bad_addresses_answer_404_not_500(admin: Browser) -> None:
    assert (await admin.get("/tables/nope")).status_code == 404
    assert (await admin.get("/tables/users/row", id="not-a-uuid")).status_code == 404
    assert (await admin.get("/tables/users/row")).status_code == 404
    missing = str(uuid.UUID(int=0))
    assert (await admin.get("/tables/users/row", id=missing)).status_code == 404
    assert (await admin.get("/tables/outbox/row", seq="x")).status_code == 404
    assert (await admin.get("/tables/users", page="x")).status_code == 200
    assert (await admin.get("/tables/outbox", page="2")).status_code == 200


# --- read-only tables, and the one edit through the API's rules -------------------------------


async def test_read_only_tables_refuse_edits(admin: Browser, seeded_db: str) -> None:
    admin_id = str(await fetch(seeded_db, "SELECT id FROM users WHERE email = $1", ADMIN))
    row = await admin.get("/tables/users/row", id=admin_id)
    assert "/edit" not in row.text and "<textarea" not in row.text and "read-only" in row.text
    token = await admin.csrf("/")
    for table in READ_ONLY:
        assert table not in EDITABLE
        path = f"/tables/{table}/edit?id={admin_id}"
        assert (await admin.get(f"/tables/{table}/edit", id=admin_id)).status_code == 403
        forged = {"csrf_token": token, "role": "CUSTOMER", "password_hash": "x", "value": "1"}
        refused = await admin.post(path, forged)
        assert refused.status_code == 403 and "read-only" in refused.text
        assert (await admin.post(f"/tables/{table}", forged)).status_code == 405
        assert (await admin.post(f"/tables/{table}/row?id={admin_id}", forged)).status_code == 405
    role = await fetch(seeded_db, "SELECT role FROM users WHERE email = $1", ADMIN)
    assert role == "ADMIN"


async def _config_row(url: str) -> None:
    await fetch(
        url,
        "INSERT INTO system_config (key, value) VALUES ('maintenance.message', '\"Back soon\"') "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )


async def _config_value(url: str) -> str:
    return str(
        await fetch(
            url, "SELECT value::text FROM system_config WHERE key = $1", "maintenance.message"
        )
    )


async def test_config_edits_go_through_the_admin_rules(admin: Browser, seeded_db: str) -> None:
    await _config_row(seeded_db)
    form = await admin.get("/tables/system_config/edit", key="maintenance.message")
    assert form.status_code == 200 and "Back soon" in form.text
    token = CSRF_RE.search(form.text).group(1)  # type: ignore[union-attr]
    path = "/tables/system_config/edit?key=maintenance.message"

    too_long = await admin.post(path, {"csrf_token": token, "value": f'"{"x" * 501}"'})
    assert too_long.status_code == 400 and "at most 500 characters" in too_long.text
    not_json = await admin.post(path, {"csrf_token": token, "value": "{nope"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.text
    assert await _config_value(seeded_db) == '"Back soon"'

    saved = await admin.post(path, {"csrf_token": token, "value": '"  Down at 10:00 "'})
    assert saved.status_code == 303
    assert saved.headers["location"] == "/tables/system_config/row?key=maintenance.message"
    assert await _config_value(seeded_db) == '"Down at 10:00"'  # validated: trimmed
    event = await fetch(
        seeded_db,
        "SELECT payload::text FROM outbox WHERE type = 'config.updated' ORDER BY seq DESC LIMIT 1",
    )
    assert "Down at 10:00" in str(event)  # the audit trail's event, as from the API
    row = await admin.get("/tables/system_config/row", key="maintenance.message")
    assert "Down at 10:00" in row.text and "/tables/system_config/edit?key=" in row.text


# --- production ------------------------------------------------------------------------------


def test_production_needs_studio_enabled(seeded_db: str) -> None:
    with pytest.raises(studio.StudioRefused, match="STUDIO_ENABLED=true"):
        studio.create_app(Settings(database_url=seeded_db, **PRODUCTION))
    studio.create_app(Settings(database_url=seeded_db, studio_enabled=True, **PRODUCTION))

    env = {**os.environ, "DATABASE_URL": seeded_db, "STUDIO_ENABLED": "false"}
    env.update({name.upper(): value for name, value in PRODUCTION.items()})
    refused = subprocess.run(
        [*PAYSYS, "db", "studio", "--port", str(free_port())],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "STUDIO_ENABLED=true" in flat(refused.stdout.decode())


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
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{base}/login"), 60, "studio up")
        with httpx.Client(base_url=base, timeout=10) as client:
            page = client.get("/login")
            assert "paysys studio" in page.text
            # A client's own X-Forwarded-For is not believed (no TRUSTED_PROXIES): five
            # "addresses" are one, and it is locked out.
            token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
            form = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "Nope-12345"}
            statuses = [
                client.post(
                    "/login", data={**form, "csrf_token": token}, headers={"X-Forwarded-For": ip}
                ).status_code
                for ip in (
                    "198.51.100.1",
                    "198.51.100.2",
                    "198.51.100.3",
                    "198.51.100.4",
                    "198.51.100.5",
                    "198.51.100.6",
                )
            ]
            assert statuses == [401] * 5 + [423]
    finally:
        assert stop_process(proc, signal.SIGINT) == 0
    assert f"studio on http://127.0.0.1:{port}/" in flat(log.read_text())


async def test_values_are_escaped(admin: Browser, seeded_db: str) -> None:
    rename = "UPDATE users SET name = $1 WHERE email = $2"
    old = await fetch(seeded_db, "SELECT name FROM users WHERE email = $1", CUSTOMER)
    await fetch(seeded_db, rename, "<script>alert(1)</script>", CUSTOMER)
    try:
        page = await admin.get("/tables/users")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>" not in page.text
    finally:
        await fetch(seeded_db, rename, old, CUSTOMER)
