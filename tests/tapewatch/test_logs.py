"""The log formats: every ``extra=`` field printed (text and JSON), UTC timestamps with milliseconds."""

from __future__ import annotations

import json
import logging
import re
import sys

from tapewatch.logs import JsonFormatter, TextFormatter

# 2026-11-26 01:35:16.123 UTC
CREATED = 1_795_656_916.123


def _record(extra: dict[str, object] | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.getLogger("tapewatch.test").makeRecord(
        "tapewatch.test", logging.WARNING, __file__, 1, "notifier %s failed", ("telegram",), exc_info,
        extra=extra,
    )  # fmt: skip
    record.created = CREATED
    record.msecs = 123.0
    return record


EXTRA: dict[str, object] = {
    "conn": "primary",
    "signal_id": "3f1c",
    "missing_minutes": 7,
    "endpoint": "/fapi/v1/klines",
    "pid": 4242,
    "path": "/srv/var/capture/a b.jsonl.gz",
    "symbol": "BTCUSDT",
}


def test_the_text_line_has_every_extra_field_after_the_message_in_utc() -> None:
    line = TextFormatter().format(_record(EXTRA))
    assert line == (
        "2026-11-26T01:35:16.123Z WARNING tapewatch.test: notifier telegram failed conn=primary signal_id=3f1c "
        'missing_minutes=7 endpoint=/fapi/v1/klines pid=4242 path="/srv/var/capture/a b.jsonl.gz" '
        "symbol=BTCUSDT"
    )


def test_the_text_line_without_extras_is_the_message_and_the_traceback_follows_the_fields() -> None:
    assert (
        TextFormatter().format(_record())
        == "2026-11-26T01:35:16.123Z WARNING tapewatch.test: notifier telegram failed"
    )
    lines = TextFormatter().format(_record({"conn": "backup"}, exc=True)).splitlines()
    assert lines[0].endswith("notifier telegram failed conn=backup")
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: boom"


def test_the_json_line_has_every_extra_field_and_a_utc_millisecond_timestamp() -> None:
    obj = json.loads(JsonFormatter().format(_record({**EXTRA, "level": "x", "when": object()}, exc=True)))
    assert obj["ts"] == "2026-11-26T01:35:16.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["ts"])
    assert (obj["level"], obj["logger"], obj["msg"]) == (
        "WARNING",
        "tapewatch.test",
        "notifier telegram failed",
    )
    assert {k: obj[k] for k in EXTRA} == EXTRA
    assert obj["extra_level"] == "x"  # a field named like a key of the line does not overwrite it
    assert obj["when"].startswith("<object object")  # not JSON: its str()
    assert obj["exc"].endswith("RuntimeError: boom")
    # nothing of the LogRecord's own attributes leaks in
    assert set(obj) == {"ts", "level", "logger", "msg", "exc", "extra_level", "when", *EXTRA}
