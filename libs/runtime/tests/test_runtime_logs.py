"""Structured logs: one parseable JSON object a line, with extra fields and the active span."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from pushwarden.runtime.logs import configure_logging
from pushwarden.runtime.settings import LogSettings


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_a_line_with_extra_fields_is_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="INFO", format="json"), service="consent")
    logging.getLogger("pushwarden.test").warning(
        "call failed: %s", "boom", extra={"error_id": "e-42", "method": "/x.Y/Z", "count": 3}
    )
    [line] = json_lines(capsys)
    assert line["level"] == "WARNING"
    assert line["service"] == "consent"
    assert line["logger"] == "pushwarden.test"
    assert line["message"] == "call failed: boom"
    assert (line["error_id"], line["method"], line["count"]) == ("e-42", "/x.Y/Z", 3)
    assert line["time"].endswith("Z")
    assert "trace_id" not in line


def test_the_active_span_is_on_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(format="json"), service="delivery")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("rpc") as span:
        logging.getLogger("t").info("inside")
        context = span.get_span_context()
    [line] = json_lines(capsys)
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_configuring_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(format="json"), service="consent")
    configure_logging(LogSettings(format="json"), service="consent")
    logging.getLogger("t").info("once")
    assert [line["message"] for line in json_lines(capsys)] == ["once"]


def test_level_filters_and_exceptions_stay_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings(level="WARNING", format="json"), service="consent")
    log = logging.getLogger("t")
    log.info("hidden")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("failed", extra={"error_id": "e-1", "payload": object()})
    [line] = json_lines(capsys)
    assert line["message"] == "failed"
    assert "ValueError: bad" in line["exception"]
    assert line["payload"].startswith("<object object")


def test_text_format_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="DEBUG", format="text"), service="scheduler")
    logging.getLogger("pushwarden.x").debug("tick", extra={"due": 4})
    err = capsys.readouterr().err
    assert err.endswith(" DEBUG    scheduler pushwarden.x: tick due=4\n")
