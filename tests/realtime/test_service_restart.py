"""A depth-stream restart reaches the engine live as it does in replay, so ``resyncs_in_window`` dates the
resync at the restart in both (the capture's ``control:depth_restart`` line goes through the engine in replay)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from realtime.service import FeedService
from realtime.ws_delivery import StreamsStarted
from tapewatch.parse import FrameDecoder
from tapewatch.settings import load_settings
from tests.realtime.test_status_view import _Pool, _Rest
from tests.tapewatch.test_depth_restart import SYMBOL, restart_capture


def test_a_live_depth_restart_is_noted_by_the_engine_where_replay_notes_it() -> None:
    lines = restart_capture(with_marker=True)
    before = lines[: lines.index(next(line for line in lines if b"control:depth_restart" in line))]
    service = FeedService(load_settings(), rest=cast(Any, _Rest()), pool=cast(Any, _Pool()))

    async def live() -> None:
        service.set_universe([SYMBOL])
        await asyncio.sleep(0)  # let the history task fail quietly
        decoder = FrameDecoder()
        for line in before:
            frame = decoder.decode_capture_line(line)
            assert frame is not None
            service._apply(frame)  # the path every received frame and snapshot takes
        assert service.market.symbols[SYMBOL].book.resyncs == 0
        service.handle(StreamsStarted((f"{SYMBOL.lower()}@depth@100ms",), "public-0#2", "reconnect"))

    asyncio.run(live())
    now = service.market.now_ms
    assert service.market.symbols[SYMBOL].book.resyncs == 1
    # the engine saw the resync when the restart happened, not at the next snapshot
    assert service.engine._incidents[SYMBOL].counts(now) == (0, 1)
