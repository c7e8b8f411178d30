"""Structured JSON logs; every line logged while answering a review carries its uid."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

admission_uid: contextvars.ContextVar[str] = contextvars.ContextVar("admission_uid", default="")

# kopf's per-object loggers put `settings` (its OperatorSettings: queues, locks, not JSON) and
# `k8s_skip` on every record of a handler; serialising them fails ("cannot pickle
# '_queue.SimpleQueue' object") and the line is lost. `k8s_ref`, the object, is kept as `object`
# (the key kopf's own JSON formatter uses).
_NOT_LOGGED = ("settings", "k8s_skip")
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "k8s_ref": "object"}


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
        fields: Any = dict(_RENAMED)
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields=fields,
            reserved_attrs=[*RESERVED_ATTRS, *_NOT_LOGGED],
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry request is noise
