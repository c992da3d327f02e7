"""`paysys api ...`: call the API through the gateway (the seed's `test:api:*` scripts).

`register` and `login` store the access token in `.paysys/token`; the payments commands send it.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from paysys.cli.infra import state_dir
from paysys.cli.typerapp import typer_app
from paysys.core.config import Settings

console = Console(width=140)
app = typer_app(
    help="Call the API through the gateway: register, login, list and create payments.",
    no_args_is_help=True,
)

SEED_PASSWORD = "TestPassword123!"
GatewayOption = typer.Option(None, "--url", help="Gateway base URL (default: GATEWAY_URL)")


def token_file() -> Path:
    return state_dir() / "token"


def save_token(token: str) -> None:
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)


def load_token() -> str:
    path = token_file()
    if not path.exists():
        console.print("[red]no token yet[/red]: run `paysys api login` (or `register`) first")
        raise typer.Exit(1)
    return path.read_text().strip()


def call(
    method: str,
    path: str,
    base_url: str | None,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    url = (base_url or Settings().gateway_url).rstrip("/") + path
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.request(method, url, json=body, params=params, headers=sent, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}[/red]: {exc!r} (is `paysys dev` running?)")
        raise typer.Exit(1) from exc
    try:
        payload: dict[str, Any] = response.json()
    except ValueError:
        payload = {"success": False, "raw": response.text}
    colour = "green" if response.is_success else "red"
    console.print(f"[{colour}]{method} {path} → {response.status_code}[/{colour}]")
    console.print_json(json.dumps(payload))
    if not response.is_success:
        raise typer.Exit(1)
    return payload


def _store_from(payload: dict[str, Any]) -> None:
    token = (payload.get("data") or {}).get("accessToken")
    if token:
        save_token(token)
        console.print(f"access token saved to {token_file()}")


@app.command()
def register(
    email: str = typer.Option(None, help="Default: a fresh dev+<random>@example.com"),
    password: str = typer.Option(SEED_PASSWORD, help="Password (policy: 12+ chars, mixed)"),
    name: str = typer.Option("Test User", help="Display name"),
    role: str = typer.Option(None, help="CUSTOMER (default) or VENDOR"),
    url: str = GatewayOption,
) -> None:
    """POST /api/auth/register (the seed's test:api:register) and keep the token."""
    body: dict[str, Any] = {
        "email": email or f"dev+{secrets.token_hex(4)}@example.com",
        "password": password,
        "name": name,
    }
    if role:
        body["role"] = role
    _store_from(call("POST", "/api/auth/register", url, body=body))


@app.command()
def login(
    email: str = typer.Option("customer@example.com", help="Default: the seeded customer"),
    password: str = typer.Option(SEED_PASSWORD, help="Default: the seed password"),
    url: str = GatewayOption,
) -> None:
    """POST /api/auth/login (the seed's test:api:login) and keep the token."""
    _store_from(call("POST", "/api/auth/login", url, body={"email": email, "password": password}))


@app.command("payments-list")
def payments_list(
    page: int = typer.Option(1, help="Page (1-based)"),
    limit: int = typer.Option(10, help="Items per page (1-100)"),
    status: str = typer.Option(None, help="Filter by status"),
    url: str = GatewayOption,
) -> None:
    """GET /api/payments with the stored token (the seed's test:api:payments:list)."""
    params: dict[str, Any] = {"page": page, "limit": limit}
    if status:
        params["status"] = status
    call("GET", "/api/payments", url, params=params, token=load_token())


@app.command("payments-create")
def payments_create(
    amount: str = typer.Option("100.00", help="Decimal string in the currency's minor units"),
    currency: str = typer.Option("USD", help="ISO 4217 code"),
    type_: str = typer.Option("instant", "--type", help="instant, scheduled or recurring"),
    description: str = typer.Option("Test payment from paysys api", help="1-500 chars"),
    recipient_email: str = typer.Option("vendor@example.com", help="Recipient's email"),
    idempotency_key: str = typer.Option(None, help="Idempotency-Key header"),
    url: str = GatewayOption,
) -> None:
    """POST /api/payments with the stored token (the seed's test:api:payments:create)."""
    body = {
        "amount": amount,
        "currency": currency,
        "type": type_,
        "description": description,
        "recipientEmail": recipient_email,
    }
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    call("POST", "/api/payments", url, body=body, token=load_token(), headers=headers)
