"""``signal_outcomes``: the authoritative outcome of every finished ENTRY signal, from 1-minute klines.

Per UTC day ``D`` (partition ``YYYY-MM-DD``, the day of the signals' creation event time) it takes the ENTRY
signals of ``D`` that have no finished batch outcome yet (none at all: the live tracker missed them while
the service was down; a live one; an unfinished one) and whose last possible end has passed
(``tapewatch.outcome_batch``), fetches each one's 1-minute klines through ``BinanceRestResource``, and the
aggTrades of its deciding minutes, asked one after the other as the evaluation names them (the creation
minute from ``created`` on, the trigger's minute, the minute of the trigger window's deadline, the minute of
the hold's deadline: ``tapewatch.outcome.MinuteRole``; used only when they are the candle's whole tape; kept with their ids, so the trades of the
creation millisecond applied after the signal, ids above its stored ``created_after_agg_id``, count as they
did live; without the trades a minute counts capped, the
conservative way: metadata ``<role>_minute_exact`` / ``_capped``), evaluates them
(``tapewatch.outcome.evaluate``: same-candle stop and target counts the stop) and stores the result with
``source='batch'``, which replaces the live value. The check
``batch_agrees_with_live`` warns, with the list, when a finished live outcome differs from the batch one
in state or in P&L by more than ``outcome_pnl_tolerance`` R (the batch value stands either way).

The check is partitioned like the asset (one result per day, so a run for another day never overwrites a
failing one) and judges the whole stored day (``disagreement_count`` over the day's recorded
disagreements), not just this pass: a later pass with nothing left to compare still reports the
disagreements an earlier pass of the same day found.

The check ``klines_fetched`` (also one result per day) fails, naming the signals and the errors, when a run
could not fetch the klines of some due signals of the day: those have no batch outcome, so the day's
numbers miss them (or use their live outcome, when one finished). Every run asks again for every due signal
of the day still without a batch outcome, so its result is the day's state; a run that fetched none (and
fails) records it too. WARN on the first pass (the day's final pass asks again a few hours later), ERROR on
any other run: the day's final numbers and report are then incomplete until a later run fetches them
(``outcomes_catch_up_schedule`` in ``orchestration.performance`` retries the days before each final pass,
for a bounded number of days; after that a run by hand).

A run that could fetch the klines of none of its due signals fails (Binance unreachable, a wrong URL) —
except a catch-up run (tag ``tapewatch/pass=catch-up``): it asks only for the signals earlier runs could not
fetch, so fetching none of them is its usual outcome while a symbol stays refused (delisted: ``-1121``), not
a sign of an outage (the day's own passes, which ask for every signal, say that). Its ``klines_fetched``
ERROR is the day's state; failing the run as well made one failed run a day, and a ``dagster_run`` incident
that no later run could close, for a day nothing can settle.

``candidate_outcomes`` (same partitions, in ``daily_performance_job`` beside ``signal_outcomes``): the would-be
outcome of each candidate of ``D`` that did not become a signal (``low_quality``, ``cooldown``, the caps,
``concurrency``, ``correlation``, ...) and has a trade plan (sql/0012), by the same fetch and the same
``batch_outcome`` (a low_quality candidate with LOW's response window and hold: ``tapewatch.candidate_outcome``),
stored in ``candidate_outcomes`` for monthly tuning. A candidate whose klines could not be fetched, or do not
reach its end yet, is asked again by the next run (logged, counted in the metadata; the run does not fail:
metrics and reports never read these outcomes).
"""

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import msgspec

from orchestration.resources import BinanceRestResource, DatabaseResource, TapewatchSettings
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.candidate_outcome_store import candidates_to_settle, save_candidate_outcomes
from tapewatch.adapters.performance_store import disagreement_count, entries_to_settle, save_batch
from tapewatch.errors import TapewatchError
from tapewatch.events import Candle, rows_sent
from tapewatch.outcome import MinuteRead, MinuteRole, OpenSignal, Outcome, OutcomeParams, TradeSpan
from tapewatch.outcome_batch import (
    BatchRun,
    Disagreement,
    batch_evaluation,
    batch_outcome,
    is_due,
    kline_windows,
)
from tapewatch.signal import Signal
from tapewatch.signal_follow import open_signal

#: First day of the daily, weekly and monthly partitions (a Monday); backfills reach back to it.
PARTITIONS_START = "2024-01-01"
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
AGREEMENT_CHECK = "batch_agrees_with_live"
FETCH_CHECK = "klines_fetched"
#: Kline requests in flight at once (the client's weight budget paces them further).
FETCH_CONCURRENCY = 8
#: aggTrades per request (Binance's maximum) and pages at most for one deciding minute (weight 20 each);
#: beyond that the minute counts capped.
TRADE_PAGE = 1000
MAX_TRADE_PAGES = 20
#: Binance serves aggTrades "not older than one year": older minutes count capped without asking.
AGG_TRADES_HISTORY_MS = 365 * 86_400_000
#: Deciding minutes fetched at most for one signal (creation, trigger or trigger deadline, hold deadline: 3
#: as a rule); the evaluation reads any further one capped.
MAX_TRADE_MINUTES = 6


def day_of_partition(key: str) -> date:
    """The UTC day of a daily partition key (``2024-03-05``)."""
    return date.fromisoformat(key)


def day_ms(day: date) -> int:
    """Epoch ms of 00:00 UTC of ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def batch_signal(signal: Signal) -> OpenSignal:
    """The outcome's view of a stored ENTRY signal, with the last aggTrade id applied at its creation."""
    return msgspec.structs.replace(open_signal(signal), created_after_agg_id=signal.created_after_agg_id)


class Fetched(msgspec.Struct, kw_only=True):
    """What one signal's outcome is computed from: its klines, and the trades (event time, price, aggTrade
    id) of its deciding minutes by the minute's open time (None: not to be had, ``notes`` say why; the minute
    then counts capped)."""

    candles: list[Candle]
    trades: dict[int, list[tuple[int, float, int]] | None] = msgspec.field(default_factory=dict)
    notes: list[str] = msgspec.field(default_factory=list)


async def fetch_klines(client: BinanceRest, sig: OpenSignal, params: OutcomeParams) -> list[Candle]:
    """The 1-minute klines of the signal's outcome window (one request per 1,500 minutes)."""
    candles: list[Candle] = []
    for w in kline_windows(sig, params):
        page, _ = await client.klines(sig.symbol, "1m", limit=w.limit, start_ms=w.start_ms, end_ms=w.end_ms)
        candles += page
    return candles


async def fetch_trades(
    client: BinanceRest, symbol: str, span: TradeSpan, now_ms: int
) -> list[tuple[int, float, int]] | str:
    """(event time, price, aggTrade id) of every aggTrade of ``symbol`` in ``span`` (one minute at most), paged
    by time (``startTime`` = the last trade's time, repeats dropped by id); a string says why there are none
    to be had (too old for Binance, too many pages)."""
    if now_ms - span.start > AGG_TRADES_HISTORY_MS:
        return "older than Binance keeps aggTrades"
    trades: list[tuple[int, float, int]] = []
    start, last_id = span.start, -1
    for _ in range(MAX_TRADE_PAGES):
        page, answer = await client.agg_trades(symbol, start_ms=start, end_ms=span.end, limit=TRADE_PAGE)
        new = [t for t in page if t.agg_id > last_id]
        trades += [(t.trade_time, t.price, t.agg_id) for t in new]
        if rows_sent(answer.body) < TRADE_PAGE:  # a bad trade the client dropped does not end the paging
            return trades
        if not new:
            return f"more than {TRADE_PAGE} aggTrades in one millisecond"
        last_id, start = new[-1].agg_id, new[-1].trade_time
    return f"more than {MAX_TRADE_PAGES * TRADE_PAGE} aggTrades in the minute"


async def fetch_deciding_trades(
    client: BinanceRest, sig: OpenSignal, candles: list[Candle], params: OutcomeParams, now_ms: int
) -> Fetched:
    """The signal's klines with the trades of its deciding minutes, fetched one after the other as the
    evaluation names them (each answer can move the next one: the trigger's time sets the hold's end)."""
    got = Fetched(candles=candles)
    for _ in range(MAX_TRADE_MINUTES):
        span = batch_evaluation(sig, candles, params, got.trades).wanted
        if span is None:
            break
        try:
            trades = await fetch_trades(client, sig.symbol, span, now_ms)
        except (TapewatchError, ValueError) as exc:
            trades = f"{type(exc).__name__}: {exc}"
        if isinstance(trades, str):
            got.notes.append(f"{span.role.value} minute counted capped: {trades}")
        got.trades[span.minute] = None if isinstance(trades, str) else trades
    return got


async def fetch_candles(
    client: BinanceRest, signals: list[OpenSignal], params: OutcomeParams, now_ms: int
) -> dict[str, Fetched | str]:
    """Per signal id, its klines and deciding minutes' trades, or the error that prevented fetching the
    klines (or reading them)."""
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(sig: OpenSignal) -> tuple[str, Fetched | str]:
        async with gate:
            try:
                candles = await fetch_klines(client, sig, params)
                return sig.signal_id, await fetch_deciding_trades(client, sig, candles, params, now_ms)
            except (TapewatchError, ValueError) as exc:
                return sig.signal_id, f"{type(exc).__name__}: {exc}"

    return dict(await asyncio.gather(*(one(s) for s in signals)))


def capped_reasons(got: Fetched, minutes: Iterable[MinuteRead]) -> list[str]:
    """Why deciding minutes counted capped: their trades could not be had, or contradict their candle (a
    hold's end known to the minute only needs no reason: the trigger's minute says it)."""
    contradicted = [
        f"{read.role.value} minute counted capped: its trades contradict its candle"
        for read in minutes
        if not read.exact and got.trades.get(read.minute) is not None
    ]
    return [*got.notes, *contradicted]


def _disagreement_table(found: list[Disagreement]) -> str:
    lines = ["| signal | symbol | live | live R | batch | batch R |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {d.signal_id} | {d.symbol} | {d.live_state.value} | {d.live_pnl_r:+.4f} | {d.batch_state.value} "
        f"| {d.batch_pnl_r:+.4f} |"
        for d in found
    ]
    return "\n".join(lines)


def agreement_check(run: BatchRun, day_total: int) -> dg.AssetCheckResult:
    """The WARN check result of one day: failed while any signal of the day has a recorded disagreement
    (``day_total``, from the stored rows: earlier passes count too), with the list of this pass's ones.

    Judging the stored day, not the pass, keeps a failure visible after a later pass of the same day that
    has nothing left to compare (the final pass of the next day's tick)."""
    found = run.disagreements
    total = max(day_total, len(found))
    earlier = total - len(found)
    return dg.AssetCheckResult(
        check_name=AGREEMENT_CHECK,
        passed=total == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "every finished live outcome of the day matches its batch outcome"
            if total == 0
            else f"{total} live outcome(s) of the day differ from the 1-minute candles ({len(found)} found "
            f"by this run, {earlier} by earlier runs); the batch value stands"
        ),
        metadata={
            "disagreements": total,
            "found_by_this_run": len(found),
            "compared": run.agreed + len(found),
            "list": dg.MetadataValue.md(
                _disagreement_table(found)
                if found
                else ("none" if total == 0 else "found by earlier runs: see their check results")
            ),
        },
    )


def fetch_check(
    failed: Mapping[str, str], symbols: Mapping[str, str], first_pass: bool
) -> dg.AssetCheckResult:
    """The check result of one run: failed while the klines of some due signals could not be fetched
    (``failed``: signal id -> error; ``symbols``: signal id -> symbol), listing them. WARN on the day's first
    pass, which the final pass follows; ERROR otherwise: the day's final numbers miss those signals (or use
    their unchecked live outcome)."""
    rows = [
        f"| {sid} | {symbols.get(sid, '?')} | {error.replace('|', '/').replace(chr(10), ' ')} |"
        for sid, error in failed.items()
    ]
    retry = (
        "the day's final pass asks again"
        if first_pass
        else "the day's numbers miss them (or use their live outcome) until a later run fetches them "
        "(outcomes_catch_up_schedule, or a run by hand)"
    )
    return dg.AssetCheckResult(
        check_name=FETCH_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN if first_pass else dg.AssetCheckSeverity.ERROR,
        description=(
            "every due signal of the day had its klines fetched"
            if not failed
            else f"the klines of {len(failed)} due signal(s) of the day could not be fetched, so they have no "
            f"batch outcome: {retry}"
        ),
        metadata={
            "fetch_failed": len(failed),
            "list": dg.MetadataValue.md(
                "\n".join(["| signal | symbol | error |", "|---|---|---|", *rows]) if rows else "none"
            ),
        },
    )


@dg.asset(
    partitions_def=DAILY_PARTITIONS,
    check_specs=[
        dg.AssetCheckSpec(
            AGREEMENT_CHECK,
            asset="signal_outcomes",
            description="Finished live outcomes of the day agree with the batch outcome from 1-minute "
            "candles (judged over every disagreement stored for the day).",
            partitions_def=DAILY_PARTITIONS,  # one result per day: another day's run never overwrites it
        ),
        dg.AssetCheckSpec(
            FETCH_CHECK,
            asset="signal_outcomes",
            description="The klines of every due signal of the day could be fetched (a signal whose klines "
            "could not be has no batch outcome: the day's numbers miss it, or use its live outcome).",
            partitions_def=DAILY_PARTITIONS,
        ),
    ],
    group_name="performance",
    description="Authoritative outcomes of the day's finished ENTRY signals, from 1-minute klines.",
)
def signal_outcomes(
    context: dg.AssetExecutionContext,
    settings: TapewatchSettings,
    database: DatabaseResource,
    binance: BinanceRestResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:  # type: ignore[type-arg]  # the bare class
    cfg = settings.settings()
    params = OutcomeParams.from_settings(cfg)
    day = day_of_partition(context.partition_key)
    now_ms = int(time.time() * 1000)
    with database.open() as db:
        pending = entries_to_settle(db, day_ms(day), day_ms(day + timedelta(days=1)))
        due = [(p, batch_signal(p.signal)) for p in pending if is_due(open_signal(p.signal), params, now_ms)]
        signals = [s for _, s in due]
        fetched = (
            binance.run(lambda client: fetch_candles(client, signals, params, now_ms), cfg) if due else {}
        )
        run = BatchRun(due=len(due))
        # the first pass (00:10) leaves a hole to a later pass; the final pass and runs by hand settle it
        first_pass = context.run.tags.get("tapewatch/pass") == "first"
        catch_up = context.run.tags.get("tapewatch/pass") == "catch-up"
        settle_holes = not first_pass
        outcomes: list[Outcome] = []
        for entry, sig in due:
            got = fetched[sig.signal_id]
            if isinstance(got, str):
                run.failed[sig.signal_id] = got
                continue
            minutes = batch_evaluation(sig, got.candles, params, got.trades).minutes
            for why in capped_reasons(got, minutes):
                context.log.info("signal %s: %s", sig.signal_id, why)
            batch = batch_outcome(sig, got.candles, params, trades=got.trades, settle_holes=settle_holes)
            run.record(entry.live, batch, cfg.outcome_pnl_tolerance, minutes)
            if batch is not None:
                outcomes.append(batch)
        fetch_result = fetch_check(run.failed, {s.signal_id: s.symbol for s in signals}, first_pass)
        if due and len(run.failed) == len(due) and not catch_up:
            yield fetch_result  # recorded though the run fails: the day's check names the signals
            raise dg.Failure(
                description=f"no klines could be fetched for any of the {len(due)} signals of {day}; first "
                f"error: {next(iter(run.failed.values()))}. Check TAPEWATCH_BINANCE_REST_URL and the network.",
            )
        save_batch(db, outcomes, run.disagreements)
        day_total = disagreement_count(db, day_ms(day), day_ms(day + timedelta(days=1)))
    for signal_id, error in run.failed.items():
        context.log.warning("signal %s: klines not fetched: %s", signal_id, error)
    yield dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "signals_pending": len(pending),
            "still_open": len(pending) - len(due),
            "due": run.due,
            "written": len(outcomes),
            "filled_missed_by_live": run.filled,
            "agreed_with_live": run.agreed,
            "disagreed_with_live": len(run.disagreements),
            "incomplete_klines": run.incomplete,
            "fetch_failed": len(run.failed),
            **{
                f"{role.value}_minute_{how}": run.minutes.get(f"{role.value}_{how}", 0)
                for role in MinuteRole
                for how in ("exact", "capped")
            },
        },
        check_results=[agreement_check(run, day_total), fetch_result],
    )


@dg.asset(
    partitions_def=DAILY_PARTITIONS,
    group_name="performance",
    description="Would-be outcomes of the day's candidates that did not become signals (low_quality, cooldown, "
    "the caps, ...) and have a trade plan, from 1-minute klines as signal_outcomes: what monthly tuning scores "
    "them by.",
)
def candidate_outcomes(
    context: dg.AssetExecutionContext,
    settings: TapewatchSettings,
    database: DatabaseResource,
    binance: BinanceRestResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]  # the bare class
    cfg = settings.settings()
    params = OutcomeParams.from_settings(cfg)  # a low_quality candidate: LOW's window and hold
    day = day_of_partition(context.partition_key)
    now_ms = int(time.time() * 1000)
    settle_holes = context.run.tags.get("tapewatch/pass") != "first"  # as signal_outcomes
    with database.open() as db:
        pending = candidates_to_settle(db, day_ms(day), day_ms(day + timedelta(days=1)))
        due = [c for c in pending if is_due(c, params, now_ms)]
        fetched = binance.run(lambda client: fetch_candles(client, due, params, now_ms), cfg) if due else {}
        failed = {sid: got for sid, got in fetched.items() if isinstance(got, str)}
        outcomes: list[Outcome] = []
        for c in due:
            got = fetched[c.signal_id]
            if not isinstance(got, str):  # None: the candles stop short of the end or miss a minute
                batch = batch_outcome(c, got.candles, params, trades=got.trades, settle_holes=settle_holes)
                outcomes += [] if batch is None else [batch]
        written = save_candidate_outcomes(db, outcomes)
    for candidate_id, error in failed.items():
        context.log.warning(
            "candidate %s: klines not fetched (asked again by the next run): %s", candidate_id, error
        )
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "candidates_pending": len(pending),
            "still_open": len(pending) - len(due),
            "due": len(due),
            "written": written,
            "incomplete_klines": len(due) - len(failed) - len(outcomes),
            "fetch_failed": len(failed),
        }
    )


__all__ = [
    "AGREEMENT_CHECK",
    "DAILY_PARTITIONS",
    "FETCH_CHECK",
    "PARTITIONS_START",
    "Fetched",
    "agreement_check",
    "batch_signal",
    "candidate_outcomes",
    "capped_reasons",
    "day_ms",
    "day_of_partition",
    "fetch_candles",
    "fetch_check",
    "fetch_deciding_trades",
    "fetch_klines",
    "fetch_trades",
    "signal_outcomes",
]
