"""`paysys check health [service]`: readiness of the running services, as a table."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from paysys import SERVICES
from paysys.cli.dev import service_url
from paysys.cli.typerapp import typer_app
from paysys.core.config import Settings

console = Console(width=140)
app = typer_app(help="Checks against running services.", no_args_is_help=True)


def probe(name: str, base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET /health/ready of one service → {service, url, healthy, status, detail, latencyMs}.

    Healthy means ready, exactly as a Kubernetes readiness probe decides (HTTP 200): a service
    with Redis down is `degraded` and still ready; only 503 `not_ready` (its database down) or
    no answer is not."""
    url = base_url.rstrip("/") + "/health/ready"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return {
            "service": name,
            "url": url,
            "healthy": False,
            "status": "unreachable",
            "detail": type(exc).__name__,
            "latencyMs": None,
        }
    elapsed = round(response.elapsed.total_seconds() * 1000, 1)
    try:
        data = response.json().get("data") or {}
    except ValueError:
        data = {}
    checks = data.get("checks") or {}
    failing = [key for key, value in checks.items() if (value or {}).get("status") != "up"]
    healthy = response.status_code == 200
    detail = (
        ", ".join(f"{key} down" for key in failing)
        if failing
        else ("all checks up" if healthy else f"HTTP {response.status_code}")
    )
    return {
        "service": name,
        "url": url,
        "healthy": healthy,
        "status": data.get("status") or f"HTTP {response.status_code}",
        "detail": detail,
        "latencyMs": elapsed,
    }


def probe_all(settings: Settings, names: list[str]) -> list[dict[str, Any]]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = [pool.submit(probe, name, service_url(settings, name)) for name in names]
        return [future.result() for future in futures]


@app.command()
def health(
    service: str = typer.Argument(None, help=f"One of {', '.join(SERVICES)} (default: all)"),
) -> None:
    """Call /health/ready of each service; exits 1 if any is not ready (degraded is ready)."""
    if service is not None and service not in SERVICES:
        console.print(f"[red]unknown service {service!r}[/red]; choose from {', '.join(SERVICES)}")
        raise typer.Exit(2)
    names = [service] if service else list(SERVICES)
    results = probe_all(Settings(), names)
    table = Table(title="service health")
    for column in ("service", "url", "status", "latency ms", "detail"):
        table.add_column(column)
    for row in results:
        colour = (
            "red" if not row["healthy"] else ("yellow" if row["status"] == "degraded" else "green")
        )
        latency = "-" if row["latencyMs"] is None else str(row["latencyMs"])
        table.add_row(
            row["service"],
            row["url"],
            f"[{colour}]{row['status']}[/{colour}]",
            latency,
            row["detail"],
        )
    console.print(table)
    healthy = sum(1 for row in results if row["healthy"])
    degraded = sum(1 for row in results if row["healthy"] and row["status"] == "degraded")
    console.print(
        f"{healthy}/{len(results)} healthy" + (f", {degraded} degraded" if degraded else "")
    )
    if healthy != len(results):
        raise typer.Exit(1)
