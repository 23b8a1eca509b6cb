"""Signal-engine benchmarks on a whole-market-shaped sim capture (issue 4, "Measured").

- engine events per second: frames through ``Market.on_frame`` + ``SignalEngine.on_frame``, decode excluded
  (frames are decoded first); "events" are every frame, "engine events" the depth and trade frames the engine
  evaluates on;
- event→signal latency in replay: the processing time of the frame that produced a signal, from the frame
  entering the market state to the signal coming out (p50/p99, µs), next to every frame's p50/p99;
- memory per symbol: tracemalloc of the market + engine state after the whole capture, over the symbols;
- incremental trade flow (``TradeWindow``) against the spec's naive ``TradeFlowAnalyzer`` (the transcription
  the tests hold) on the same trades: trades per second of each, and the ratio.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any

from realtime.capture import iter_capture
from tapewatch.engine import SignalEngine
from tapewatch.events import AggTrade
from tapewatch.live_view import percentile
from tapewatch.market import Market, MarketConfig
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.settings import Settings, load_settings
from tapewatch.streams import Kind
from tapewatch.trade_flow import TradeWindow
from tests.tapewatch.test_trade_flow import SpecTradeFlowAnalyzer

ENGINE_KINDS = (Kind.DEPTH, Kind.AGG_TRADE, Kind.TRADE)


def decode_all(paths: list[Path]) -> list[Frame]:
    decoder = FrameDecoder()
    frames = []
    for line in iter_capture(paths):
        frame = decoder.decode_capture_line(line)
        if frame is not None:
            frames.append(frame)
    return frames


def engine_rate(frames: list[Frame], settings: Settings) -> dict[str, Any]:
    """Events per second through market + engine (untimed pass), then the per-frame latency (timed pass)."""
    market = Market(MarketConfig.from_settings(settings))
    engine = SignalEngine(settings, market)
    gc.collect()
    start = time.perf_counter()
    for frame in frames:
        market.on_frame(frame)
        engine.on_frame(frame)
    seconds = time.perf_counter() - start
    engine_events = sum(1 for f in frames if f.kind in ENGINE_KINDS)
    return {
        "symbols": len(market.symbols),
        "events": len(frames),
        "engine_events": engine_events,
        "events_per_s": round(len(frames) / seconds),
        "engine_events_per_s": round(engine_events / seconds),
    }


def signal_latency(frames: list[Frame], settings: Settings) -> dict[str, Any]:
    """Per-frame processing time, and that of the frames that produced a signal (event in, signal out)."""
    market = Market(MarketConfig.from_settings(settings))
    engine = SignalEngine(settings, market)
    per_frame: list[float] = []
    signal_frames: list[float] = []
    signals = 0
    clock = time.perf_counter
    gc.collect()
    for frame in frames:
        t = clock()
        market.on_frame(frame)
        out = engine.on_frame(frame)
        took = clock() - t
        per_frame.append(took)
        if out is not None and out.signals:
            signals += len(out.signals)
            signal_frames.append(took)

    def us(values: list[float], q: float) -> float | None:
        p = percentile(values, q)
        return None if p is None else round(p * 1e6, 1)

    return {
        "signals": signals,
        "frame_us_p50": us(per_frame, 50),
        "frame_us_p99": us(per_frame, 99),
        "signal_latency_us_p50": us(signal_frames, 50),
        "signal_latency_us_p99": us(signal_frames, 99),
    }


def memory_per_symbol(frames: list[Frame], settings: Settings) -> dict[str, Any]:
    """Bytes held by the market and engine state after the capture, per symbol (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    market = Market(MarketConfig.from_settings(settings))
    engine = SignalEngine(settings, market)
    for frame in frames:
        market.on_frame(frame)
        engine.on_frame(frame)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    symbols = max(len(market.symbols), 1)
    return {"state_mb": round(held / 1e6, 1), "kb_per_symbol": round(held / symbols / 1e3, 1)}


def trade_flow_ratio(frames: list[Frame], limit: int = 30_000) -> dict[str, Any]:
    """The busiest symbol's first ``limit`` aggTrades through the incremental window and the spec's naive
    analyzer (which rebuilds its list on every trade); same numbers checked, rates compared."""
    by_symbol: dict[str, list[AggTrade]] = {}
    for frame in frames:
        if frame.kind is Kind.AGG_TRADE and isinstance(frame.event, AggTrade):
            by_symbol.setdefault(frame.symbol, []).append(frame.event)
    symbol, trades = max(by_symbol.items(), key=lambda item: len(item[1]))
    trades = trades[:limit]
    dicts = [{"T": t.trade_time, "p": str(t.price), "q": str(t.qty), "m": t.buyer_is_maker} for t in trades]
    window = TradeWindow(300_000, 50_000)
    start = time.perf_counter()
    for t in trades:
        window.add(t.trade_time, t.price, t.qty, t.buyer_is_maker)
    fast = time.perf_counter() - start
    spec = SpecTradeFlowAnalyzer()
    start = time.perf_counter()
    result: dict[str, float] = {}
    for d in dicts:
        result = spec.analyze_trade_flow(d)
    slow = time.perf_counter() - start
    assert (window.large_buys, window.large_sells) == (result["large_buys"], result["large_sells"])
    return {
        "symbol": symbol,
        "trades": len(trades),
        "window_trades": len(window),
        "incremental_trades_per_s": round(len(trades) / fast),
        "naive_trades_per_s": round(len(trades) / slow),
        "speedup": round(slow / fast, 1),
    }


def measure_engine(
    name: str, paths: list[Path], latency_name: str, latency_paths: list[Path]
) -> dict[str, Any]:
    """Rate, memory and trade flow on ``paths`` (the whole-market shape); latency on ``latency_paths`` (a
    capture with planted episodes, so that signals come)."""
    settings = load_settings()  # as the service loads them: a misspelt TAPEWATCH_* variable is refused
    frames = decode_all(paths)
    fig: dict[str, Any] = {"capture": name, **engine_rate(frames, settings)}
    fig |= memory_per_symbol(frames, settings)
    fig["trade_flow"] = trade_flow_ratio(frames)
    del frames
    fig["latency_capture"] = latency_name
    fig |= signal_latency(decode_all(latency_paths), settings)
    tf = fig["trade_flow"]
    print(
        f"\n== engine on {name}: {fig['symbols']} symbols, {fig['events']:,} events "
        f"({fig['engine_events']:,} depth/trade)\n"
        f"  market + engine       : {fig['events_per_s']:>10,} events/s ({fig['engine_events_per_s']:,} depth/trade/s)\n"
        f"  on {latency_name}:\n"
        f"  per frame             : p50 {fig['frame_us_p50']} us, p99 {fig['frame_us_p99']} us\n"
        f"  event -> signal       : p50 {fig['signal_latency_us_p50']} us, p99 {fig['signal_latency_us_p99']} us "
        f"({fig['signals']} signals)\n"
        f"  memory                : {fig['state_mb']} MB of state, {fig['kb_per_symbol']} kB per symbol\n"
        f"  trade flow ({tf['symbol']}, {tf['trades']:,} trades): incremental {tf['incremental_trades_per_s']:,}/s, "
        f"spec's naive {tf['naive_trades_per_s']:,}/s = {tf['speedup']}x",
        flush=True,
    )
    return fig
