"""Structured JSON logs; every line logged while answering a review carries its uid."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

admission_uid: contextvars.ContextVar[str] = contextvars.ContextVar("admission_uid", default="")


class _AdmissionUid(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        uid = admission_uid.get()
        if uid:
            record.uid = uid
        return True


def configure(level: str = "INFO", json_format: bool = True) -> None:
    """Log to stderr: JSON lines for machines (the default for `serve`), or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_AdmissionUid())
    formatter: logging.Formatter
    if json_format:
        fields: Any = {"asctime": "time", "levelname": "level", "name": "logger"}
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields=fields
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request is noise
