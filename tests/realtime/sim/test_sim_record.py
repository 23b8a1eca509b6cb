"""Record mode: the capture a live run would write, byte-identical for a seed, replayable with zero rejects."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from realtime.sim.record import DEFAULT_RECORD_START_MS, parse_gap, record
from tapewatch.book import OrderBook
from tapewatch.events import CONTROL_INSTRUMENTS, AggTrade, DepthUpdate, Instruments
from tapewatch.parse import FrameDecoder

from .support import Books, capture_lines


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_output_and_another_seed_differs(tmp_path: Path) -> None:
    a = record(tmp_path / "a", 20_000, seed=3, symbols=8)
    record(tmp_path / "b", 20_000, seed=3, symbols=8)
    record(tmp_path / "c", 20_000, seed=4, symbols=8)
    files_a, files_b, files_c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert files_a != files_c
    assert a.lines > 1000
    assert [p.name for p in a.files] == ["00.jsonl.gz"]
    assert a.files[0] == tmp_path / "a" / "var" / "capture" / "2026" / "01" / "05" / "00.jsonl.gz"


def test_capture_replays_with_zero_rejects_zero_gaps_and_matching_tops(tmp_path: Path) -> None:
    result = record(tmp_path, 40_000, seed=5, symbols=12)
    books = Books()
    recv = []
    streams: set[str] = set()
    for line in capture_lines(tmp_path):
        cap = orjson.loads(line)
        recv.append(cap["recv"])
        streams.add(cap["stream"].split("@", 1)[-1] if "@" in cap["stream"] else "rest")
        books.feed(books.decoder.decode_capture_line(line))
    assert books.decoder.rejected == {}
    assert books.decoder.decoded == result.lines
    assert recv == sorted(recv)  # receive order
    assert streams == {"depth@100ms", "bookTicker", "aggTrade", "kline_1m", "kline_15m", "rest"}
    assert books.gaps == 0 and books.resync_reasons == []
    assert all(b.synced for b in books.books.values()) and len(books.books) == 12
    assert books.mismatches == 0, books.samples()
    assert books.top_checks > 1000


def test_each_snapshot_arrives_after_a_few_diffs_and_a_diff_spans_it(tmp_path: Path) -> None:
    record(tmp_path, 15_000, seed=2, symbols=6)
    diffs_before: dict[str, int] = {}
    snapshot_id: dict[str, int] = {}
    spans: set[str] = set()
    decoder = FrameDecoder()
    for line in capture_lines(tmp_path):
        frame = decoder.decode_capture_line(line)
        if frame is None:  # the service's control:instruments line, for the engine only
            assert [type(f.event) for f in decoder.take_pending()] == [Instruments]
            continue
        if frame.stream.startswith("rest:/fapi/v1/depth"):
            assert frame.stream == f"rest:/fapi/v1/depth?symbol={frame.symbol}&limit=1000"
            snapshot_id[frame.symbol] = frame.event.last_update_id  # type: ignore[union-attr]
        elif isinstance(frame.event, DepthUpdate):
            if frame.symbol not in snapshot_id:
                diffs_before[frame.symbol] = diffs_before.get(frame.symbol, 0) + 1
            elif frame.event.first_id <= snapshot_id[frame.symbol] <= frame.event.final_id:
                spans.add(frame.symbol)
    assert set(snapshot_id) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"}
    assert all(diffs_before[s] >= 2 for s in snapshot_id)
    assert len(spans) >= 1  # some sync diffs arrive after the snapshot (the rest arrived just before it)


def test_an_injected_gap_is_followed_by_a_resync_snapshot(tmp_path: Path) -> None:
    record(tmp_path, 20_000, seed=5, symbols=4, gaps=[("ETHUSDT", 10_000)])
    books = Books()
    snapshots: list[str] = []
    for line in capture_lines(tmp_path):
        frame = books.decoder.decode_capture_line(line)
        if frame is not None and frame.stream.startswith("rest:/fapi/v1/depth"):
            snapshots.append(frame.symbol)
        books.feed(frame)
    assert books.gaps == 1
    assert len(books.resync_reasons) == 1 and "gap" in books.resync_reasons[0]
    assert snapshots.count("ETHUSDT") == 2 and snapshots.count("BTCUSDT") == 1
    assert all(b.synced for b in books.books.values())
    assert books.mismatches == 0


def test_a_book_that_moves_past_its_partial_snapshot_gets_a_resync_snapshot(tmp_path: Path) -> None:
    """A live client's book resyncs once the price moves past the worst level of its partial snapshot
    (tapewatch.book: beyond the snapshot's depth); the recording must hold the snapshot it then fetches, or
    a replay leaves that book out of sync for good (before: the smaller symbols' books were lost 14-86 min
    into a 2 h recording)."""
    record(tmp_path, 60_000, seed=5, symbols=4, full_snapshot_symbols=0, tail_snapshot_limit=5)
    books = Books()
    snapshots = 0
    for line in capture_lines(tmp_path):
        frame = books.decoder.decode_capture_line(line)
        if frame is not None and frame.stream.startswith("rest:/fapi/v1/depth"):
            snapshots += 1
        books.feed(frame)
    beyond = [r for r in books.resync_reasons if "beyond the snapshot's depth" in r]
    # no gap: only the partial snapshots' blind spot
    assert beyond and len(beyond) == len(books.resync_reasons)
    # every resync answered, but for at most one per symbol still in flight when the recording ends
    resyncs = snapshots - 4
    assert resyncs > 4 and 0 <= len(beyond) - resyncs <= 4
    assert sum(b.synced for b in books.books.values()) >= 4 - (len(beyond) - resyncs)
    assert books.mismatches == 0


def test_a_capture_across_an_hour_boundary_goes_to_two_hour_files(tmp_path: Path) -> None:
    start = DEFAULT_RECORD_START_MS + 3_600_000 - 5_000
    result = record(tmp_path, 10_000, seed=1, symbols=2, start_ms=start)
    names = [str(p.relative_to(tmp_path)) for p in result.files]
    assert names == ["var/capture/2026/01/05/00.jsonl.gz", "var/capture/2026/01/05/01.jsonl.gz"]
    for path in result.files:
        with gzip.open(path, "rb") as fh:
            first = orjson.loads(fh.readline())
        assert first["recv"] // 3_600_000 == int(path.name[:2]) + DEFAULT_RECORD_START_MS // 3_600_000


def test_episodes_json_is_the_ground_truth_of_planted_episodes(tmp_path: Path) -> None:
    """Each planted episode leans the book > 0.3 most of the time, has >= 3 large trades its way and a volume
    burst over 2x the average 5-minute quote volume."""
    result = record(tmp_path, 900_000, seed=5, symbols=12, episode_rate_scale=12)
    truth = json.loads(result.episodes_path.read_text())
    assert truth, "no episode planted"
    assert all(set(e) == {"symbol", "direction", "start_ms", "end_ms", "moved"} for e in truth)
    assert {e["direction"] for e in truth} <= {"LONG", "SHORT"}
    done = [e for e in truth if e["end_ms"] <= DEFAULT_RECORD_START_MS + 900_000]
    assert done
    decoder = FrameDecoder()
    books: dict[str, OrderBook] = {}
    lean = {id(e): [0, 0] for e in done}
    large = {id(e): 0 for e in done}
    volume = {id(e): 0.0 for e in done}
    by_symbol: dict[str, list[dict[str, object]]] = {}
    for e in done:
        by_symbol.setdefault(str(e["symbol"]), []).append(e)
    for line in capture_lines(tmp_path):
        frame = decoder.decode_capture_line(line)
        if frame is None or frame.symbol not in by_symbol:
            continue
        book = books.setdefault(frame.symbol, OrderBook(frame.symbol))
        ev = frame.event
        if frame.stream.startswith("rest:/fapi/v1/depth"):
            book.load_snapshot(ev)  # type: ignore[arg-type]
        elif isinstance(ev, DepthUpdate):
            book.apply(ev)
            for e in by_symbol[frame.symbol]:
                sign = 1 if e["direction"] == "LONG" else -1
                if book.synced and int(e["start_ms"]) + 2_000 <= ev.event_time <= int(e["end_ms"]):  # type: ignore[call-overload]
                    lean[id(e)][1] += 1
                    lean[id(e)][0] += sign * book.imbalance(10) > 0.3
        elif isinstance(ev, AggTrade):
            for e in by_symbol[frame.symbol]:
                if int(e["start_ms"]) <= ev.trade_time <= int(e["end_ms"]):  # type: ignore[call-overload]
                    volume[id(e)] += ev.price * ev.qty
                    if ev.price * ev.qty >= 50_000 and ev.buyer_is_maker == (e["direction"] == "SHORT"):
                        large[id(e)] += 1
    from realtime.sim.symbols import build_universe

    volume_24h = {s.symbol: s.quote_volume_24h for s in build_universe(12)}
    for e in done:
        minutes = (int(e["end_ms"]) - int(e["start_ms"])) / 60_000
        assert lean[id(e)][0] / lean[id(e)][1] > 0.7, e
        assert large[id(e)] >= 3, e
        assert volume[id(e)] > 2 * volume_24h[str(e["symbol"])] / 1440 * minutes, e


def test_bad_arguments_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duration"):
        record(tmp_path, 0)
    with pytest.raises(ValueError, match="NOPEUSDT"):
        record(tmp_path, 1_000, symbols=2, gaps=[("NOPEUSDT", 10)])
    with pytest.raises(ValueError, match="within the recording"):
        record(tmp_path, 1_000, symbols=2, gaps=[("BTCUSDT", 5_000)])
    with pytest.raises(ValueError, match="snapshot limit"):
        record(tmp_path, 1_000, symbols=2, snapshot_limit=7)
    with pytest.raises(ValueError, match="between 1 and 800"):
        record(tmp_path, 1_000, symbols=0)


def test_gap_specs_parse() -> None:
    assert parse_gap("ethusdt@30m") == ("ETHUSDT", 1_800_000)
    assert parse_gap("BTCUSDT@90s") == ("BTCUSDT", 90_000)
    for bad in ("ETHUSDT", "@5m", "ETH-USDT@5m", "ETHUSDT@soon"):
        with pytest.raises(ValueError):
            parse_gap(bad)


def test_capture_starts_with_the_kline_history_a_live_run_fetches(tmp_path: Path) -> None:
    from realtime.sim.record import HISTORY_KLINES
    from tapewatch.market import Market

    record(tmp_path, 5_000, seed=4, symbols=3)
    decoder, market = FrameDecoder(), Market()
    streams = []
    for line in capture_lines(tmp_path):
        frame = decoder.decode_capture_line(line)
        if frame is None:  # the service's control:instruments line, for the engine only
            assert [type(f.event) for f in decoder.take_pending()] == [Instruments]
            continue
        if frame.stream.startswith("rest:/fapi/v1/klines"):
            streams.append(frame.stream)
        market.on_frame(frame)
    assert len(streams) == 3 * len(HISTORY_KLINES)
    for st in market.symbols.values():
        assert len(st.candles["15m"].closed) == 100  # the kline_history_bars context
        assert len(st.candles["1m"].closed) >= 240  # four hours of 1-minute returns for correlation
        closes = [c.open_time for c in st.candles["15m"].closed]
        assert closes == sorted(closes) and closes[-1] - closes[0] == 99 * 900_000


def test_the_record_command_takes_gaps_and_the_episode_rate_and_refuses_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tapewatch.cli import main

    common = ["sim", "--seed", "5", "--symbols", "4", "--duration", "20s"]
    assert main([*common, "--record", str(tmp_path / "gap"), "--gap", "ETHUSDT@10s"]) == 0
    books = Books()
    for line in capture_lines(tmp_path / "gap"):
        books.feed(books.decoder.decode_capture_line(line))
    assert books.gaps == 1 and books.mismatches == 0

    # the episode rate reaches the recording (at the usual rate no episode starts in 330 s): the same bytes as
    # record() with that scale
    rate = ["sim", "--seed", "5", "--symbols", "2", "--duration", "330s", "--episode-rate", "200"]
    assert main([*rate, "--record", str(tmp_path / "cli")]) == 0
    record(tmp_path / "api", 330_000, seed=5, symbols=2, episode_rate_scale=200)
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")
    assert json.loads((tmp_path / "cli" / "episodes.json").read_text())
    capsys.readouterr()

    # faults cannot apply to a recording (no connection): refused with what to do instead, nothing written
    assert main([*common, "--record", str(tmp_path / "faults"), "--faults", "gap=30s"]) == 2
    assert "--gap SYMBOL@OFFSET" in capsys.readouterr().err and not (tmp_path / "faults").exists()
    assert main([*common, "--record", str(tmp_path / "bad"), "--gap", "ETHUSDT"]) == 2
    assert "SYMBOL@OFFSET" in capsys.readouterr().err
    assert main(["sim", "--gap", "ETHUSDT@1m"]) == 2
    assert "--record" in capsys.readouterr().err


def test_capture_starts_with_the_tick_sizes_a_live_run_captures(tmp_path: Path) -> None:
    """As the live service captures the tick sizes of its exchangeInfo fetch (``control:instruments``) before the
    kline history, so a replay of a sim capture puts stops and targets on the same price grid."""
    from realtime.sim.venue import Venue

    record(tmp_path, 2_000, seed=4, symbols=3)
    first = orjson.loads(next(iter(capture_lines(tmp_path))))
    assert first["stream"] == CONTROL_INSTRUMENTS
    served = Venue(4, 3, DEFAULT_RECORD_START_MS).exchange_info()["symbols"]
    ticks = {
        s["symbol"]: next(f["tickSize"] for f in s["filters"] if f["filterType"] == "PRICE_FILTER")
        for s in served
        if s["contractType"] == "PERPETUAL" and s["status"] == "TRADING" and s["quoteAsset"] == "USDT"
    }
    assert ticks.keys() == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert first["data"] == {"tick_sizes": ticks}  # the step the simulator serves, as plain decimals
