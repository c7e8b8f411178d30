"""JSON log lines: every record becomes one JSON object, whatever its `extra` carries."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import kopf
import pytest

from webhook import logs


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What `logs.configure()` writes (its handler pointed at a buffer); root restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure(json_format=True)
    out = io.StringIO()
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_kopf_handler_record_is_one_json_line_naming_its_object(
    json_lines: io.StringIO,
) -> None:
    """kopf's per-object loggers add `settings` (not serialisable) and `k8s_ref` to records."""
    ref = {"apiVersion": "imagegate.dev/v1alpha1", "kind": "ImagePolicy", "name": "default"}
    extra = {"settings": kopf.OperatorSettings(), "k8s_skip": False, "k8s_ref": ref}
    logging.getLogger("kopf.objects").info("Timer 'audit_tick' succeeded.", extra=extra)

    (line,) = json_lines.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "Timer 'audit_tick' succeeded."
    assert record["logger"] == "kopf.objects"
    assert record["object"] == ref
    assert "settings" not in record
    assert "k8s_skip" not in record
