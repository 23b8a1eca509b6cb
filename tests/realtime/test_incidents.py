"""Feed incidents from the realtime service to PostgreSQL: the recorder (queue, batches, outage, bound) and
the watch (gaps, resyncs, reconnects, stale books, malformed minutes, 429/418), against real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from realtime.incident_watch import IncidentWatch, incident_kind
from realtime.incidents import IncidentRecorder
from realtime.ws_delivery import StreamsStarted, StreamsStopped
from realtime.ws_stats import TransportStats
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.db import Database
from tapewatch.adapters.embedded import start_postgres, stop_postgres
from tapewatch.adapters.incidents import (
    Change,
    IncidentRow,
    NewIncident,
    PartlyWritten,
    list_incidents,
    write_changes,
)
from tapewatch.adapters.weight_budget import WeightBudget
from tapewatch.errors import StorageUnavailable
from tapewatch.market import Market, MarketConfig
from tapewatch.parse import Frame, FrameDecoder
from tapewatch.streams import Kind
from tests.adapters.rest_test_server import FakeClock, Reply, RestTestServer, closed_port
from tests.helpers import diff, snapshot

DEPTH = "btcusdt@depth@100ms"
T0 = 1_723_122_000.0  # wall clock of the tests (epoch s), on a minute boundary


class Clock:
    """Wall-clock seconds that move only when the test says."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def written(db: Database, kind: str | None = None) -> list[IncidentRow]:
    """Every row (of ``kind``), oldest first."""
    return list(reversed(list_incidents(db, kind=kind, limit=10_000)))


async def drained(recorder: IncidentRecorder, within: float = 10.0) -> None:
    """Wait until the recorder's writer task has written everything queued."""
    deadline = asyncio.get_running_loop().time() + within
    while recorder.queued:
        assert asyncio.get_running_loop().time() < deadline, f"{recorder.queued} changes still queued"
        await asyncio.sleep(0.01)


# --- the recorder ------------------------------------------------------------------------------------------


def test_the_recorder_writes_in_batches_on_its_own_task(db: Database) -> None:
    clock = Clock()
    # an incident a previous run left open: closed when the new recorder starts
    write_changes(db, [NewIncident("stale", datetime.fromtimestamp(T0 - 60, UTC), "ETHUSDT", "old")])

    async def main() -> IncidentRecorder:
        recorder = IncidentRecorder(db, batch_size=2, clock=clock)
        task = asyncio.create_task(recorder.run())
        assert recorder.open("gap", symbol="BTCUSDT", stream=DEPTH, detail="gap: pu=5", event_time=1)
        assert not recorder.open("gap", symbol="BTCUSDT", stream=DEPTH, detail="gap again")  # a repeat
        recorder.record("malformed", stream="btcusdt@aggTrade", detail="2 malformed frames")
        clock.now += 2
        assert recorder.resolve("gap", symbol="BTCUSDT", stream=DEPTH, note="book synced again")
        assert not recorder.resolve("gap", symbol="BTCUSDT", stream=DEPTH)  # nothing open any more
        await drained(recorder)
        task.cancel()
        return recorder

    recorder = asyncio.run(main())
    old, gap, malformed = written(db)
    assert old.resolved_at is not None and "restarted" in old.detail
    assert gap.kind == "gap" and gap.event_time == 1 and gap.resolved_at is not None
    assert (gap.resolved_at - gap.recorded_at).total_seconds() == 2
    assert gap.detail == "gap: pu=5; book synced again; 1 more while open"
    assert malformed.resolved_at == malformed.recorded_at  # a point event
    assert recorder.stats.written == 4 and recorder.stats.repeats == 1
    assert recorder.metrics()["incidents_open"] == 0


@pytest.mark.slow
def test_incidents_stay_queued_while_postgresql_is_down_and_are_written_when_it_returns(
    server_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A PostgreSQL of this test's own: stopping a shared server would hurt other tests.
    pgdata = server_tmp_path / "pg"
    db = Database(start_postgres(pgdata), connect_timeout=2)
    db.upgrade()

    async def main() -> IncidentRecorder:
        recorder = IncidentRecorder(db, retry_min=0.02, retry_max=0.1)
        task = asyncio.create_task(recorder.run())
        recorder.open("stale", symbol="BTCUSDT", stream=DEPTH, detail="before the outage")
        await drained(recorder)
        await asyncio.to_thread(stop_postgres, pgdata)
        started = asyncio.get_running_loop().time()
        recorder.resolve("stale", symbol="BTCUSDT", stream=DEPTH, note="updates resumed")
        for i in range(5):
            recorder.open("gap", symbol=f"SYM{i}", stream=f"sym{i}@depth@100ms", detail=f"during #{i}")
        # the event loop is never blocked by the outage: this task ticks on while the writes fail
        loop = asyncio.get_running_loop()
        ticks = [loop.time()]
        while recorder.stats.write_errors < 3:
            await asyncio.sleep(0.01)
            ticks.append(loop.time())
        assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5
        assert loop.time() - started < 10
        assert recorder.queued == 6
        await asyncio.to_thread(start_postgres, pgdata)
        await drained(recorder, within=30)
        task.cancel()
        return recorder

    with caplog.at_level(logging.WARNING, logger="realtime.incidents"):
        try:
            recorder = asyncio.run(main())
            rows = written(db)
        finally:
            db.dispose()
            stop_postgres(pgdata)
    assert [r.detail for r in rows] == ["before the outage; updates resumed"] + [
        f"during #{i}" for i in range(5)
    ]
    assert rows[0].resolved_at is not None and all(r.resolved_at is None for r in rows[1:])
    assert recorder.stats.dropped == 0 and recorder.stats.written == 8  # with the leftovers' close
    messages = [r.getMessage() for r in caplog.records]
    assert sum("keeping them queued" in m for m in messages) == 1  # one line per outage, not per retry
    assert any("PostgreSQL is back" in m for m in messages)


def test_the_queue_is_bounded_drops_the_oldest_new_incidents_and_keeps_resolutions(db: Database) -> None:
    async def main() -> IncidentRecorder:
        recorder = IncidentRecorder(db, capacity=3, close_leftovers=False)
        task = asyncio.create_task(recorder.run())
        recorder.open("stale", symbol="AUSDT", stream="a", detail="A")
        await drained(recorder)
        task.cancel()  # from here on nothing is written: as when PostgreSQL is away
        recorder.open("stale", symbol="BUSDT", stream="b", detail="B")
        recorder.resolve("stale", symbol="AUSDT", stream="a", note="resumed")
        for name in "CDE":
            recorder.record("malformed", stream=name.lower(), detail=name)
        assert recorder.queued == 3 and recorder.stats.dropped == 2  # B and C went, A's resolution stayed
        assert await recorder.close() == 0
        return recorder

    recorder = asyncio.run(main())
    rows = written(db)
    assert [(r.detail, r.resolved_at is not None) for r in rows] == [
        ("A; resumed", True),
        ("D", True),
        ("E", True),
    ]
    assert recorder.metrics()["incidents_dropped"] == 2


def test_an_unreachable_database_at_shutdown_leaves_the_rest_counted_not_hanging() -> None:
    with closed_port() as port:
        db = Database(f"postgresql://tw@127.0.0.1:{port}/tapewatch", connect_timeout=2)

        async def main() -> tuple[int, IncidentRecorder]:
            recorder = IncidentRecorder(db)
            recorder.record("malformed", detail="x")
            return await recorder.close(within=1.0), recorder

        try:
            left, recorder = asyncio.run(main())
        finally:
            db.dispose()
    assert left == 2 and recorder.stats.write_errors == 1


# --- the watch: what counts as an incident -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("gap: pu=5 but last applied u=4", "gap"),
        ("crossed book after u=9: bid (2.0, 1.0) >= ask (1.0, 1.0)", "resync"),
        ("snapshot too old: first event U=12 > lastUpdateId=10", "resync"),
        ("depth stream reconnect", "resync"),
        ("price moved beyond the snapshot's depth after u=3", "resync"),
        ("cold start", None),
        ("depth stream connect", None),
        ("depth stream subscribe", None),
    ],
)
def test_snapshot_reasons_are_classified(reason: str, kind: str | None) -> None:
    assert incident_kind(reason) == kind


def synced_market(*symbols: str, stale_after_ms: int = 5000) -> Market:
    market = Market(MarketConfig(stale_after_ms=stale_after_ms))
    for symbol in symbols:
        feed(market, symbol, diff(1, 10, 0, [(100.0, 1.0)], [(101.0, 1.0)], symbol=symbol, time=1_000))
        market.on_frame(
            Frame(
                1_000,
                f"rest:/fapi/v1/depth?symbol={symbol}&limit=1000",
                symbol,
                Kind.SNAPSHOT,
                snapshot(5),
            )
        )
        assert market.state(symbol).book.synced
    return market


def feed(market: Market, symbol: str, event: object) -> object:
    return market.on_frame(Frame(1_000, f"{symbol.lower()}@depth@100ms", symbol, Kind.DEPTH, event))  # type: ignore[arg-type]


def write_all(recorder: IncidentRecorder) -> None:
    assert asyncio.run(recorder.close()) == 0


def test_a_gap_opens_an_incident_resolved_when_the_book_is_synced_again(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.incident_watch")
    recorder = IncidentRecorder(db, close_leftovers=False)
    watch = IncidentWatch(recorder)
    market = synced_market("BTCUSDT", "ETHUSDT")
    request = feed(market, "BTCUSDT", diff(12, 14, 11, symbol="BTCUSDT", time=1_200))  # pu=11, last u=10
    assert request is not None
    watch.on_snapshot_needed(request.symbol, request.reason, 1_200)  # type: ignore[attr-defined]
    watch.on_snapshot_needed("ETHUSDT", "cold start")  # normal: no incident
    watch.check(market, ["BTCUSDT", "ETHUSDT"], FrameDecoder())
    assert recorder.is_open("gap", symbol="BTCUSDT", stream=DEPTH)  # still resyncing
    market.on_frame(
        Frame(1_300, "rest:/fapi/v1/depth?symbol=BTCUSDT&limit=1000", "BTCUSDT", Kind.SNAPSHOT, snapshot(13))
    )
    assert market.state("BTCUSDT").book.synced
    watch.check(market, ["BTCUSDT", "ETHUSDT"], FrameDecoder())
    assert not recorder.is_open("gap", symbol="BTCUSDT", stream=DEPTH)
    # the recovery is in the log too, with its symbol and stream, as the "book out of sync" warning was
    (line,) = [r for r in caplog.records if "book incident resolved" in r.getMessage()]
    assert line.getMessage() == "book incident resolved (gap): book synced again at u=14"
    assert (line.__dict__["symbol"], line.__dict__["stream"]) == ("BTCUSDT", DEPTH)
    write_all(recorder)
    (row,) = written(db)
    assert (row.kind, row.symbol, row.stream, row.event_time) == ("gap", "BTCUSDT", DEPTH, 1_200)
    assert row.detail.startswith("gap: pu=11") and row.detail.endswith("book synced again at u=14")
    assert row.resolved_at is not None


def test_a_symbol_leaving_the_universe_resolves_its_incidents(db: Database) -> None:
    recorder = IncidentRecorder(db, close_leftovers=False)
    watch = IncidentWatch(recorder)
    market = synced_market("BTCUSDT")
    watch.on_snapshot_needed("BTCUSDT", "crossed book after u=9: bid 2 >= ask 1", 1_000)
    market.state("BTCUSDT").book.reset("crossed")
    watch.check(market, ["BTCUSDT"], FrameDecoder())
    watch.check(market, [], FrameDecoder())
    write_all(recorder)
    (row,) = written(db)
    assert row.kind == "resync" and row.detail.endswith("symbol left the universe")


def test_a_stale_book_opens_an_incident_resolved_when_updates_resume(db: Database) -> None:
    recorder = IncidentRecorder(db, close_leftovers=False)
    watch = IncidentWatch(recorder)
    market = synced_market("BTCUSDT", "ETHUSDT")
    universe = ["BTCUSDT", "ETHUSDT"]
    # ETHUSDT moves on for 6 s of exchange time; BTCUSDT says nothing
    feed(market, "ETHUSDT", diff(11, 11, 10, symbol="ETHUSDT", time=7_000))
    watch.check(market, universe, FrameDecoder())
    watch.check(market, universe, FrameDecoder())  # still stale: no second row
    assert recorder.is_open("stale", symbol="BTCUSDT", stream=DEPTH)
    assert not recorder.is_open("stale", symbol="ETHUSDT", stream="ethusdt@depth@100ms")
    feed(market, "BTCUSDT", diff(11, 11, 10, symbol="BTCUSDT", time=7_100))
    watch.check(market, universe, FrameDecoder())
    write_all(recorder)
    (row,) = written(db)
    assert (row.kind, row.symbol, row.event_time) == ("stale", "BTCUSDT", 1_000)
    assert row.detail.startswith("no depth update for 6.0 s") and row.detail.endswith("updates resumed")
    assert row.resolved_at is not None


def test_a_dropped_connection_opens_a_reconnect_incident_closed_by_the_reconnect(db: Database) -> None:
    recorder = IncidentRecorder(db, close_leftovers=False)
    watch = IncidentWatch(recorder)
    streams = (DEPTH, "btcusdt@bookTicker")
    watch.on_marker(StreamsStarted(streams, "public-0#1", "connect"))  # normal
    watch.on_marker(StreamsStopped(("x@aggTrade",), "market-0#1", "unsubscribe"))  # normal
    watch.on_marker(StreamsStopped(streams, "public-0#1", "stale"))
    assert recorder.is_open("reconnect", stream="public-0")
    watch.on_marker(StreamsStarted(streams, "public-0#2", "reconnect"))
    watch.on_marker(StreamsStarted(streams, "market-0#7", "reconnect"))  # its drop was never seen
    write_all(recorder)
    first, second = written(db)
    assert (first.symbol, first.stream, first.resolved_at is not None) == (None, "public-0", True)
    assert (
        first.detail
        == "connection public-0#1 dropped (stale); 2 streams stopped; reconnected as public-0#2 with 2 streams"
    )
    assert second.stream == "market-0" and second.resolved_at is not None


def test_malformed_frames_are_summed_per_stream_per_minute(db: Database) -> None:
    clock = Clock(T0 + 5)
    recorder = IncidentRecorder(db, close_leftovers=False, clock=clock)
    watch = IncidentWatch(recorder, clock=clock)
    decoder, transport, market = FrameDecoder(), TransportStats(), Market()
    for _ in range(3):
        assert decoder.decode_payload(1, DEPTH, b'{"e":"depthUpdate"') is None  # cut short
    assert decoder.decode_payload(1, DEPTH, b'{"e":"depthUpdate","E":1}') is None  # fields missing
    assert decoder.decode_payload(1, "btcusdt@aggTrade", b"not json") is None
    transport.malformed += 2  # frames that were not even a combined-stream envelope
    watch.check(market, [], decoder, transport)
    for _ in range(100):  # more in the same minute: still one row per stream
        decoder.decode_payload(1, "btcusdt@aggTrade", b"not json")
    clock.now += 30
    watch.check(market, [], decoder, transport)
    assert recorder.queued == 0  # nothing is written before the minute is over
    clock.now += 30  # the next minute: the first one is recorded
    decoder.decode_payload(1, "ethusdt@aggTrade", b"{")
    watch.check(market, [], decoder, transport)
    watch.flush()  # at shutdown: the second minute so far
    write_all(recorder)
    rows = written(db, "malformed")
    summary = {(r.stream, r.symbol): r.detail for r in rows}
    assert len(rows) == 4 and all(r.resolved_at == r.recorded_at for r in rows)
    since = "since 13:00:00 UTC"
    assert summary[(DEPTH, "BTCUSDT")] == f"4 malformed frames {since}: malformed_json 3, schema 1"
    assert summary[("btcusdt@aggTrade", "BTCUSDT")] == f"101 malformed frames {since}: malformed_json 101"
    assert summary[(None, None)].startswith(f"2 malformed frames {since} (frames naming no subscribed")
    assert (
        summary[("ethusdt@aggTrade", "ETHUSDT")] == "1 malformed frames since 13:01:00 UTC: malformed_json 1"
    )


def test_rate_limits_and_bans_open_incidents_until_they_end(db: Database) -> None:
    recorder = IncidentRecorder(db, close_leftovers=False)
    watch = IncidentWatch(recorder)
    clock = FakeClock()
    too_many = Reply(429, b'{"code":-1003,"msg":"Too many requests."}', {"Retry-After": "7"})
    ban = Reply(418, b'{"code":-1003,"msg":"IP banned until 1700000120000."}', {"Retry-After": "120"})

    async def main(server: RestTestServer) -> None:
        budget = WeightBudget(100, clock=clock, sleep=clock.sleep, wall_clock=lambda: 1_700_000_000.0)
        async with BinanceRest(server.url, budget, max_retries=0, sleep=clock.sleep) as rest:
            check: Callable[[], None] = lambda: watch.check(Market(), [], FrameDecoder(), None, rest)  # noqa: E731
            check()
            with pytest.raises(Exception, match="429"):
                await rest.server_time()
            check()
            assert recorder.is_open("rate_limited", stream="rest")
            clock.now += 8
            check()
            assert not recorder.is_open("rate_limited", stream="rest")
            with pytest.raises(Exception, match="banned"):
                await rest.server_time()
            check()
            clock.now += 60
            check()
            assert recorder.is_open("banned", stream="rest")
            clock.now += 61
            check()
            assert not recorder.is_open("banned", stream="rest")

    with RestTestServer(clock) as server:
        server.route("/fapi/v1/time", [too_many, ban])
        asyncio.run(main(server))
    write_all(recorder)
    limited, banned = written(db)
    assert limited.kind == "rate_limited" and "paused 7 s" in limited.detail
    assert limited.detail.endswith("REST calls resumed") and limited.resolved_at is not None
    assert banned.kind == "banned" and "until 2023-11-14 22:15:20 UTC" in banned.detail
    assert banned.detail.endswith("ban over") and banned.resolved_at is not None


# --- the service against the simulated exchange ----------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_the_service_records_an_injected_gap_and_a_dropped_connection(
    tmp_path: Path, migrated_database_url: str
) -> None:
    from realtime.main import run_service
    from realtime.service import FeedService
    from realtime.sim.server import SimExchange
    from tapewatch.universe import top_by_volume, tradable_perpetuals
    from tests.realtime.test_service_sim import settings_for

    async def scenario() -> tuple[FeedService, str]:
        async with SimExchange(port=0, seed=5, symbols=8, speed=1.0) as sim:
            settings = settings_for(sim, tmp_path, "twtest:incidents:")
            async with BinanceRest.from_settings(settings) as rest:
                info, _ = await rest.exchange_info()
                tickers, _ = await rest.ticker_24hr()
            symbol = top_by_volume(tradable_perpetuals(info.symbols), tickers, 5)[0]
            stop = asyncio.Event()

            async def faults() -> None:
                try:
                    await asyncio.sleep(2.5)  # let the books sync first
                    sim.faults.gap(symbol)
                    sim.faults.malformed("invalid_json")
                    await asyncio.sleep(1.5)
                    sim.faults.drop_connections()
                    await asyncio.sleep(2.5)  # reconnected, books resynced
                finally:
                    stop.set()

            injector = asyncio.create_task(faults())
            service = await run_service(
                settings, redis_url=None, database_url=migrated_database_url, stop=stop
            )
            await injector
            return service, symbol

    service, symbol = asyncio.run(scenario())
    assert service.market.totals()["gaps"] >= 1
    db = Database(migrated_database_url)
    try:
        gaps = written(db, "gap")
        reconnects = written(db, "reconnect")
        malformed = written(db, "malformed")
        resyncs = written(db, "resync")
    finally:
        db.dispose()
    assert [(r.symbol, r.stream) for r in gaps] == [(symbol, f"{symbol.lower()}@depth@100ms")]
    assert gaps[0].detail.startswith("gap: pu=") and gaps[0].event_time
    assert gaps[0].resolved_at is not None, "the book resynced after the gap"
    assert {r.symbol for r in resyncs} == set(service.universe), "every book resynced after the drop"
    assert all(r.detail.startswith("depth stream reconnect") and r.resolved_at for r in resyncs)
    assert {r.stream for r in reconnects} == {"public-0", "market-0"}
    assert all(r.resolved_at is not None for r in reconnects), "every connection came back"
    assert malformed and sum(int(r.detail.split()[0]) for r in malformed) >= 1
    assert service.metrics()["incidents_queued"] == 0 and service.metrics()["incidents_dropped"] == 0


def test_a_firewall_block_opens_a_rate_limit_incident_until_the_pause_ends(db: Database) -> None:
    """A 403 from Binance's web application firewall pauses every REST call like a 429: the operator sees it
    as an incident saying so, resolved when calls resume."""
    recorder = IncidentRecorder(db, close_leftovers=False)
    watch = IncidentWatch(recorder)
    clock = FakeClock()
    blocked = Reply(403, b"<html><body>403 Forbidden</body></html>", {"Retry-After": "9"})

    async def main(server: RestTestServer) -> None:
        budget = WeightBudget(100, clock=clock, sleep=clock.sleep, wall_clock=lambda: 1_700_000_000.0)
        async with BinanceRest(server.url, budget, max_retries=0, sleep=clock.sleep) as rest:
            check: Callable[[], None] = lambda: watch.check(Market(), [], FrameDecoder(), None, rest)  # noqa: E731
            check()
            with pytest.raises(Exception, match=r"403|firewall"):
                await rest.server_time()
            check()
            assert recorder.is_open("rate_limited", stream="rest")
            clock.now += 10
            check()
            assert not recorder.is_open("rate_limited", stream="rest")

    with RestTestServer(clock) as server:
        server.route("/fapi/v1/time", [blocked])
        asyncio.run(main(server))
    write_all(recorder)
    (limited,) = written(db)
    assert limited.kind == "rate_limited" and "403 (its web application firewall" in limited.detail
    assert "paused 9 s" in limited.detail and limited.resolved_at is not None


def test_a_batch_partly_written_before_an_outage_is_retried_from_where_it_stopped(db: Database) -> None:
    """The writer says how many changes of the batch it settled before PostgreSQL went away: only the rest
    goes back in the queue, so no incident is written twice."""
    batches: list[list[Change]] = []

    def writer(batch: list[Change]) -> int:
        batches.append(list(batch))
        if len(batches) == 1:  # the first change written, then the server is gone
            write_changes(db, batch[:1])
            raise PartlyWritten(StorageUnavailable("PostgreSQL went away"), done=1, refused=0)
        return write_changes(db, batch)

    async def main() -> IncidentRecorder:
        recorder = IncidentRecorder(db, close_leftovers=False, retry_min=0.01)
        recorder._writer = writer
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            recorder.open("stale", symbol=symbol, stream=f"{symbol.lower()}@depth@100ms", detail="quiet")
        task = asyncio.create_task(recorder.run())
        await drained(recorder)
        task.cancel()
        return recorder

    recorder = asyncio.run(main())
    assert [len(b) for b in batches] == [3, 2]
    assert [row.symbol for row in written(db)] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert (recorder.stats.written, recorder.stats.refused, recorder.stats.write_errors) == (3, 0, 1)


def test_frames_in_flight_after_an_unsubscribe_are_no_malformed_incident(db: Database) -> None:
    """A universe change unsubscribes streams whose last frames are already on the wire: counted apart
    (``late_unsubscribed``), as the malformed metric counts them. Before, each rescan of the demo recorded a
    'malformed' feed incident of ~100 such frames. A frame of a stream never subscribed stays malformed."""
    clock = Clock(T0 + 5)
    recorder = IncidentRecorder(db, close_leftovers=False, clock=clock)
    watch = IncidentWatch(recorder, clock=clock)
    decoder, transport, market = FrameDecoder(), TransportStats(), Market()
    transport.unowned_frames += 128
    transport.late_unsubscribed += 128
    watch.check(market, [], decoder, transport)
    clock.now += 60
    watch.check(market, [], decoder, transport)
    watch.flush()
    write_all(recorder)
    assert written(db, "malformed") == []
    transport.unowned_frames += 2  # streams nobody subscribed to
    watch.check(market, [], decoder, transport)
    watch.flush()
    write_all(recorder)
    (row,) = written(db, "malformed")
    assert row.detail is not None and row.detail.startswith("2 malformed frames since 13:01:00 UTC")
    assert row.detail.endswith("unsubscribed_stream 2")
