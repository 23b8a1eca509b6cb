"""The consumer queue (drops counted, markers never lost) and the wire helpers of the control protocol."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from realtime.ws_delivery import FrameQueue, Received, StreamsStarted, StreamsStopped
from realtime.ws_protocol import (
    control_message,
    decode_list_result,
    describe_error,
    has_error,
    incoming_decoder,
)
from tapewatch.streams import combined_url


def test_full_queue_drops_and_counts_frames_but_keeps_markers() -> None:
    async def main() -> None:
        queue = FrameQueue(2)
        started = StreamsStarted(("a@aggTrade",), "market-0#1", "connect")
        queue.put_marker(started)
        assert queue.put_frame(Received(1, "a@aggTrade", b"{}"))
        assert queue.put_frame(Received(2, "a@aggTrade", b"{}"))
        assert not queue.put_frame(Received(3, "a@aggTrade", b"{}"))
        assert not queue.put_frame(Received(4, "b@aggTrade", b"{}"))
        stopped = StreamsStopped(("a@aggTrade",), "market-0#1", "error")
        queue.put_marker(stopped)  # never dropped, even when full
        assert (queue.drops, dict(queue.drops_by_stream)) == (2, {"a@aggTrade": 1, "b@aggTrade": 1})
        assert queue.frames_queued() == 2 and queue.qsize() == 4
        got = [await queue.get() for _ in range(4)]
        assert got == [started, Received(1, "a@aggTrade", b"{}"), Received(2, "a@aggTrade", b"{}"), stopped]
        assert queue.put_frame(Received(5, "a@aggTrade", b"{}"))  # room again
        assert queue.get_nowait() == Received(5, "a@aggTrade", b"{}")
        with pytest.raises(asyncio.QueueEmpty):
            queue.get_nowait()

    asyncio.run(main())


def test_queue_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FrameQueue(0)


def test_combined_url_and_control_messages() -> None:
    assert (
        combined_url("wss://fstream.binance.com/public/", ["btcusdt@depth@100ms", "btcusdt@bookTicker"])
        == "wss://fstream.binance.com/public/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker"
    )
    assert msgspec.json.decode(control_message("SUBSCRIBE", ["a@aggTrade", "b@aggTrade"], 7)) == {
        "method": "SUBSCRIBE",
        "params": ["a@aggTrade", "b@aggTrade"],
        "id": 7,
    }


def test_frames_are_classified_without_touching_the_payload() -> None:
    payload = b'{"e":"aggTrade","p":"0.00001000", "q" : "1"}'
    data = incoming_decoder.decode(b'{"stream":"a@aggTrade","data":' + payload + b"}")
    assert data.stream == "a@aggTrade" and bytes(data.data) == payload and data.id is None

    ok = incoming_decoder.decode(b'{"result":null,"id":3}')
    assert ok.stream is None and ok.id == 3 and not has_error(ok)

    refused = incoming_decoder.decode(b'{"error":{"code":2,"msg":"Invalid request: too many"},"id":4}')
    assert has_error(refused) and describe_error(refused) == "code 2: Invalid request: too many"
    odd = incoming_decoder.decode(b'{"error":"boom","id":5}')
    assert has_error(odd) and describe_error(odd) == '"boom"'
    # the shape of the USD-M documentation's error table: a top-level code (0 included) and msg
    documented = incoming_decoder.decode(b'{"code":0,"msg":"Unknown property","id":8}')
    assert has_error(documented) and describe_error(documented) == "code 0: Unknown property"

    listed = incoming_decoder.decode(b'{"result":["a@aggTrade","b@trade"],"id":6}')
    assert decode_list_result(listed) == ["a@aggTrade", "b@trade"]
    assert decode_list_result(ok) is None

    for bad in (b"not json", b"[1,2]", b'{"stream": 5}'):
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            incoming_decoder.decode(bad)
