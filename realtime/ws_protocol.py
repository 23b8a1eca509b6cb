"""Binance's combined-stream websocket protocol, without I/O: URLs, control messages, frame classification.

A combined-stream connection ``<base>/stream?streams=a/b/c`` carries two kinds of text frames:
data ``{"stream": "<name>", "data": {...}}`` and replies to our control messages
``{"result": null, "id": 7}`` or an error: ``{"error": {"code": 2, "msg": "..."}, "id": 7}`` (what the servers
send) or ``{"code": 0, "msg": "Unknown property", "id": 7}`` (the shape of the USD-M documentation's error
table); both are taken as a refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

Method = Literal["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"]


class Incoming(msgspec.Struct, frozen=True, gc=False):
    """Any frame on a combined-stream connection. ``data``/``result``/``error`` stay undecoded;
    an absent one is an empty :class:`msgspec.Raw`."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    id: int | None = None
    result: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()
    code: int | None = None
    msg: str | None = None


class _Control(msgspec.Struct, frozen=True):
    method: str
    params: list[str]
    id: int


class _ErrorBody(msgspec.Struct, frozen=True):
    code: int | None = None
    msg: str = ""


incoming_decoder = msgspec.json.Decoder(Incoming)
_list_decoder = msgspec.json.Decoder(list[str])
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_encoder = msgspec.json.Encoder()


def control_message(method: Method, params: Sequence[str], request_id: int) -> str:
    """The JSON text of a control message, e.g. ``{"method":"SUBSCRIBE","params":[...],"id":1}``."""
    return _encoder.encode(_Control(method, list(params), request_id)).decode()


def has_error(frame: Incoming) -> bool:
    """True when a reply carries a non-null ``error``, or a top-level ``code`` (the documented shape)."""
    return (len(frame.error) > 0 and bytes(frame.error) != b"null") or (
        frame.stream is None and frame.code is not None
    )


def describe_error(frame: Incoming) -> str:
    """``code N: message`` of an error reply (the raw text when it is not Binance's usual shape)."""
    if frame.code is not None and len(frame.error) == 0:
        return f"code {frame.code}: {frame.msg or ''}"
    raw = bytes(frame.error)
    try:
        body = _error_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return raw.decode(errors="replace")[:200]
    return f"code {body.code}: {body.msg}"


def decode_list_result(frame: Incoming) -> list[str] | None:
    """The stream names of a ``LIST_SUBSCRIPTIONS`` reply, or None when the result is not a list."""
    try:
        return _list_decoder.decode(frame.result)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
