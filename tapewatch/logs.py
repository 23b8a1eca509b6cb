"""Logging set-up shared by every process: text or JSON lines, with the structured fields we use."""

from __future__ import annotations

import json
import logging
import sys

STRUCTURED_FIELDS = ("symbol", "stream", "reason", "component")
# pgserver logs every initdb/pg_ctl command line and its whole output at INFO (a wall of text on a first start)
NOISY_LOGGERS = ("httpx", "httpcore", "websockets.server", "websockets.client", "pgserver")


class TextFormatter(logging.Formatter):
    """``time level logger: message [symbol=.. stream=..]``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in STRUCTURED_FIELDS if hasattr(record, k))
        return f"{text} [{extra}]" if extra else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in STRUCTURED_FIELDS:
            if hasattr(record, key):
                obj[key] = getattr(record, key)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send logs to stderr (stdout stays clean for ``--json`` output)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party request/connection chatter drowns our own lines at INFO.
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
