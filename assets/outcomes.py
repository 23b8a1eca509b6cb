"""``signal_outcomes``: the authoritative outcome of every finished ENTRY signal, from 1-minute klines.

Per UTC day ``D`` (partition ``YYYY-MM-DD``, the day of the signals' creation event time) it takes the ENTRY
signals of ``D`` that have no finished batch outcome yet (none at all: the live tracker missed them while
the service was down; a live one; an unfinished one) and whose last possible end has passed
(``tapewatch.outcome_batch``), fetches each one's 1-minute klines through ``BinanceRestResource``,
evaluates them (``tapewatch.outcome.evaluate_candles``: same-candle stop and target counts the stop) and
stores the result with ``source='batch'``, which replaces the live value. The check
``batch_agrees_with_live`` warns, with the list, when a finished live outcome differs from the batch one
in state or in P&L by more than ``outcome_pnl_tolerance`` R (the batch value stands either way).
"""

import asyncio
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from orchestration.resources import BinanceRestResource, DatabaseResource, TapewatchSettings
from tapewatch.adapters.binance_rest import BinanceRest
from tapewatch.adapters.performance_store import entries_to_settle, save_batch
from tapewatch.errors import TapewatchError
from tapewatch.events import Candle
from tapewatch.outcome import OpenSignal, Outcome, OutcomeParams
from tapewatch.outcome_batch import BatchRun, Disagreement, batch_outcome, is_due, kline_window
from tapewatch.signal_follow import open_signal

#: First day of the daily, weekly and monthly partitions (a Monday); backfills reach back to it.
PARTITIONS_START = "2024-01-01"
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
AGREEMENT_CHECK = "batch_agrees_with_live"
#: Kline requests in flight at once (the client's weight budget paces them further).
FETCH_CONCURRENCY = 8


def day_of_partition(key: str) -> date:
    """The UTC day of a daily partition key (``2024-03-05``)."""
    return date.fromisoformat(key)


def day_ms(day: date) -> int:
    """Epoch ms of 00:00 UTC of ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


async def fetch_candles(
    client: BinanceRest, signals: list[OpenSignal], params: OutcomeParams
) -> dict[str, list[Candle] | str]:
    """Per signal id, the 1-minute klines of its outcome window, or the error that prevented it."""
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(sig: OpenSignal) -> tuple[str, list[Candle] | str]:
        window = kline_window(sig, params)
        async with gate:
            try:
                candles, _ = await client.klines(
                    sig.symbol, "1m", limit=window.limit, start_ms=window.start_ms, end_ms=window.end_ms
                )
            except (TapewatchError, ValueError) as exc:
                return sig.signal_id, f"{type(exc).__name__}: {exc}"
        return sig.signal_id, candles

    return dict(await asyncio.gather(*(one(s) for s in signals)))


def _disagreement_table(found: list[Disagreement]) -> str:
    lines = ["| signal | symbol | live | live R | batch | batch R |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {d.signal_id} | {d.symbol} | {d.live_state.value} | {d.live_pnl_r:+.4f} | {d.batch_state.value} "
        f"| {d.batch_pnl_r:+.4f} |"
        for d in found
    ]
    return "\n".join(lines)


def agreement_check(run: BatchRun) -> dg.AssetCheckResult:
    """The WARN check result listing the disagreements (passed when there are none)."""
    found = run.disagreements
    return dg.AssetCheckResult(
        check_name=AGREEMENT_CHECK,
        passed=not found,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "every finished live outcome matches its batch outcome"
            if not found
            else f"{len(found)} live outcome(s) differ from the 1-minute candles; the batch value stands"
        ),
        metadata={
            "disagreements": len(found),
            "compared": run.agreed + len(found),
            "list": dg.MetadataValue.md(_disagreement_table(found) if found else "none"),
        },
    )


@dg.asset(
    partitions_def=DAILY_PARTITIONS,
    check_specs=[
        dg.AssetCheckSpec(
            AGREEMENT_CHECK,
            asset="signal_outcomes",
            description="Finished live outcomes agree with the batch outcome from 1-minute candles.",
        )
    ],
    group_name="performance",
    description="Authoritative outcomes of the day's finished ENTRY signals, from 1-minute klines.",
)
def signal_outcomes(
    context: dg.AssetExecutionContext,
    settings: TapewatchSettings,
    database: DatabaseResource,
    binance: BinanceRestResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]  # Dagster matches the bare class
    cfg = settings.settings()
    params = OutcomeParams.from_settings(cfg)
    day = day_of_partition(context.partition_key)
    now_ms = int(time.time() * 1000)
    with database.open() as db:
        pending = entries_to_settle(db, day_ms(day), day_ms(day + timedelta(days=1)))
        due = [(p, open_signal(p.signal)) for p in pending if is_due(open_signal(p.signal), params, now_ms)]
        fetched = (
            binance.run(lambda client: fetch_candles(client, [s for _, s in due], params), cfg) if due else {}
        )
        run = BatchRun(due=len(due))
        outcomes: list[Outcome] = []
        for entry, sig in due:
            candles = fetched[sig.signal_id]
            if isinstance(candles, str):
                run.failed[sig.signal_id] = candles
                continue
            batch = batch_outcome(sig, candles, params)
            run.record(entry.live, batch, cfg.outcome_pnl_tolerance)
            if batch is not None:
                outcomes.append(batch)
        if due and len(run.failed) == len(due):
            raise dg.Failure(
                description=f"no klines could be fetched for any of the {len(due)} signals of {day}; first "
                f"error: {next(iter(run.failed.values()))}. Check TAPEWATCH_BINANCE_REST_URL and the network.",
            )
        save_batch(db, outcomes, run.disagreements)
    for signal_id, error in run.failed.items():
        context.log.warning("signal %s: klines not fetched: %s", signal_id, error)
    return dg.MaterializeResult(
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
        },
        check_results=[agreement_check(run)],
    )


__all__ = [
    "AGREEMENT_CHECK",
    "DAILY_PARTITIONS",
    "PARTITIONS_START",
    "agreement_check",
    "day_ms",
    "day_of_partition",
    "fetch_candles",
    "signal_outcomes",
]
