"""Binance's order-book procedure over the sockets: subscribe, snapshot, diffs -> zero gaps, tops that match.

The exchange runs in manual mode and the test moves its clock only as fast as the client consumes, and the
client reads until it has processed ``sim_seconds`` of event time after the last snapshot: what is checked
does not depend on how fast the machine is next to an accelerated clock (under load, a free-running clock
left the snapshots behind the end of the run and no book synced).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from realtime.sim import SimExchange
from tapewatch.events import BookTicker, DepthUpdate
from tapewatch.parse import Frame

from .support import Books, connect, run

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ATOMUSDT", "FILUSDT"]
TICK_MS = 100  # simulated time per clock move
LEAD_MS = 1_000  # how far the clock may run ahead of the last event the client processed
PACE_WAIT_S = 1.0  # the clock moves on after this long anyway (quiet streams must not stall it)


class Pace:
    """The latest event time the client processed, and a wake-up for the clock each time it moves."""

    def __init__(self) -> None:
        self.seen_ms = 0
        self.done = False
        self._moved = asyncio.Event()

    def saw(self, frame: Frame | None) -> None:
        if frame is not None and isinstance(frame.event, (DepthUpdate, BookTicker)):
            self.seen_ms = max(self.seen_ms, frame.event.event_time)
            self._moved.set()

    async def caught_up(self, target_ms: int) -> None:
        """Return once the client has processed an event at ``target_ms`` or later (or after a while)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PACE_WAIT_S
        while self.seen_ms < target_ms and not self.done:
            self._moved.clear()
            try:
                await asyncio.wait_for(self._moved.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return


async def _sync_over_sockets(depth_suffix: str, combined: bool, sim_seconds: float) -> Books:
    books = Books()
    pace = Pace()
    async with SimExchange(port=0, symbols=20, seed=9, manual=True) as sim:
        streams = [f"{s.lower()}{depth_suffix}" for s in SYMBOLS] + [
            f"{s.lower()}@bookTicker" for s in SYMBOLS
        ]
        url = (
            f"{sim.ws_public_url}/stream?streams={'/'.join(streams)}"
            if combined
            else f"{sim.ws_public_url}/ws"
        )
        async with connect(url) as ws, httpx.AsyncClient(base_url=sim.rest_url, timeout=60) as rest:
            if not combined:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
                assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            end_ms: int | None = None  # set once every snapshot is in

            async def clock() -> None:
                while not pace.done:
                    await sim.advance(TICK_MS)
                    await pace.caught_up(sim.now_ms - LEAD_MS)

            async def read() -> None:
                while end_ms is None or pace.seen_ms < end_ms:
                    raw = await ws.recv()
                    if combined:
                        frame = books.decoder.decode_ws_frame(0, raw)
                    else:  # raw frames carry no stream name: take it from the payload
                        data = json.loads(raw)
                        name = f"{data['s'].lower()}{depth_suffix if data['e'] == 'depthUpdate' else '@bookTicker'}"
                        payload = raw.encode() if isinstance(raw, str) else raw
                        frame = books.decoder.decode_payload(0, name, payload)
                    books.feed(frame)
                    pace.saw(frame)
                pace.done = True

            async def snapshots() -> None:
                nonlocal end_ms
                for symbol in SYMBOLS:
                    target = f"/fapi/v1/depth?symbol={symbol}&limit=1000"
                    resp = await rest.get(target)
                    assert resp.status_code == 200
                    books.feed(books.decoder.decode_payload(0, f"rest:{target}", resp.content))
                end_ms = sim.now_ms + int(sim_seconds * 1000)

            await asyncio.gather(read(), snapshots(), clock())
    return books


@pytest.mark.parametrize(
    ("suffix", "combined"), [("@depth@100ms", True), ("@depth", False), ("@depth@500ms", True)]
)
def test_books_rebuilt_from_the_sockets_have_no_gaps_and_match_every_comparable_ticker(
    suffix: str, combined: bool
) -> None:
    # The time limit only stops a hung run: nothing here races the wall clock.
    books = run(_sync_over_sockets(suffix, combined, sim_seconds=30), timeout=300)
    assert books.decoder.rejected == {}
    assert books.gaps == 0 and books.resync_reasons == []
    assert {s for s, b in books.books.items() if b.synced} == set(SYMBOLS)
    assert books.mismatches == 0, books.samples()
    assert books.top_checks >= (100 if suffix == "@depth@100ms" else 10)
