"""Structured logging on stderr: one JSON object a line (or text for people).

Every line carries time, level, service, logger and message, plus whatever the call passed
in ``extra=`` (``error_id``, ``method``...) and, when an OpenTelemetry span is active, its
``trace_id`` and ``span_id``, so a log line and a trace can be joined.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from pushwarden.runtime.settings import LogSettings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}

_HANDLER_MARK: Final = "_pushwarden_handler"


def _no_span() -> dict[str, str]:
    return {}


def _load_span_reader() -> Callable[[], dict[str, str]]:
    try:
        from opentelemetry import trace
    except ImportError:  # telemetry is optional for the logs
        return _no_span

    def current_span_ids() -> dict[str, str]:
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return {}
        return {
            "trace_id": format(span_context.trace_id, "032x"),
            "span_id": format(span_context.span_id, "016x"),
        }

    return current_span_ids


_current_span_ids: Final = _load_span_reader()


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_fields(record: logging.LogRecord, service: str) -> dict[str, Any]:
    """The fields of one log line, in output order."""
    fields: dict[str, Any] = {
        "time": _timestamp(record),
        "level": record.levelname,
        "service": service,
        "logger": record.name,
        "message": record.getMessage(),
    }
    fields.update(_current_span_ids())
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values JSON cannot hold are written with ``str()``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        fields = record_fields(record, self.service)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json.dumps(fields, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL service logger: message key=value ...`` for people at a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as text; extra fields follow as ``key=value``."""
        fields = record_fields(record, self.service)
        head = (
            f"{fields.pop('time')} {fields.pop('level'):<8} {fields.pop('service')} "
            f"{fields.pop('logger')}: {fields.pop('message')}"
        )
        tail = "".join(f" {key}={value}" for key, value in fields.items())
        line = head + tail
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_FORMATTERS: Final[dict[str, Callable[[str], logging.Formatter]]] = {
    "json": JsonFormatter,
    "text": TextFormatter,
}


def configure_logging(settings: LogSettings, service: str) -> logging.Handler:
    """Send every log record to stderr in ``settings.format`` at ``settings.level``.

    Idempotent: a second call replaces the handler an earlier call installed instead of
    adding another, so nothing is logged twice. Returns the installed handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(_FORMATTERS[settings.format](service))
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    return handler
