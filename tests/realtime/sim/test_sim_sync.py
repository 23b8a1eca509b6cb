"""Binance's order-book procedure over the sockets: subscribe, snapshot, diffs -> zero gaps, tops that match."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from realtime.sim import SimExchange

from .support import Books, connect, run

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ATOMUSDT", "FILUSDT"]


async def _sync_over_sockets(depth_suffix: str, combined: bool, sim_seconds: float) -> Books:
    books = Books()
    async with SimExchange(port=0, symbols=20, speed=20, seed=9) as sim:
        streams = [f"{s.lower()}{depth_suffix}" for s in SYMBOLS] + [
            f"{s.lower()}@bookTicker" for s in SYMBOLS
        ]
        url = (
            f"{sim.ws_public_url}/stream?streams={'/'.join(streams)}"
            if combined
            else f"{sim.ws_public_url}/ws"
        )
        async with connect(url) as ws, httpx.AsyncClient(base_url=sim.rest_url) as rest:
            if not combined:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
                assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            end = sim.now_ms + sim_seconds * 1000

            async def read() -> None:
                while sim.now_ms < end:
                    frame = await ws.recv()
                    if combined:
                        books.feed(books.decoder.decode_ws_frame(0, frame))
                    else:  # raw frames carry no stream name: take it from the payload
                        data = json.loads(frame)
                        name = f"{data['s'].lower()}{depth_suffix if data['e'] == 'depthUpdate' else '@bookTicker'}"
                        raw = frame.encode() if isinstance(frame, str) else frame
                        books.feed(books.decoder.decode_payload(0, name, raw))

            async def snapshots() -> None:
                for symbol in SYMBOLS:
                    target = f"/fapi/v1/depth?symbol={symbol}&limit=1000"
                    resp = await rest.get(target)
                    assert resp.status_code == 200
                    books.feed(books.decoder.decode_payload(0, f"rest:{target}", resp.content))

            await asyncio.gather(read(), snapshots())
    return books


@pytest.mark.parametrize(
    ("suffix", "combined"), [("@depth@100ms", True), ("@depth", False), ("@depth@500ms", True)]
)
def test_books_rebuilt_from_the_sockets_have_no_gaps_and_match_every_comparable_ticker(
    suffix: str, combined: bool
) -> None:
    books = run(_sync_over_sockets(suffix, combined, sim_seconds=30))
    assert books.decoder.rejected == {}
    assert books.gaps == 0 and books.resync_reasons == []
    assert {s for s, b in books.books.items() if b.synced} == set(SYMBOLS)
    assert books.mismatches == 0, books.samples()
    assert books.top_checks >= (100 if suffix == "@depth@100ms" else 10)
