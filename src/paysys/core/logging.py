"""structlog setup: JSON lines in production, console in development; request id on every line.

Secrets never reach a log line (ASVS V7.1.1): every line, structlog's and the standard library's
(uvicorn, SQLAlchemy, …), passes `redact_text`/`_redact` on its way out, which masks bearer
tokens, JWTs, `token=`/`password=`-style query parameters and any field whose name says it
holds a secret. Tracebacks are plain (no local variables: a frame can hold a password).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from paysys.core.context import request_id_var


def _add_request_id(
    _: object, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    rid = request_id_var.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


REDACTED = "[REDACTED]"
# A field name that says it holds a secret (password, newPassword, accessToken, refresh_token,
# secret, authorization, cookie, apiKey …).
_SECRET_KEY = re.compile(
    r"pass(word)?|token|secret|authori[sz]ation|cookie|api[-_]?key|credential", re.IGNORECASE
)
_SECRET_TEXT = [
    # a JWT anywhere (three base64url parts, the first two JSON objects: "eyJ")
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), REDACTED),
    # `Bearer <anything>`
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1" + REDACTED),
    # secret-looking query or form parameters: ?token=…, &password=…, access_token=…
    (
        re.compile(r"(?i)([?&;\s]?[\w.-]*(?:token|password|secret|api[-_]?key)[\w.-]*=)[^&\s\"']*"),
        r"\1" + REDACTED,
    ),
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
]


def redact_text(text: str) -> str:
    """`text` with every secret-looking part masked (tokens, passwords in queries or URLs)."""
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


def _redact(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key):
            event[key] = REDACTED
        else:
            event[key] = _redact_value(value)
    return event


class RedactingFilter(logging.Filter):
    """The same masking for standard-library records (uvicorn, SQLAlchemy, asyncio …): the
    message (and traceback text) is formatted once here, redacted, and frozen."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def _install_redaction() -> None:
    """On every handler configured so far: the root's and those uvicorn gives its own loggers
    (they do not propagate to the root)."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


class _CurrentStderr:
    """Whatever `sys.stderr` is at the moment of writing (test capture swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_structlog(level: str, json_output: bool) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        # Plain tracebacks: rich's formatter (structlog's default when rich is installed)
        # prints each frame's local variables.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # The traceback becomes text first, so _redact sees it too.
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )


def configure_logging(service: str, level: str = "INFO", json_output: bool = False) -> None:
    _configure_structlog(level, json_output)
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(name)s %(message)s")
    _install_redaction()
    # uvicorn's own access log duplicates ours (which carries the request id).
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


# Safe from the first import: a process that logs before (or without) `configure_logging` (CLI
# commands, seeds, tools) gets the same redaction and plain tracebacks, not structlog's
# defaults.
if not structlog.is_configured():
    _configure_structlog("INFO", json_output=False)
