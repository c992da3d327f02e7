"""Where a process serves reaches its settings (issue 17, item 4): `paysys serve` exports the
port and host it binds before the app exists, `paysys dev` gives each service the PORT of its
URL, and `paysys worker` (no HTTP) drops any PORT so the processor reports to the service URL.
The real processes: tests/e2e/test_processor_port.py."""

from __future__ import annotations

import importlib
import shlex
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from paysys.core.config import Settings, get_settings
from paysys.payments.processor import webhook_url

WEBHOOK = "/api/payments/webhooks/psp"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """PORT/HOST as the test found them afterwards (serve writes os.environ), fresh settings,
    and the SIGTERM handler serve installs put back."""
    for name in ("PORT", "HOST", "PAYMENTS_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    previous = signal.getsignal(signal.SIGTERM)
    get_settings.cache_clear()
    yield monkeypatch
    signal.signal(signal.SIGTERM, previous)
    get_settings.cache_clear()


def test_webhook_url_prefers_the_setting_then_this_process_then_the_service_url() -> None:
    assert webhook_url(Settings(port=4100)) == f"http://127.0.0.1:4100{WEBHOOK}"
    full = f"http://pay:3002{WEBHOOK}"
    assert webhook_url(Settings(payments_webhook_url=full, port=4100)) == full
    assert webhook_url(Settings(payments_webhook_url="http://pay:3002/")) == full
    # Wildcard binds are reached on loopback; a specific interface on itself.
    for host in ("0.0.0.0", "::", "", "localhost"):
        assert webhook_url(Settings(port=4100, host=host)).startswith("http://127.0.0.1:4100/")
    assert webhook_url(Settings(port=4100, host="10.1.2.3")).startswith("http://10.1.2.3:4100/")
    assert webhook_url(Settings(port=4100, host="::1")).startswith("http://[::1]:4100/")
    # No HTTP in this process (a worker): the first payments replica, never a guessed 3002.
    urls = ["http://payments-a:8000", "http://payments-b:8000"]
    settings = Settings(port=None, payments_service_url=urls)
    assert webhook_url(settings) == f"http://payments-a:8000{WEBHOOK}"


def test_serve_exports_the_bound_port_before_the_app_exists(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from paysys.cli import serve

    clean_env.setenv("PORT", "3002")  # a stray PORT loses to --port
    seen: dict[str, Any] = {}

    def fake_run(self: Any) -> None:
        # What uvicorn would do: create the app from its factory, now.
        app = importlib.import_module("paysys.payments.app").create_app()
        seen["settings"] = app.state.settings
        seen["bind"] = (self.config.host, self.config.port)

    clean_env.setattr(serve.DrainingServer, "run", fake_run)
    serve.main(["payments", "--port", "4711", "--host", "0.0.0.0"])
    assert seen["bind"] == ("0.0.0.0", 4711)
    settings = seen["settings"]
    assert (settings.port, settings.host) == (4711, "0.0.0.0")
    assert webhook_url(settings) == f"http://127.0.0.1:4711{WEBHOOK}"


def test_serve_refuses_a_port_out_of_range(clean_env: pytest.MonkeyPatch) -> None:
    from paysys.cli import serve

    with pytest.raises(SystemExit, match="not a TCP port"):
        serve.run("payments", port=70000)


def test_dev_gives_each_service_the_port_of_its_url(clean_env: pytest.MonkeyPatch) -> None:
    from paysys.cli.dev import build_manager

    clean_env.setenv("PORT", "3002")  # the shell's PORT must not reach any service
    settings = Settings(
        gateway_url="http://127.0.0.1:5000",
        auth_service_url=["http://127.0.0.1:5001"],
        payments_service_url=["http://127.0.0.1:5002", "http://127.0.0.1:5102"],
        admin_service_url=["http://127.0.0.1:5003"],
        profile_service_url=["http://127.0.0.1:5004"],
    )
    manager = build_manager(settings, reload=False, colour=False)
    expected = {"gateway": 5000, "auth": 5001, "payments": 5002, "admin": 5003, "profile": 5004}
    for name, port in expected.items():
        process = manager._processes[name]["obj"]
        command = shlex.split(process.cmd)
        assert command[command.index("--port") + 1] == str(port), name
        assert process.env["PORT"] == str(port), name


async def test_worker_ignores_a_port_it_does_not_serve(clean_env: pytest.MonkeyPatch) -> None:
    from paysys.cli import worker

    seen: list[Settings] = []

    def fake_service_workers(service: str, settings: Settings) -> Any:
        seen.append(settings)
        raise LookupError("stop here")

    clean_env.setattr(worker, "service_workers", fake_service_workers)
    given = Settings(port=3002, host="0.0.0.0", payments_service_url=["http://pay:8000"])
    with pytest.raises(LookupError):
        await worker.run_workers("payments", given)
    assert (seen[0].port, seen[0].host) == (None, None)
    assert webhook_url(seen[0]) == f"http://pay:8000{WEBHOOK}"
