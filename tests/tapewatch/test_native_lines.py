"""The native replay path (tapewatch.native_lines, tapewatch/_native_lines.c) against the Python path.

Each capture is replayed without the signal engine twice, with the native path and without it, and the whole
market state must come out the same: every book (state, ids, counts, every level of both sides, the diffs it
holds), every symbol's top-of-book proof (counts, samples, the tops and tickers it keeps, in order), the clock,
the counters, and the summary. The captures: the real recordings, simulator recordings with a sequence gap and
with a ticker that disagrees with its book, and the real recording with hundreds of lines damaged in every way a
line can be wrong (the native path must leave each to the Python path, which counts it as live does).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from realtime.replay import run_replay
from realtime.sim.record import record
from tapewatch.book_types import Diff
from tapewatch.candles import CandleSeries
from tapewatch.events import DepthUpdate
from tapewatch.market import Market
from tapewatch.settings import Settings
from tapewatch.trade_flow import TradeWindow
from tests.helpers import (
    ALL_RECORDINGS,
    USDM_CRYPTOFEED,
    altered_ticker,
    recording_lines,
    require_native_sides,
    sim_hour_file,
    write_gz,
)

pytestmark = pytest.mark.usefixtures("native")

TIMINGS = ("seconds", "messages_per_second", "native_lines")


@pytest.fixture
def native() -> None:
    require_native_sides()


def market_state(market: Market) -> dict[str, Any]:
    """Everything the market holds that a line can change, comparable with ==."""
    state: dict[str, Any] = {
        "clock": (market.now_ms, market.ahead_ms),
        "messages": market.messages,
        "counters": dict(market.counters),
        "totals": market.totals(),
    }
    for symbol, st in sorted(market.symbols.items()):
        book, check = st.book, st.check
        state[symbol] = {
            "book": (
                book.state,
                book.last_update_id,
                book.last_event_time,
                book.applied,
                book.dropped,
                book.gaps,
                book.resyncs,
                book.crossed_events,
                book.beyond_snapshot,
                book.snapshot_id,
                book.synced_at,
                book.ever_synced,
            ),
            "bids": book.bids.top(1_000_000),
            "asks": book.asks.top(1_000_000),
            "buffer": [_diff(d) for d in book._buffer],
            "symbol": (st.last_event_time, st.last_ticker_id, st.snapshot_pending),
            "check": (check.checks, check.mismatches, check.samples),
            "tops": list(check._tops.items()),
            "tickers": list(check._tickers.items()),
            "features": st.features(),
            "trades": (st.last_agg_id, st.fill, st.skipped_gap, st.trades_checked_ms, list(st.caught_up)),
            "windows": [_window(w) for w in (st.flow, st.vwap)],
            "candles": {i: _series(c) for i, c in sorted(st.candles.items())},
        }
    return state


def _diff(d: Diff) -> tuple[Any, ...]:
    """A buffered diff by what the book reads of it: a DepthUpdate on the Python path, a BufferedDiff on the
    native one."""
    return (
        d.symbol,
        d.event_time,
        d.transaction_time,
        d.first_id,
        d.final_id,
        d.prev_final_id,
        d.bids,
        d.asks,
    )


def _series(c: CandleSeries) -> tuple[Any, ...]:
    return (*(getattr(c, name) for name in CandleSeries.__slots__ if name != "closed"), list(c.closed))


def _window(w: TradeWindow) -> tuple[Any, ...]:
    return (
        list(w._trades),
        w.large_buys,
        w.large_sells,
        w.quote_volume,
        w.pq,
        w.q,
        w.last_time,
        w.last_price,
        w._expired,
    )


def both_ways(paths: list[Path], settings: Settings | None = None) -> tuple[dict[str, Any], int]:
    """Replay ``paths`` both ways, assert the same summary and market state; returns the state and the lines
    the native path took."""
    settings = settings or Settings()
    fast = run_replay(paths, settings, signals=False, native=True)
    slow = run_replay(paths, settings, signals=False, native=False)
    assert fast.market is not None and slow.market is not None
    assert slow.summary["native_lines"] == 0
    drop = set(TIMINGS)
    assert {k: v for k, v in fast.summary.items() if k not in drop} == {
        k: v for k, v in slow.summary.items() if k not in drop
    }
    state = market_state(slow.market)
    assert market_state(fast.market) == state
    return state, fast.summary["native_lines"]


@pytest.mark.parametrize("path", ALL_RECORDINGS, ids=lambda p: p.name.split(".")[0])
def test_the_real_recordings_come_out_the_same_both_ways(path: Path) -> None:
    state, taken = both_ways([path])
    depth_and_tickers = sum(
        1 for line in recording_lines(path) if b"@depth" in line[:120] or b"@bookTicker" in line[:120]
    )
    # the path is used: most depth and ticker lines (the rest: before the first snapshot, out of order)
    assert taken > depth_and_tickers // 2
    assert state["totals"]["book_checks"] > 0 and state["totals"]["book_mismatches"] == 0


def test_a_sim_recording_with_gaps_and_checkpoints_comes_out_the_same(tmp_path: Path) -> None:
    """Sequence gaps (resyncs through the Python path, the native path taking the book again once synced) and
    the simulator's hourly book checkpoints."""
    record(
        tmp_path,
        150_000,
        seed=11,
        symbols=6,
        gaps=[("BTCUSDT", 30_000), ("ETHUSDT", 60_000)],
        checkpoint_s=60,
    )
    state, taken = both_ways([tmp_path / "var" / "capture"])
    assert state["totals"]["gaps"] >= 2 and state["totals"]["resyncs"] >= 2
    assert state["totals"]["checkpoint_checks"] > 0 and state["totals"]["checkpoint_mismatches"] == 0
    assert taken > 1000


def test_a_ticker_that_disagrees_with_its_book_is_found_both_ways(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The mismatch is counted, the book restarted and a snapshot asked for, whichever way the line went."""
    capture = altered_ticker(sim_hour_file(tmp_path_factory), tmp_path / "altered.jsonl.gz")
    state, _ = both_ways([capture])
    assert state["totals"]["book_mismatches"] == 1


# --- damaged lines ----------------------------------------------------------------------------------------------


def _replace_value(line: bytes, key: bytes, value: bytes) -> bytes:
    """``line`` with the first value of ``"key":`` replaced by ``value`` (the raw JSON text)."""
    at = line.index(b'"' + key + b'":', line.index(b'"data"')) + len(key) + 3
    end = at
    depth = 0
    while True:  # to the end of the value: a string, a number or a bracketed list
        c = line[end : end + 1]
        if c == b'"' and depth == 0 and end > at:
            end += 1
            break
        if c in (b"[", b"{"):
            depth += 1
        elif c in (b"]", b"}"):
            if depth == 0:
                break
            depth -= 1
            if depth == 0:
                end += 1
                break
        elif c == b"," and depth == 0:
            break
        end += 1
    return line[:at] + value + line[end:]


DAMAGE = [
    # numbers the decoder refuses or reads differently
    lambda line: line.replace(b'"u":', b'"u":0', 1),  # a leading zero
    lambda line: _replace_value(line, b"u", b"-5"),
    lambda line: _replace_value(line, b"u", b"1.5"),
    lambda line: _replace_value(line, b"u", b"12345678901234567890123"),
    lambda line: _replace_value(line, b"u", b'"77"'),  # a string (the lax decoder may take it)
    lambda line: _replace_value(line, b"E", b"1e3"),
    lambda line: _replace_value(line, b"E", b"null"),
    # prices and quantities
    lambda line: line.replace(b'[["', b'[["0', 1),
    lambda line: line.replace(b'[["', b'[["-', 1),
    lambda line: line.replace(b'[["', b'[["NaN', 1),
    lambda line: line.replace(b'[["', b'[["1e2', 1),
    lambda line: line.replace(b'[["', b'[[" ', 1),
    lambda line: line.replace(b'","', b'.","', 1),
    lambda line: line.replace(b'","', b'","0', 1),
    lambda line: line.replace(b'[["', b"[[", 1),
    lambda line: line.replace(b'"b":"', b'"b":"0.', 1),
    lambda line: line.replace(b'"b":"', b'"b":"9999999999999999', 1),
    lambda line: line.replace(b'"B":"', b'"B":"-', 1),
    lambda line: line.replace(b'"A":"', b'"A":"1e30', 1),
    lambda line: line.replace(b'"b":"', b'"b":', 1),
    # structure
    lambda line: line[: len(line) // 2],
    lambda line: line + b"x",
    lambda line: line + b" ",
    lambda line: line[:-1],
    lambda line: line.replace(b'{"recv"', b'{"junk":[1,{"a":"\\u00e9\\n"},true,null,-2.5e-3],"recv"', 1),
    lambda line: line.replace(b'{"recv"', b'{"junk":[1 2],"recv"', 1),
    lambda line: line.replace(b'{"recv"', b'{"junk":"\xc3\xa9","recv"', 1),
    lambda line: line.replace(b'{"recv"', b'{"junk":"\xff","recv"', 1),
    lambda line: line.replace(b'{"recv"', b'{"junk":tru,"recv"', 1),
    lambda line: line.replace(b'"data":{', b'"data":{"extra":{"x":[]},', 1),
    lambda line: line.replace(b'"data":{', b'"data":{"s":"ETHUSDT",', 1),  # the key twice
    lambda line: line.replace(b'"data":{', b'"data":{"u":1,', 1),
    lambda line: line.replace(b'"recv":', b'"recv":1,"recv":', 1),
    lambda line: line.replace(b'"stream":', b'"stream":"x","stream":', 1),
    lambda line: line.replace(b'"e":"', b'"e":"x', 1),
    lambda line: line.replace(b'"e":"', b'"f":"', 1),
    lambda line: line.replace(b'"s":"', b'"s":"X', 1),
    lambda line: line.replace(b'"s":"', b'"s":"\\u0041', 1),
    lambda line: line.replace(b"@", b"\\u0040", 1),
    lambda line: line.replace(b'"stream":"', b'"stream":"X', 1),
    lambda line: line.replace(b'"recv":', b'"recv": ', 1).replace(b',"stream"', b' , "stream"', 1),
    lambda line: line.replace(b'"pu":', b'"pu":1', 1),
    lambda line: line.replace(b',"a":[', b',"a":[["1","1"],', 1),  # a crossed ask
    lambda line: line.replace(b'"b":[', b'"b":[["999999","1"],', 1),  # a crossed bid
    lambda line: _move_data_first(line),
    lambda line: _asks_first(line),
    lambda line: _without(line, b"T"),
    lambda line: _without(line, b"e"),
    lambda line: _without(line, b"a"),
]


def _move_data_first(line: bytes) -> bytes:
    obj = json.loads(line)
    return json.dumps({"data": obj["data"], "recv": obj["recv"], "stream": obj["stream"]}).encode()


def _asks_first(line: bytes) -> bytes:
    obj = json.loads(line)
    data = obj["data"]
    if "a" in data:
        data = {"a": data["a"], **{k: v for k, v in data.items() if k != "a"}}
    return json.dumps(
        {"recv": obj["recv"], "stream": obj["stream"], "data": data}, separators=(",", ":")
    ).encode()


def _without(line: bytes, key: str | bytes) -> bytes:
    key = key.decode() if isinstance(key, bytes) else key
    obj = json.loads(line)
    obj["data"].pop(key, None)
    return json.dumps(obj, separators=(",", ":")).encode()


def _pick(lines: list[bytes], stream: bytes) -> int:
    """The index of a line of ``stream`` past the middle of the recording (its book synced by then)."""
    return next(i for i in range(len(lines) // 2, len(lines)) if stream in lines[i][:80])


def _older_ticker(line: bytes) -> bytes:
    """A ticker older than the symbol's last (out of order)."""
    obj = json.loads(line)
    if obj["data"].get("e") != "bookTicker":
        return line
    return _replace_value(line, b"u", str(obj["data"]["u"] - 10**9).encode())


def _an_hour_ahead(line: bytes) -> bytes:
    """A diff an hour ahead of the market clock (a jump the clock must confirm first)."""
    obj = json.loads(line)
    if obj["data"].get("e") != "depthUpdate":
        return line
    return _replace_value(line, b"E", str(obj["data"]["E"] + 3_600_000).encode())


DAMAGE += [
    _older_ticker,
    _an_hour_ahead,
    lambda line: line.replace(b'[["', b'[["0","1"],["', 1),  # a zero price, then the rest
    lambda line: line.replace(b'[["', b'[["0.0","1"],["', 1),
    lambda line: line.replace(b'[["', b'[["1000000000000000","1"],["', 1),  # 1e15: past the bound
    lambda line: line.replace(b'[["', b'[["5","1000000000000000000"],["', 1),  # qty 1e18
    lambda line: line.replace(b'"b":"', b'"b":"0","x":"', 1),
    lambda line: line.replace(b'"B":"', b'"B":"1000000000000000000","x":"', 1),
    lambda line: line.replace(b'"a":"', b'"a":"0","x":"', 1),  # a ticker's zero ask
    lambda line: line.replace(b'"a":"', b'"a":"1000000000000000","x":"', 1),  # 1e15: past the bound
]


def _payload_value(
    kind: str, key: str, value: bytes | None = None, shift: int = 0
) -> Callable[[bytes], bytes]:
    """A line of payload ``kind`` (``"e"``) with ``key``'s value (a kline's: its candle's) replaced by ``value``
    (raw JSON), or moved by ``shift``; other lines as they are."""

    def damage(line: bytes) -> bytes:
        obj = json.loads(line)
        if obj["data"].get("e") != kind:
            return line
        inner = kind == "kline"
        raw = (
            value
            if value is not None
            else str((obj["data"]["k"] if inner else obj["data"])[key] + shift).encode()
        )
        if not inner:
            return _replace_value(line, key.encode(), raw)
        at = line.index(b'"k":{')  # _replace_value looks from "data" on: from "k" on, as if it were that
        return line[:at] + _replace_value(b'{"data":' + line[at:], key.encode(), raw)[len(b'{"data":') :]

    return damage


def _payload_without(kind: str, key: str, *, candle: bool = False) -> Callable[[bytes], bytes]:
    """A line of payload ``kind`` without ``key`` (in its candle with ``candle``); other lines as they are."""

    def damage(line: bytes) -> bytes:
        obj = json.loads(line)
        if obj["data"].get("e") != kind:
            return line
        (obj["data"]["k"] if candle else obj["data"]).pop(key)
        return json.dumps(obj, separators=(",", ":")).encode()

    return damage


_trade_value = functools.partial(_payload_value, "aggTrade")
_kline_value = functools.partial(_payload_value, "kline")


DAMAGE += [
    _trade_value("a", shift=2),  # a gap: the Python path opens it
    _trade_value("a", shift=-1),  # the last id again: out of order
    _trade_value("a", shift=-(10**6)),  # far below the last (a bogus-id check)
    _trade_value("a", b"-5"),
    _trade_value("a", b'"88"'),
    _trade_value("a", b"1e3"),
    _trade_value("T", shift=3_600_000),  # an hour ahead of the clock
    _trade_value("T", shift=-60_000),  # a minute before the symbol's newest trade (time regressed)
    _trade_value("T", shift=-3_600_000),  # before both windows' horizon: left out
    _trade_value("T", b"null"),
    _trade_value("p", b'"0"'),
    _trade_value("p", b'"0.0"'),
    _trade_value("p", b'"-7.6"'),
    _trade_value("p", b'"1000000000000000"'),
    _trade_value("p", b'"7.6e0"'),
    _trade_value("p", b"7.6"),
    _trade_value("q", b'"0"'),
    _trade_value("q", b'"1000000000000000000"'),
    _trade_value("q", b'"01"'),
    _trade_value("m", b"1"),
    _trade_value("m", b'"true"'),
    _trade_value("m", b"null"),
    _trade_value("m", b"tru"),
    _trade_value("m", b"falsey"),
    _trade_value("f", b'"1"'),
    _trade_value("l", b"1.0"),
    _trade_value("E", b'"1"'),
    lambda line: line.replace(b'"e":"aggTrade"', b'"e":"trade"', 1),
    lambda line: line.replace(b'"m":true', b'"m":false', 1),  # a valid change: taken either way
    lambda line: line.replace(b'"m":', b'"m":true,"m":', 1),
    lambda line: line.replace(b'"a":', b'"x":1,"a":', 1),  # an unknown key: skipped as msgspec does
    *(_payload_without("aggTrade", key) for key in ("m", "q", "f", "l", "E", "p")),
]


DAMAGE += [
    _kline_value("t", shift=3_600_000),  # a bar an hour ahead of the clock
    _kline_value("t", shift=-60_000),  # a bar before the forming one (stale)
    _kline_value("t", shift=60_000),  # the next bar, the forming one's close lost: a hole to refill
    _kline_value("t", shift=120_000),  # two bars on: past the clock's tolerance
    _kline_value("t", b'"1"'),
    _kline_value("T", b"null"),
    _kline_value("i", b'"5m"'),  # another interval than the stream's
    _kline_value("i", b"1"),
    _kline_value("o", b'"0"'),
    _kline_value("l", b'"0"'),  # a zero low: still low <= open, close <= high
    _kline_value("h", b'"1000000000000000"'),  # a high of 1e15: past the bound, the bar still possible
    _kline_value("h", b'"0.5"'),  # a high below the low
    _kline_value("l", b'"1000"'),  # a low above the high
    _kline_value("c", b'"1e0"'),
    _kline_value("o", b'"1000000000000000"'),
    _kline_value("v", b'"-1"'),
    _kline_value("v", b'"1000000000000000000"'),
    _kline_value("q", b"3"),
    _kline_value("V", b'"x"'),
    _kline_value("n", b"1.5"),
    _kline_value("n", b'"50"'),
    _kline_value("x", b"0"),
    _kline_value("x", b"true"),  # a valid change: the bar closes, taken either way
    lambda line: line.replace(b'"e":"kline"', b'"e":"klines"', 1),
    lambda line: line.replace(b'"k":{', b'"k":{"t":1,', 1),  # a key twice
    lambda line: line.replace(b'"k":{', b'"k":{"zz":[1,{"y":null}],', 1),  # an unknown key: skipped
    lambda line: line.replace(b'"k":{', b'"k":[', 1),
    *(
        _payload_without("kline", key, candle=True)
        for key in ("t", "T", "i", "o", "c", "h", "l", "v", "n", "x", "q")
    ),
    *(
        _payload_without("kline", key, candle=True) for key in ("V", "Q")
    ),  # optional: 0 then, taken either way
    *(_payload_without("kline", key) for key in ("k", "E", "s")),
    *(_payload_without("bookTicker", key) for key in ("u", "s", "b", "B", "A")),
    *(_payload_without("depthUpdate", key) for key in ("U", "u", "pu", "s", "b", "E")),
]


def _changes(damage: Callable[[bytes], bytes], line: bytes) -> bool:
    try:
        return damage(line) != line
    except ValueError:  # a key the line does not have
        return False


def late_snapshot(lines: list[bytes], diffs: int) -> tuple[list[bytes], list[int]]:
    """``lines`` with the first depth snapshot answered late: moved past the next ``diffs`` diffs of its symbol,
    which its book keeps meanwhile (on the native path: its diff before them asked for the snapshot, on the Python
    path). Returns the lines and the indices of those diffs in them."""
    at = next(i for i, line in enumerate(lines) if b'"stream":"rest:/fapi/v1/depth?' in line[:100])
    symbol = json.loads(lines[at])["stream"].split("symbol=")[1].split("&")[0].lower().encode()
    moved = lines[:at] + lines[at + 1 :]
    kept = [i for i in range(at, len(moved)) if b'"stream":"%s@depth' % symbol in moved[i][:100]][:diffs]
    moved.insert(kept[-1] + 1, lines[at])
    return moved, kept


_LINES = list(recording_lines(USDM_CRYPTOFEED))
_LATE, _BUFFERED = late_snapshot(_LINES, 12)
_AT = {
    "depth": _pick(_LINES, b"@depth"),
    "ticker": _pick(_LINES, b"@bookTicker"),
    "trade": _pick(_LINES, b"@aggTrade"),
    "kline": _pick(_LINES, b"@kline"),
    "buffered": _BUFFERED[len(_BUFFERED) // 2],  # in _LATE: a diff kept for the late snapshot
}


def _lines(kind: str) -> list[bytes]:
    return _LATE if kind == "buffered" else _LINES


_CASES = [
    pytest.param(kind, n, id=f"{kind}-{n}")
    for kind, at in _AT.items()
    for n, damage in enumerate(DAMAGE)
    if _changes(damage, _lines(kind)[at])
]


@pytest.mark.parametrize(("kind", "damage"), _CASES)
def test_a_damaged_line_comes_out_the_same_both_ways(tmp_path: Path, kind: str, damage: int) -> None:
    """One depth or ticker line of the real recording (past its middle: the book is synced and the native path
    takes the line undamaged) damaged one way: a number the decoder refuses or reads another way, a price or
    quantity out of bounds, broken JSON, a key twice or missing, keys out of the usual order, escapes, bytes that
    are not UTF-8, another symbol, an older ticker, a gap, a crossed book. The native path must take none of them
    on a guess: the replays agree on everything, counts of rejected lines included."""
    lines = list(_lines(kind))
    at = _AT[kind]
    lines[at] = DAMAGE[damage](lines[at])
    both_ways([write_gz(tmp_path / "damaged.jsonl.gz", lines)])


def test_trades_swapped_open_a_gap_that_the_late_one_fills_both_ways(tmp_path: Path) -> None:
    """Two trades of a symbol in the wrong order: the later id opens a gap (its trades held) and the earlier one
    arriving next fills it, on the Python path, even though its id is the next after the last applied one."""
    lines = list(_LINES)
    trades = {
        i: (obj["stream"], obj["data"]["a"])
        for i, line in enumerate(lines)
        if i > len(lines) // 2 and b"@aggTrade" in line[:80] and (obj := json.loads(line))
    }
    first, second = next(
        (i, j)
        for i, (stream, a) in trades.items()
        for j, (other, b) in trades.items()
        if j > i and other == stream and b == a + 1
    )
    lines[first], lines[second] = lines[second], lines[first]
    state, _ = both_ways([write_gz(tmp_path / "swapped.jsonl.gz", lines)])
    assert state["totals"]["trade_gaps"] == 1 and state["totals"]["trades_filled"] == 1


def test_the_undamaged_lines_picked_take_the_native_path(tmp_path: Path) -> None:
    """The lines the damage tests change are ones the native path takes when whole: cut from the recording
    there, the native path takes one line fewer each."""
    for kind, at in _AT.items():
        whole_lines = _lines(kind)
        _, whole = both_ways([write_gz(tmp_path / "whole.jsonl.gz", whole_lines)])
        lines = whole_lines[:at] + whole_lines[at + 1 :]
        _, without = both_ways([write_gz(tmp_path / "cut.jsonl.gz", lines)])
        assert without < whole, kind


def test_trades_leave_a_short_window_the_same_both_ways() -> None:
    """A trade window of a few seconds and a low large-trade size: trades expire from the windows at every few
    trades (their sums and large counts taken back, the sums recomputed once as many have left as remain), the
    native path's TradeWindow.add doing what the Python one does, bit for bit."""
    state, _ = both_ways([USDM_CRYPTOFEED], Settings(trade_history_window=3, large_trade_size=500))
    flows = [s["windows"][0] for s in state.values() if isinstance(s, dict) and "windows" in s]
    held = sum(len(w[0]) for w in flows)
    trades = sum(1 for line in _LINES if b"@aggTrade" in line[:80])
    assert 0 < held < trades // 4  # most trades left the windows
    assert sum(w[1] + w[2] for w in flows) > 0  # large trades held


def _symbol_trades() -> dict[str, list[tuple[int, int]]]:
    """(trade time, line index) of every aggTrade of the recording, by symbol, in order."""
    trades: dict[str, list[tuple[int, int]]] = {}
    for i, line in enumerate(_LINES):
        if b"@aggTrade" in line[:80]:
            data = json.loads(line)["data"]
            trades.setdefault(data["s"], []).append((data["T"], i))
    return trades


def test_a_trade_at_the_window_edge_stays_the_same_both_ways(tmp_path: Path) -> None:
    """A symbol's last trade stamped exactly the window's length after the oldest trade held (a window of whole
    seconds): that trade is at the horizon, not past it, and stays in the window (``time < cutoff`` expires)."""
    for symbol, trades in _symbol_trades().items():
        (before, _), (last, at) = trades[-2], trades[-1]
        for seconds in range(1, 40):
            oldest = next(t for t, _ in trades if t >= before - seconds * 1000)
            edge = oldest + seconds * 1000
            if before <= edge <= last:  # in order, and no later than the clock took the trade
                lines = list(_LINES)
                lines[at] = _replace_value(lines[at], b"T", str(edge).encode())
                capture = write_gz(tmp_path / "edge.jsonl.gz", lines)
                state, _ = both_ways([capture], Settings(trade_history_window=seconds))
                held = state[symbol]["windows"][0][0]
                assert held[0].time == oldest and held[-1].time == edge
                return
    pytest.fail("no trade of the recording can be put at its window's edge")


def test_a_trade_of_exactly_the_large_size_is_large_both_ways() -> None:
    """The large-trade size set to one trade's quote (price x quantity, as the decoder's floats give it): that
    trade is large (``quote >= large_trade_size``) either way."""
    data = json.loads(_LINES[_symbol_trades()["SUSHIUSDT"][5][1]])["data"]
    quote = float(data["p"]) * float(data["q"])
    state, _ = both_ways([USDM_CRYPTOFEED], Settings(large_trade_size=quote))
    held = state["SUSHIUSDT"]["windows"][0][0]
    assert [t.large for t in held if t.quote == quote] == [True]


def test_diffs_kept_for_a_late_snapshot_come_out_the_same_both_ways(tmp_path: Path) -> None:
    """A snapshot answered after a dozen diffs of its symbol: the book keeps them (the native path as
    BufferedDiffs, holding the same values as the DepthUpdates of the Python path), drops those the snapshot
    holds and applies the rest. Cut before the snapshot, the books end holding them, compared one by one."""
    state, _ = both_ways([write_gz(tmp_path / "late.jsonl.gz", _LATE)])
    assert state["totals"]["book_mismatches"] == 0
    snapshot = _BUFFERED[-1] + 1
    cut = write_gz(tmp_path / "cut.jsonl.gz", _LATE[:snapshot])
    state, _ = both_ways([cut])
    symbol = json.loads(_LATE[snapshot])["stream"].split("symbol=")[1].split("&")[0]
    buffer = state[symbol]["buffer"]
    assert len(buffer) == 1 + len(_BUFFERED)  # the diff that asked for the snapshot, then those kept
    assert [d[4] for d in buffer[1:]] == [json.loads(_LATE[i])["data"]["u"] for i in _BUFFERED]
    assert any(d[6] or d[7] for d in buffer)  # levels to compare
    fast = run_replay([cut], Settings(), signals=False, native=True).market
    assert fast is not None
    kept = list(fast.symbols[symbol].book._buffer)
    assert isinstance(kept[0], DepthUpdate)
    assert [type(d).__name__ for d in kept[1:]] == ["BufferedDiff"] * len(_BUFFERED)
    assert repr(kept[1]).startswith(f"BufferedDiff(symbol='{symbol}', U=")


def test_the_engine_replay_does_not_use_the_native_path() -> None:
    """The engine reads every depth frame: a replay with it takes the Python path, and asking for both is an
    error."""
    result = run_replay([USDM_CRYPTOFEED], Settings(), signals=True)
    assert result.summary["native_lines"] == 0
    with pytest.raises(ValueError, match="without the signal engine"):
        run_replay([USDM_CRYPTOFEED], Settings(), signals=True, native=True)
