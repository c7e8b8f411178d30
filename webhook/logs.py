"""Structured JSON logs; every line logged while answering a review carries its uid."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

admission_uid: contextvars.ContextVar[str] = contextvars.ContextVar("admission_uid", default="")

# kopf's per-object loggers put `settings` (its OperatorSettings: queues, locks, not JSON) and
# `k8s_skip` on every record of a handler; serialising them fails ("cannot pickle
# '_queue.SimpleQueue' object") and the line is lost. `k8s_ref`, the object, is kept as `object`
# (the key kopf's own JSON formatter uses).
_NOT_LOGGED = ("settings", "k8s_skip")
_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "k8s_ref": "object"}


class _FastJsonFormatter(JsonFormatter):
    """python-json-logger's JsonFormatter, line for line, at half the cost per record.

    Every denial writes an audit record, so formatting one is on the admission hot path. The
    library's generic `add_fields` (defaults, static fields, a `hasattr` per attribute), a
    `localtime` + `strftime` per record and a new `json.JSONEncoder` per line cost more than
    the verdict; here the fields are the same, in the same order, with the same encoder
    (`JsonEncoder`, so any value the library could write is still written), built once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fields = [(name, self._get_rename(name)) for name in self._required_fields]
        self._encode = JsonEncoder(ensure_ascii=self.json_ensure_ascii).encode
        self._date: tuple[int, str] = (-1, "")  # one tuple: replaced atomically

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """`logging.Formatter.formatTime`, with the date part reused within one second."""
        msec_format = self.default_msec_format
        if datefmt is not None or msec_format is None or self.converter is not time.localtime:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, stamp = self._date
        if second != cached:
            stamp = time.strftime(self.default_time_format, time.localtime(second))
            self._date = (second, stamp)
        return msec_format % (stamp, record.msecs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        if self.defaults or self.static_fields or self.timestamp or self.rename_fields_keep_missing:
            super().add_fields(log_data, record, message_dict)  # options this app does not use
            return
        values = record.__dict__
        for name, renamed in self._fields:
            log_data[renamed] = values.get(name)
        rename = self.rename_fields
        for key, value in message_dict.items():
            log_data[rename.get(key, key)] = value
        skip = self._skip_fields
        for key in [key for key in values if key not in skip]:  # the extras, in record order
            if not (isinstance(key, str) and key.startswith("_")):
                log_data[rename.get(key, key)] = values[key]

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        if self.json_encoder is not JsonEncoder or self.json_indent is not None:
            return super().jsonify_log_record(log_data)
        return self._encode(log_data)


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
        formatter = _FastJsonFormatter(
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
