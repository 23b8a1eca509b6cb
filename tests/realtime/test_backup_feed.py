"""The REST backup feed: its pacing within the weight budget, trades continued by id, frames as the capture
holds them, and the switch of the running service from the websockets to REST and back."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest

import tapewatch.events
import tapewatch.polled
from realtime.backup_feed import POLL_FRAGMENT, BackupConfig, BackupFeed, Poll, Polled, fetch_trades_page
from realtime.capture import CaptureWriter, iter_capture
from realtime.replay import replay
from realtime.sim.server import SimExchange
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.redis_keys import Keyspace
from tapewatch.adapters.redis_state import RedisState
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.events import AggTrade, BadRow, DepthSnapshot, Kline, RestAggTrade, RowsDecoder
from tapewatch.market import TRADE_GAP_COUNTERS, Market
from tapewatch.parse import FrameDecoder
from tapewatch.polled import PolledSnapshot, poll_stream
from tapewatch.settings import load_settings
from tapewatch.streams import Kind, symbol_streams
from tapewatch.trade_gaps import TradeFillNeeded
from tapewatch.universe import tradable_perpetuals
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer
from tests.realtime.control_helpers import all_synced, running_service, sim_settings, wait_for
from tests.realtime.test_trade_fill_sim import symbol_with_trades, ws_frame

# --- pacing, as arithmetic ----------------------------------------------------------------------------------


def test_each_poller_stays_within_its_share_of_the_weight_budget() -> None:
    config = BackupConfig.from_settings(load_settings())  # 80 % of Binance's 2400 a minute
    assert config.weight_per_minute == 1920
    assert config.spacing(Poll.DEPTH) == pytest.approx(2 * 60 / (0.4 * 1920))
    assert config.spacing(Poll.TRADES) == pytest.approx(20 * 60 / (0.5 * 1920))
    per_minute = {poll: config.weight(poll) * 60 / config.spacing(poll) for poll in Poll}
    assert per_minute[Poll.DEPTH] == pytest.approx(0.4 * 1920)
    assert sum(per_minute.values()) <= 0.95 * 1920 + 1e-6  # the rest stays for the other callers
    # 30 symbols: a book every 4.7 s, the trades of a symbol every 37.5 s, candles once a minute
    assert config.round_seconds(Poll.DEPTH, 30) == pytest.approx(4.6875)
    assert config.round_seconds(Poll.TRADES, 30) == pytest.approx(37.5)
    assert config.round_seconds(Poll.KLINES, 30) == pytest.approx(60 * 0.625 * 2 / 1.25)
    # a small universe is polled no faster than the per-symbol floor
    assert config.round_seconds(Poll.DEPTH, 2) == config.depth_every == 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depth_share", 0.6, "sum to at most 1"),
        ("trades_share", 0.0, "shares"),
        ("depth_limit", 7, "depth_limit"),
        ("trades_limit", 1001, "trades_limit"),
        ("klines_limit", 0, "klines limit"),
        ("depth_every", 0.0, "intervals"),
        ("weight_per_minute", 0, "weight_per_minute"),
    ],
)
def test_bad_configs_are_refused_with_the_field_named(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackupConfig(**{field: value})  # type: ignore[arg-type]


# --- polling the simulated exchange's REST API --------------------------------------------------------------


def _contiguous(ids: list[int]) -> bool:
    return all(b == a + 1 for a, b in itertools.pairwise(ids))


@pytest.mark.slow
def test_polls_continue_by_trade_id_and_carry_the_capture_stream_names(tmp_path: Path) -> None:
    """Two real symbols and one the exchange does not list, polled for a few seconds into a real Market."""
    delivered: list[Polled] = []
    requests: list[tuple[float, str]] = []
    started_at: list[float] = []  # start of each aggTrades request

    async def scenario() -> tuple[BackupFeed, Market, list[str], float, int]:
        async with SimExchange(port=0, seed=7, symbols=5, speed=5.0) as sim:
            settings = sim_settings(sim, tmp_path, "twtest:unused:")
            market = Market()

            def deliver(polled: Polled) -> None:
                delivered.append(polled)
                requests.append((time.monotonic(), polled.stream))
                for frame in polled.frames:
                    market.on_frame(frame)

            async with BinanceRest.from_settings(settings) as rest:
                info, _ = await rest.exchange_info()
                symbols = sorted(tradable_perpetuals(info.symbols))[:2]
                agg_trades = rest.agg_trades

                async def timed_agg_trades(*args: Any, **kwargs: Any) -> Any:
                    # when each request starts: the feed paces its requests, not the answers (which a loaded
                    # machine may deliver late, then early)
                    started_at.append(time.monotonic())
                    return await agg_trades(*args, **kwargs)

                rest.agg_trades = timed_agg_trades  # type: ignore[method-assign]
                feed = BackupFeed(
                    rest,
                    FrameDecoder(),
                    deliver,
                    next_trade_id=market.next_trade_id,
                    config=BackupConfig.from_settings(settings),
                )
                started = time.monotonic()
                feed.start([*symbols, "NOPEUSDT"])
                assert feed.on
                await wait_for(
                    lambda: sum("aggTrades" in s for _, s in requests) >= 4, "two trade polls a symbol"
                )
                polling = time.monotonic() - started
                before_stop = len(delivered)
                await feed.stop()  # with the catch-up poll
                assert not feed.on
                caught_up = len(delivered) - before_stop
                await asyncio.sleep(0.3)
                assert len(delivered) == before_stop + caught_up  # nothing after stop
                return feed, market, symbols, polling, caught_up

    feed, market, symbols, polling, caught_up = asyncio.run(scenario())
    assert caught_up == len(symbols)  # one last aggTrades poll each; the refused symbol is not asked again

    trades: dict[str, list[int]] = defaultdict(list)
    for polled in delivered:
        if "/aggTrades?" not in polled.stream:
            continue
        symbol = polled.frames[0].symbol if polled.frames else ""
        if symbol and trades[symbol]:
            # each poll continues right after the newest trade already held
            assert f"fromId={trades[symbol][-1] + 1}&" in polled.stream
        rows = msgspec.json.decode(polled.body)
        assert [f.event.agg_id for f in polled.frames] == [r["a"] for r in rows]  # type: ignore[union-attr]
        assert all(f.kind is Kind.AGG_TRADE and f.stream == polled.stream for f in polled.frames)
        trades[symbol].extend(f.event.agg_id for f in polled.frames)  # type: ignore[union-attr]
    for symbol in symbols:
        ids = trades[symbol]
        assert len(ids) > 10 and _contiguous(ids), symbol  # every trade once, none skipped
        assert market.state(symbol).last_agg_id == ids[-1]
    assert market.counters["out_of_order_trade"] == 0

    depth = [p for p in delivered if "/depth?" in p.stream]
    assert depth and all(f"&limit=50{POLL_FRAGMENT}&every_ms=" in p.stream for p in depth)
    for polled in depth:
        (frame,) = polled.frames
        assert frame.kind is Kind.SNAPSHOT and isinstance(frame.event, DepthSnapshot)
        # what a replay of the capture line decodes: the same standalone snapshot of the same symbol
        again = FrameDecoder().decode_payload(polled.recv, polled.stream, polled.body)
        assert again is not None and again == frame and isinstance(again.event, PolledSnapshot)
        assert again.event.every_ms == round(feed.config.round_seconds(Poll.DEPTH, 3) * 1000)

    klines = [p for p in delivered if "/klines?" in p.stream]
    assert klines and all(POLL_FRAGMENT in p.stream for p in klines)
    # one Kline frame per row, oldest first, as the kline stream would have moved the candles
    assert {f.event.candle.interval for p in klines for f in p.frames} == {"1m", "15m"}  # type: ignore[union-attr]
    assert all(len(p.frames) == feed.config.klines_limit for p in klines)
    assert all(f.kind is Kind.KLINE and isinstance(f.event, Kline) for p in klines for f in p.frames)

    # NOPEUSDT: refused once, then skipped by every poller; the other symbols went on
    assert feed.counters["refused"] == 1
    refusals = {key: n for key, n in feed.rest.stats.requests.items() if key[1] == "400"}
    assert sum(refusals.values()) == 1
    # pacing: aggTrades requests no closer than their share of the budget allows
    trade_times = started_at[: -len(symbols)]  # without the catch-up
    assert len(trade_times) <= 1 + polling / feed.config.spacing(Poll.TRADES) + 1
    gaps = [b - a for a, b in itertools.pairwise(trade_times)]
    assert min(gaps) >= feed.config.spacing(Poll.TRADES) * 0.9
    assert feed.metrics()["backup_feed_on"] == 0 and feed.metrics()["backup_trades"] == sum(
        map(len, trades.values())
    )


@pytest.mark.slow
def test_polls_inside_an_open_gap_wider_than_a_page_fill_it_and_move_on(tmp_path: Path) -> None:
    """A websocket reconnect left a gap of 249 ids just before the switch to REST: the trades polls fill it
    page by page (each from the first id still missing) and go on past it, no page asked twice."""
    delivered: list[Polled] = []

    async def scenario() -> tuple[Market, AggTrade]:
        async with SimExchange(port=0, seed=3, symbols=3, speed=5.0) as sim:
            settings = sim_settings(sim, tmp_path, "twtest:unused:")
            async with BinanceRest.from_settings(settings) as rest:
                symbol, trades = await symbol_with_trades(rest, 400)
                market = Market()
                before, after = trades[-400], trades[-150]
                assert market.on_frame(ws_frame(before)) is None
                assert market.on_frame(ws_frame(after)) == TradeFillNeeded(
                    symbol, before.agg_id + 1, after.agg_id - 1
                )

                def deliver(polled: Polled) -> None:
                    delivered.append(polled)
                    for frame in polled.frames:
                        market.on_frame(frame)

                config = BackupConfig(trades_limit=100, depth_share=0.1, klines_share=0.05, trades_share=0.8)
                feed = BackupFeed(
                    rest, FrameDecoder(), deliver, next_trade_id=market.next_trade_id, config=config
                )
                feed.start([symbol])
                st = market.state(symbol)
                await wait_for(
                    lambda: st.fill is None and st.last_agg_id > after.agg_id,
                    "the gap filled and trades past it polled",
                    within=60,
                )
                await feed.stop(catch_up=False)
                return market, before

    market, before = asyncio.run(scenario())
    st = market.state(before.symbol)
    polls = [p for p in delivered if "/aggTrades?" in p.stream]
    from_ids = [int(p.stream.split("fromId=")[1].split("&")[0]) for p in polls]
    assert from_ids[:3] == [before.agg_id + 1, before.agg_id + 101, before.agg_id + 201]
    assert from_ids == sorted(set(from_ids))  # every poll further on: none repeated
    assert market.counters["out_of_order_trade"] == 1  # the held trade, in the third page
    totals = market.totals()
    assert totals["trades_filled"] == totals["trades_missing"] == 249 and totals["trades_pending"] == 0
    assert len(st.vwap) == st.last_agg_id - before.agg_id + 1  # every id once, none skipped


@pytest.mark.slow
def test_a_symbol_back_hours_later_is_polled_from_the_newest_trades_and_a_replay_counts_the_same(
    tmp_path: Path,
) -> None:
    """The market still holds the symbol's trades of two hours ago (it left the universe, and is back while the
    backup feed is on): the first poll asks for the newest page instead of paging on from the old id, the gap
    it reveals is skipped and counted, later polls continue by id, and a replay of the capture counts the same."""
    hour = 3_600_000
    delivered: list[Polled] = []

    async def scenario() -> tuple[Market, int]:
        async with SimExchange(port=0, seed=3, symbols=3, speed=5.0) as sim:
            settings = sim_settings(sim, tmp_path, "twtest:unused:")
            async with BinanceRest.from_settings(settings) as rest:
                symbol, trades = await symbol_with_trades(rest, 400)
                market, decoder = Market(), FrameDecoder()
                with CaptureWriter(tmp_path / "capture") as capture:

                    def deliver(polled: Polled) -> None:
                        capture.write(polled.recv, polled.stream, polled.body)
                        delivered.append(polled)
                        for frame in polled.frames:
                            market.on_frame(frame)

                    # what the market kept of the symbol two hours ago: one trade, applied from a captured page
                    old = trades[-400]
                    row = {
                        "a": old.agg_id,
                        "p": "1.5",
                        "q": "1",
                        "f": 1,
                        "l": 1,
                        "T": old.trade_time - 2 * hour,
                    }
                    stale = f"rest:/fapi/v1/aggTrades?symbol={symbol}&fromId={old.agg_id}&limit=1"
                    body = msgspec.json.encode([{**row, "m": False}])
                    recv = int(time.time() * 1000)
                    deliver(Polled(recv, stale, body, tuple(decoder.decode_frames(recv, stale, body))))
                    # the exchange's now, from book polls (other symbols' polls move it on in the service): the
                    # first, two hours past the last trade known, is a jump the clock takes once the next confirms
                    for _ in range(2):
                        _, answer = await rest.depth(symbol, 50)
                        book = poll_stream(answer.stream, 1000)
                        frames = tuple(decoder.decode_frames(recv, book, answer.body))
                        deliver(Polled(recv, book, answer.body, frames))
                    assert market.next_trade_id(symbol) is None

                    config = BackupConfig(
                        trades_limit=100, depth_share=0.1, klines_share=0.05, trades_share=0.8
                    )
                    feed = BackupFeed(
                        rest, decoder, deliver, next_trade_id=market.next_trade_id, config=config
                    )
                    feed.start([symbol])
                    await wait_for(
                        lambda: sum("/aggTrades?" in p.stream for p in delivered) >= 3, "two trade polls"
                    )
                    await feed.stop(catch_up=False)
                return market, old.agg_id

    market, old_id = asyncio.run(scenario())
    polls = [p for p in delivered if "/aggTrades?" in p.stream][1:]  # without the seeded page
    assert "fromId=" not in polls[0].stream  # the newest page, not the page after the old id
    first = polls[0].frames[0].event
    assert isinstance(first, AggTrade) and first.agg_id > old_id + 100
    for before, after in itertools.pairwise(polls):
        last = before.frames[-1].event if before.frames else None
        if isinstance(last, AggTrade):
            assert f"fromId={last.agg_id + 1}&" in after.stream  # then on by id, as ever
    totals = market.totals()
    gap = {k: totals[k] for k in TRADE_GAP_COUNTERS}
    assert gap["trade_gaps"] == gap["trade_gaps_skipped"] == 1
    assert gap["trades_skipped"] == gap["trades_missing"] == first.agg_id - old_id - 1
    assert market.counters["out_of_order_trade"] == 0
    summary = replay([tmp_path / "capture"], load_settings(), signals=False)
    assert {k: summary[k] for k in TRADE_GAP_COUNTERS} == gap
    assert summary["out_of_order"] == 0 and summary["trade_fill_requests"] == 0


# --- the running service, switched by the control key ---------------------------------------------------------


def _effective_trades(capture: Path) -> dict[str, list[tuple[int, str]]]:
    """Per symbol, the aggTrade ids the market counted (first time an id beyond the newest was seen), in
    capture order, with where each came from (``ws`` or ``rest``)."""
    newest: dict[str, int] = defaultdict(lambda: -1)
    counted: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in iter_capture([capture]):
        record = json.loads(line)
        stream, data = record["stream"], record["data"]
        if stream.endswith("@aggTrade"):
            rows, symbol, source = [data], data["s"], "ws"
        elif stream.startswith("rest:/fapi/v1/aggTrades?"):
            rows, symbol, source = data, stream.split("symbol=")[1].split("&")[0], "rest"
        else:
            continue
        for row in rows:
            if row["a"] > newest[symbol]:
                newest[symbol] = row["a"]
                counted[symbol].append((row["a"], source))
    return counted


@pytest.mark.e2e
@pytest.mark.slow
def test_the_service_switches_to_rest_polling_and_back(
    tmp_path: Path, redis_url: str, redis_keys: Keyspace, redis_state: RedisState
) -> None:
    universe: list[str] = []

    async def scenario() -> None:
        async with SimExchange(port=0, seed=5, symbols=8, speed=2.0) as sim:
            settings = sim_settings(sim, tmp_path, redis_keys.prefix, universe_size=3)
            async with running_service(settings, redis_url) as run:
                service = run.service
                universe.extend(service.universe)
                await wait_for(lambda: all_synced(service), "books synced")
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id >= 0 for s in universe),
                    "trades of every symbol over the websockets",
                )
                streams = {s for sym in universe for s in symbol_streams(sym, 100, ("1m", "15m"))}
                assert service.pool.streams() == streams
                last_ws = {s: service.market.state(s).last_agg_id for s in universe}

                await asyncio.to_thread(redis_state.set_backup_feed, True, source="health-sensor")
                await wait_for(lambda: service.backup.on, "the backup feed on")
                assert service.pool.streams() == set()
                await wait_for(
                    lambda: not any(sim.hub.wants(s) for s in streams), "unsubscribed at the exchange"
                )
                frames = service.pool.stats.frames_total()
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id > last_ws[s] for s in universe),
                    "trades of every symbol over REST",
                )
                assert service.pool.stats.frames_total() == frames  # not one websocket frame meanwhile
                published: list[dict[str, float]] = [{}]

                async def read_metrics() -> None:
                    published[0] = await asyncio.to_thread(redis_state.metrics)

                while published[0].get("backup_feed_on") != 1.0:  # published once a second
                    await read_metrics()
                    await asyncio.sleep(0.1)
                assert published[0]["control_backup_feed"] == 1.0

                # a universe change while on REST: polled, not subscribed
                await asyncio.to_thread(redis_state.set_max_universe, 2, source="test")
                await wait_for(lambda: service.universe == universe[:2], "shrunk")
                assert service.backup.symbols == universe[:2] and service.pool.streams() == set()
                await asyncio.to_thread(redis_state.set_max_universe, None, source="test")
                await wait_for(lambda: service.backup.symbols == universe, "restored")

                await asyncio.to_thread(redis_state.set_backup_feed, False, source="health-sensor")
                await wait_for(lambda: service.pool.streams() == streams, "back on the websockets")
                assert not service.backup.on
                await wait_for(lambda: all_synced(service), "books resynced from the websockets")
                last_rest = {s: service.market.state(s).last_agg_id for s in universe}
                await wait_for(
                    lambda: all(service.market.state(s).last_agg_id > last_rest[s] for s in universe),
                    "trades over the websockets again",
                )
                assert service.backup.counters["trades"] > 0
                assert service.control is not None
                assert service.control.counters["applied_backup_feed_on"] == 1
                assert service.control.counters["applied_backup_feed_off"] == 1
                assert run.alive()

    asyncio.run(scenario())

    capture = tmp_path / "capture"
    counted = _effective_trades(capture)
    for symbol in universe:
        sources = [source for _, source in counted[symbol]]
        assert "rest" in sources and sources[0] == "ws" and sources[-1] == "ws", symbol
        # from the websockets to REST and through REST, every trade counted once and none skipped
        last_rest = max(i for i, (_, source) in enumerate(counted[symbol]) if source == "rest")
        ids = [agg_id for agg_id, _ in counted[symbol][: last_rest + 1]]
        assert _contiguous(ids), symbol
    lines = [json.loads(line)["stream"] for line in iter_capture([capture])]
    assert any(s.startswith("rest:/fapi/v1/depth?") and f"{POLL_FRAGMENT}&every_ms=" in s for s in lines)
    # the capture with its polled answers replays into exact books
    summary = replay([capture], load_settings(), signals=False)
    assert summary["book_mismatches"] == 0


# --- a page with a bad trade dropped ------------------------------------------------------------------------


def _agg_row(agg_id: int, price: str = "100") -> dict[str, object]:
    return {
        "a": agg_id,
        "p": price,
        "q": "1",
        "f": agg_id,
        "l": agg_id,
        "T": 1_700_000_000_000 + agg_id,
        "m": True,
    }


def _page_full(rows: list[dict[str, object]], limit: int) -> tuple[list[int], bool, dict[str, int]]:
    """``fetch_trades_page`` against a local REST server answering ``rows``: the trade ids delivered, whether
    the page counted as full, and the client's dropped-row counter."""

    async def main(url: str) -> tuple[Polled, bool, dict[str, int]]:
        clock = FakeClock()
        budget = WeightBudget(1920, snapshot_capacity=960, clock=clock, sleep=clock.sleep)
        async with BinanceRest(url, budget, sleep=clock.sleep) as rest:
            polled, full = await fetch_trades_page(rest, FrameDecoder(), "BTCUSDT", 1, limit, lambda: 0)
            return polled, full, dict(rest.stats.dropped_rows)

    with RestTestServer() as server:
        server.route("/fapi/v1/aggTrades", Reply(body=msgspec.json.encode(rows)), weight=20)
        polled, full, dropped = asyncio.run(main(server.url))
    ids = [f.event.agg_id for f in polled.frames if isinstance(f.event, AggTrade)]
    return ids, full, dropped


def test_a_full_page_with_one_bad_trade_dropped_still_counts_as_full() -> None:
    """Binance sent ``limit`` rows, so more trades wait: paging must go on at once, not at the next poll."""
    rows = [_agg_row(1), _agg_row(2, price="0"), _agg_row(3), _agg_row(4)]
    ids, full, dropped = _page_full(rows, limit=4)
    assert ids == [1, 3, 4]  # the bad trade is left out of the frames ...
    assert dropped == {"aggTrades": 1}  # ... and counted by the client
    assert full  # 4 rows sent for a limit of 4: the page was full


def test_a_short_page_with_a_bad_trade_is_not_full() -> None:
    ids, full, _ = _page_full([_agg_row(1), _agg_row(2, price="0"), _agg_row(3)], limit=4)
    assert ids == [1, 3]
    assert not full


class _CountingRows(RowsDecoder[RestAggTrade]):
    """The frame decoder's aggTrades rows decoder, counting the bodies it decodes."""

    def __init__(self) -> None:
        super().__init__(RestAggTrade)
        self.calls = 0

    def decode(self, data: bytes | msgspec.Raw) -> tuple[list[RestAggTrade], list[BadRow]]:
        self.calls += 1
        return super().decode(data)


class _RawRowsSeen:
    """The decoder that splits a JSON list into raw rows, counting the bodies it splits (msgspec's decoder
    cannot be subclassed, so this one delegates to a real one)."""

    def __init__(self) -> None:
        self._real = msgspec.json.Decoder(list[msgspec.Raw])
        self.calls = 0

    def decode(self, data: bytes | msgspec.Raw) -> list[msgspec.Raw]:
        self.calls += 1
        return self._real.decode(data)


def test_a_page_is_judged_full_from_the_frame_decoders_one_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame decoder decodes the body once and its row count says the page is full: the body is not
    decoded again (split into raw rows) just to count them."""
    frame_rows, raw_rows = _CountingRows(), _RawRowsSeen()
    monkeypatch.setattr(tapewatch.polled, "_TRADES_DECODER", frame_rows)
    monkeypatch.setattr(tapewatch.events, "_RAW_ROWS", raw_rows)
    ids, full, dropped = _page_full([_agg_row(i) for i in range(1, 5)], limit=4)
    assert ids == [1, 2, 3, 4] and full and dropped == {}
    assert frame_rows.calls == 1  # the frame decoder decoded the page once, as a whole ...
    assert raw_rows.calls == 0  # ... and nothing split it into raw rows again to count them
