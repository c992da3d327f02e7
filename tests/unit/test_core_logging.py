"""core.logging: no secret reaches a log line; tracebacks carry no local variables."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from paysys.core.logging import (
    REDACTED,
    RedactingFilter,
    configure_logging,
    get_logger,
    redact_text,
)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjMiLCJ0eXBlIjoiYWNjZXNzIn0"
    ".c2lnbmF0dXJlLXNpZ25hdHVyZQ"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"GET /ws?token={JWT}", JWT),
        ("GET /api/events/stream?types=x&token=opaque-123&page=1", "opaque-123"),
        ("login with password=Hunter2-Hunter2 failed", "Hunter2-Hunter2"),
        ("?access_token=abc.def", "abc.def"),
        (f"Authorization: Bearer {JWT}", JWT),
        ("Bearer some-opaque-token", "some-opaque-token"),
        ("postgresql://paysys:s3cr3t-pw@db:5432/paysys", "s3cr3t-pw"),
        (f"header {JWT} in the middle", JWT),
    ],
)
def test_redact_text_masks_every_kind_of_secret(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_redact_text_keeps_ordinary_text() -> None:
    text = "GET /api/payments?page=2&limit=10 200 in 3.1 ms (user 8c0e-41aa)"
    assert redact_text(text) == text


def test_structlog_lines_mask_secret_fields_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("t", "INFO", json_output=True)
    get_logger("t").info(
        "attempt",
        password="Hunter2-Hunter2",
        newPassword="Other-Secret-9",
        body={"refreshToken": JWT, "email": "a@example.com", "nested": [{"apiKey": "k-1"}]},
        path=f"/ws?token={JWT}",
    )
    line = capsys.readouterr().err
    for secret in ("Hunter2-Hunter2", "Other-Secret-9", JWT, "k-1"):
        assert secret not in line
    assert "a@example.com" in line  # ordinary values stay


def test_tracebacks_have_no_locals(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("t", "INFO", json_output=False)

    def fail() -> None:
        password = "Local-Secret-42"  # noqa: F841 - the local a rich traceback would show
        raise ValueError("boom")

    try:
        fail()
    except ValueError:
        get_logger("t").exception("failed")
    err = capsys.readouterr().err
    assert "ValueError: boom" in err
    assert "Local-Secret-42" not in err


def test_standard_library_records_are_redacted() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "%s - %s", ("x", f"/ws?token={JWT}"), None
    )
    assert RedactingFilter().filter(record)
    assert JWT not in record.getMessage()
    try:
        raise RuntimeError(f"bad token {JWT}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    RedactingFilter().filter(record)
    assert record.exc_text and JWT not in record.exc_text and "RuntimeError" in record.exc_text


def test_cli_crash_shows_no_locals(tmp_path: object) -> None:
    """Typer with rich prints each frame's locals on a crash by default; paysys's apps do not."""
    code = (
        "from paysys.cli.typerapp import typer_app\n"
        "app = typer_app()\n"
        "@app.command()\n"
        "def go() -> None:\n"
        "    password = 'Cli-Local-Secret-7'\n"
        "    raise RuntimeError('boom')\n"
        "app()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "boom" in result.stderr + result.stdout
    assert "Cli-Local-Secret-7" not in result.stderr + result.stdout


def test_logging_before_configuration_is_safe_too() -> None:
    """A process that logs without calling configure_logging (CLI, seeds) is just as safe."""
    code = (
        "from paysys.core.logging import get_logger\n"
        "def fail():\n"
        "    password = 'Struct-Local-9'\n"
        "    raise ValueError('boom')\n"
        "try:\n"
        "    fail()\n"
        "except ValueError:\n"
        f"    get_logger('x').exception('failed', path='/ws?token={JWT}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    output = result.stderr + result.stdout
    assert "ValueError: boom" in output
    assert "Struct-Local-9" not in output
    assert JWT not in output
