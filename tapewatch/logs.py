"""Logging set-up shared by every process: text or JSON lines, each with every structured field of its record.

A structured field is anything a call passes as ``extra=`` (``symbol``, ``conn``, ``signal_id``,
``missing_minutes``, ...): every record attribute that a plain :class:`logging.LogRecord` does not have. Both
formats print all of them, so no context a call site attached is lost on the way to the journal. Times are
UTC with milliseconds (``2026-11-26T01:35:16.123Z``) in both formats.
"""

from __future__ import annotations

import json
import logging
import sys
import time

# pgserver logs every initdb/pg_ctl command line and its whole output at INFO (a wall of text on a first start)
NOISY_LOGGERS = ("httpx", "httpcore", "websockets.server", "websockets.client", "pgserver")
#: Attributes every LogRecord has (computed from a blank one, so a newer Python's additions such as
#: ``taskName`` are included), plus the two the formatters set: anything else came from ``extra=``.
STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}
#: The JSON keys of the line itself; an ``extra=`` field of the same name is written as ``extra_<name>``.
JSON_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's structured fields (those given through ``extra=``), in the order they were set."""
    return {
        k: v for k, v in record.__dict__.items() if k not in STANDARD_ATTRIBUTES and not k.startswith("_")
    }


def utc_timestamp(record: logging.LogRecord) -> str:
    """The record's creation time in UTC with milliseconds and a ``Z``: ``2026-11-26T01:35:16.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _text_value(value: object) -> str:
    """``value`` for a ``key=value`` pair: bare when it is one word, JSON-quoted otherwise (spaces, quotes,
    ``=`` or an empty string would make the line ambiguous to read or to split)."""
    text = str(value)
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-26T01:35:16.123Z LEVEL logger: message key=value ...`` (UTC), a traceback below."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # the fields go right after the message, before any traceback the base class appends
        text = super().formatMessage(record)
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in extra_fields(record).items())
        return f"{text} {pairs}" if pairs else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, every
    structured field at the top level, and ``exc`` / ``stack`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            obj[f"extra_{key}" if key in JSON_KEYS else key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send logs to stderr (stdout stays clean for ``--json`` output)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party request/connection chatter drowns our own lines at INFO.
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
