"""structlog set-up: one line per event on stderr, stdlib loggers (aiohttp, kubernetes_asyncio)
too — JSON lines when stderr is not a terminal (a pod's log, a file, a pipe), readable console
lines when it is one.

Every line caused by an HTTP request carries its ``request_id``: the API's outermost
middleware binds it in structlog's context variables (``merge_contextvars`` below), and tasks
started while handling the request (pod creates, label patches) copy that context.
Heartbeats, probes and scrapes log at debug only (:mod:`rmd.api.access_log`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (test capture swaps it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


# A credential in any text a log line carries: "Bearer <token>" (an Authorization header
# echoed in an error, a raw request aiohttp could not parse) or "token=<value>".
_CREDENTIAL = re.compile(r"(?i)\b(bearer\s+|token=)[^\s\"'\\,;&]+")
REDACTED = "[redacted]"
# Tracebacks as data, without the frames' local variables: those hold request headers,
# tokens and pod environments.
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _CREDENTIAL.sub(lambda m: m.group(1) + REDACTED, value)
    if isinstance(value, bytes):
        return _redact(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_credentials(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no bearer token reaches a log line, whatever field or traceback
    carries it (after ``dict_tracebacks``, so exception texts are covered too)."""
    for key, value in list(event.items()):
        event[key] = _redact(value)
    return event


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def configure_logging(
    *, level: str = "info", json: bool | None = None, library_level: str = "debug"
) -> None:
    """structlog events from ``level`` up; stdlib loggers' records (aiohttp,
    kubernetes_asyncio) from ``level`` or ``library_level``, whichever is higher.
    ``json`` None: JSON lines unless stderr is a terminal."""
    if json is None:
        json = not stderr_is_terminal()
    numeric = _LEVELS.get(level.lower(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, _DICT_TRACEBACKS, redact_credentials, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _DICT_TRACEBACKS,
                redact_credentials,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, _LEVELS.get(library_level.lower(), logging.DEBUG)))
    # aiohttp's access log is replaced by our own structured one.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
