"""`paysys db studio` in a real browser: headless Chromium (Debian's `chromium`, which
`make test` installs when missing) driven by playwright against the real studio process.

A person signs in as the seeded admin, opens the users table and a user, and finds no password
hash anywhere, nor an edit form on that read-only table; a customer and a throttled sign-in are
refused."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support.cli import PAYSYS, http_ok, seeded_database, stop_process, wait_for
from tests.support.servers import free_port

PASSWORD = "TestPassword123!"
STEP_TIMEOUT_MS = 20_000


def chromium_path() -> str:
    found = shutil.which("chromium")
    assert found, "Debian's chromium is missing: `make browser` (or apt-get install chromium)"
    return found


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real `paysys db studio` process on a seeded scratch database."""
    port = free_port()
    log = tmp_path_factory.mktemp("studio") / "studio.log"
    with seeded_database("studio_browser") as url, log.open("wb") as out:
        proc = subprocess.Popen(
            [*PAYSYS, "db", "studio", "--port", str(port)],
            env={**os.environ, "DATABASE_URL": url},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: http_ok(f"{base}/login"), 60, "studio up")
            yield base
        finally:
            assert stop_process(proc, signal.SIGINT) == 0, Path(log).read_text()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    return page


async def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/")  # not signed in: the studio sends the browser to its sign-in
    await expect(page).to_have_url(f"{base}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_an_admin_browses_users_without_seeing_a_password_hash(
    browser: Browser, studio_url: str
) -> None:
    page = await new_page(browser)
    await sign_in(page, studio_url, "admin@example.com")
    await expect(page.get_by_role("heading", name="Tables")).to_be_visible()

    await page.get_by_role("link", name="users", exact=True).click()
    await expect(page.get_by_role("heading", name="users")).to_be_visible()
    headers = await page.locator("th").all_inner_texts()
    assert "email" in headers and "role" in headers
    assert "password_hash" not in headers
    listing = await page.content()
    assert "$argon2" not in listing and "password_hash" not in listing

    admin_row = page.get_by_role("row").filter(has_text="admin@example.com")
    await admin_row.get_by_role("link").first.click()
    await expect(
        page.get_by_text("read-only: changes to this table go through the API")
    ).to_be_visible()
    await expect(page.get_by_role("cell", name="admin@example.com")).to_be_visible()
    detail = await page.content()
    assert "$argon2" not in detail and "password_hash" not in detail
    # A read-only table: no edit link, no form other than "Sign out".
    assert await page.get_by_role("link", name=re.compile("Edit")).count() == 0
    assert await page.locator("textarea").count() == 0
    assert await page.locator("form").count() == 1

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{studio_url}/login")


async def test_a_customer_and_a_throttled_sign_in_are_refused(
    browser: Browser, studio_url: str
) -> None:
    page = await new_page(browser)
    await sign_in(page, studio_url, "customer@example.com")
    await expect(page.get_by_role("alert")).to_have_text("Only ADMIN accounts may use the studio")

    for _ in range(5):  # the API login's rule: 5 failures per account and address
        await sign_in(page, studio_url, "vendor@example.com", "Wrong-Password-1")
        await expect(page.get_by_role("alert")).to_have_text("Invalid email or password")
    await sign_in(page, studio_url, "vendor@example.com")  # the right password waits too
    await expect(page.get_by_role("alert")).to_contain_text("Too many failed login attempts")
