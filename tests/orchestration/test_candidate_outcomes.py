"""Would-be outcomes of the candidates turned away, against real PostgreSQL and the simulator's REST klines:
the plan is stored with the candidate (sql/0012), ``candidate_outcomes`` settles it from 1-minute klines by the
code ``signal_outcomes`` uses, and monthly tuning scores it.

Planted on ``D`` (2024-03-05; the simulator serves its klines, see ``test_performance_assets``), each created at
a minute's start, entering at that minute's close with stop and targets beyond the range of the whole hold, so
it triggers in its first minute and expires at the hold's end (2024 is older than Binance keeps aggTrades: the
candle holding the end counts capped, at its low):

- ``cooled``  BTCUSDT LONG 10:00, fate ``cooldown``, tier HIGH: expires after HIGH's 45 min;
- ``weak``    ETHUSDT LONG 12:00, fate ``low_quality`` (score 69 under a LOW minimum of 70), no tier: followed
  with LOW's window and hold, expires after 180 min;
- ``blind``   BTCUSDT LONG 14:00, fate ``no_plan`` (ATR unknown): no plan, its outcome stays unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import msgspec
import pytest
import sqlalchemy as sa

from assets.outcomes import candidate_outcomes
from realtime.sim import SimExchange
from tapewatch.adapters.candidate_outcome_store import get_candidate_outcome
from tapewatch.adapters.db import Database
from tapewatch.adapters.signal_store import SignalStore
from tapewatch.adapters.tuning_store import load_samples, propose
from tapewatch.outcome import OutcomeState
from tapewatch.rules import check
from tapewatch.settings import Settings, load_settings
from tapewatch.signal import Candidate, make_candidate
from tapewatch.signal import propose as propose_signal
from tapewatch.trade_plan import TradePlan
from tapewatch.tuning import WEEK_MS, current_parameters, score
from tests.orchestration.test_performance_assets import klines, resources, serve_sim
from tests.tapewatch.feature_builders import long_setup

START = int(datetime(2024, 3, 6, tzinfo=UTC).timestamp() * 1000)
D = "2024-03-05"
D_MS = int(datetime(2024, 3, 5, tzinfo=UTC).timestamp() * 1000)
M = 60_000
FEE = 0.0005
#: LOW at 70 (MEDIUM 75, HIGH 85): the weakest setup the rules pass scores 69, a low_quality candidate
S70 = load_settings(quality_low_min=70, quality_medium_min=75, quality_high_min=85, tuning_min_samples=1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimExchange]:
    with serve_sim(START) as exchange:
        yield exchange


def plan_around(sim: SimExchange, symbol: str, created: int, hold_minutes: int) -> tuple[TradePlan, float]:
    """A LONG plan entering at the creation minute's close, stop and targets beyond the range of the next
    ``hold_minutes`` + 1 minutes, and the R it must end with (expiry at the low of the candle that holds the
    hold's end)."""
    rows = klines(sim, symbol, created, created + (hold_minutes + 1) * M)
    assert len(rows) == hold_minutes + 2 and rows[0][0] == created
    low, high = min(float(r[3]) for r in rows), max(float(r[2]) for r in rows)
    price = float(rows[0][4])
    stop = low - price * 0.01
    plan = TradePlan(
        direction="LONG",
        entry=price,
        stop=stop,
        take_profit_1=high + price * 0.01,
        take_profit_2=high + price * 0.02,
        risk=price - stop,
        risk_reward_ratio=1.5,
        suggested_position_size=0.5,
        stop_basis="atr",
    )
    exit_price = float(rows[hold_minutes][3])
    return plan, ((exit_price - price) - FEE * (price + exit_price)) / (price - stop)


def stored(symbol: str, t: int, settings: Settings, plan: TradePlan | None, **changes: Any) -> Candidate:
    """The candidate the engine stores of a setup at ``t`` under ``settings``, its plan at the simulator's
    prices; ``fate`` is the proposal's, or ``cooldown`` for a setup the proposal made a signal."""
    features = long_setup(symbol=symbol, event_time=t, **changes)
    evaluation = check(features, settings, "LONG")
    proposal = propose_signal(features, evaluation, settings)
    fate = "cooldown" if proposal.fate == "signal" else proposal.fate
    assert (proposal.plan is None) == (plan is None)
    return make_candidate(features, evaluation, proposal.quality, fate, proposal.fate_detail, plan=plan)


@pytest.fixture
def planted(sim: SimExchange, db: Database) -> dict[str, Any]:
    cooled_plan, cooled_r = plan_around(sim, "BTCUSDT", D_MS + 10 * 60 * M, 45)
    weak_plan, weak_r = plan_around(sim, "ETHUSDT", D_MS + 12 * 60 * M, 180)
    weak_features = {"imbalance_top10": 0.31, "large_buys": 3, "volume_intensity": 1.85}
    cooled = stored("BTCUSDT", D_MS + 10 * 60 * M, S70, cooled_plan)
    weak = stored("ETHUSDT", D_MS + 12 * 60 * M, S70, weak_plan, **weak_features)
    blind = stored("BTCUSDT", D_MS + 14 * 60 * M, S70, None, atr_15m=None, **weak_features)
    assert (cooled.fate, cooled.quality.tier) == ("cooldown", "HIGH")
    assert (weak.fate, weak.quality.tier, weak.quality.score) == ("low_quality", None, 69)
    assert (blind.fate, blind.plan) == ("low_quality", None)
    assert SignalStore(db).save_candidates([cooled, weak, blind]) == 3
    return {"cooled": (cooled, cooled_r), "weak": (weak, weak_r), "blind": blind}


def test_the_plan_is_stored_with_the_candidate(planted: dict[str, Any], db: Database) -> None:
    with db.begin() as conn:
        rows = {
            row.fate + ("" if row.entry_price is None else "+plan"): row
            for row in conn.execute(
                sa.text(
                    "SELECT fate, entry_price, stop_loss, take_profit_1, take_profit_2, suggested_position_size "
                    "FROM candidates"
                )
            )
        }
    assert set(rows) == {"cooldown+plan", "low_quality+plan", "low_quality"}
    for key, name in (("cooldown+plan", "cooled"), ("low_quality+plan", "weak")):
        plan = planted[name][0].plan
        assert tuple(rows[key][1:]) == (
            plan.entry,
            plan.stop,
            plan.take_profit_1,
            plan.take_profit_2,
            plan.suggested_position_size,
        )
    assert tuple(rows["low_quality"][1:]) == (None,) * 5
    with db.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="candidates_plan_check"):
        conn.execute(
            sa.text("UPDATE candidates SET stop_loss = entry_price + 1 WHERE entry_price IS NOT NULL")
        )


def test_would_be_outcomes_come_from_the_klines_and_tuning_scores_them(
    sim: SimExchange, planted: dict[str, Any], db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    res = resources(sim.rest_url, migrated_database_url, tmp_path)
    result = dg.materialize([candidate_outcomes], partition_key=D, resources=res)
    assert result.success
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("candidate_outcomes")[0].metadata.items()
    }
    assert (meta["candidates_pending"], meta["due"], meta["written"], meta["fetch_failed"]) == (2, 2, 2, 0)

    (cooled, cooled_r), (weak, weak_r) = planted["cooled"], planted["weak"]
    got_cooled = get_candidate_outcome(db, cooled.candidate_id)
    got_weak = get_candidate_outcome(db, weak.candidate_id)
    assert got_cooled is not None and got_weak is not None
    assert get_candidate_outcome(db, planted["blind"].candidate_id) is None
    assert (
        got_cooled.signal.tier == "HIGH" and got_weak.signal.tier == "LOW"
    )  # no tier: LOW's window and hold
    for got, created, hold, r in (
        (got_cooled, cooled.event_time, 45, cooled_r),
        (got_weak, weak.event_time, 180, weak_r),
    ):
        assert got.state is OutcomeState.EXPIRED and got.triggered
        assert got.trigger_time == created and got.exit_time == created + hold * M
        assert got.pnl_r == pytest.approx(r)
    again = dg.materialize([candidate_outcomes], partition_key=D, resources=res)
    meta2 = again.asset_materializations_for_node("candidate_outcomes")[0].metadata
    assert meta2["candidates_pending"].value == 0  # settled once

    # tuning: both turned-away candidates have a known outcome; only the one without a plan is unknown
    samples = {s.event_time: s for s in load_samples(db, D_MS, D_MS + 86_400_000)}
    assert (
        samples[cooled.event_time].pnl_r == pytest.approx(cooled_r) and samples[cooled.event_time].triggered
    )
    assert samples[weak.event_time].pnl_r == pytest.approx(weak_r) and samples[weak.event_time].triggered
    assert samples[planted["blind"].event_time].pnl_r is None
    # what the risk gate re-run reads: the id, the symbol, the end and whether it was a stop-out
    s = samples[cooled.event_time]
    assert (s.key, s.symbol, s.end_time, s.stopped_out, s.paused) == (
        cooled.candidate_id,
        cooled.symbol,
        got_cooled.exit_time,
        False,
        False,
    )
    params = current_parameters(S70)
    current = score(samples.values(), params)  # the cooldown one as if admitted; 69 < LOW's 70
    assert (current.signals, current.total_r) == (1, pytest.approx(cooled_r))
    lower = score(samples.values(), {**params, "quality_low_min": 65})  # a lower LOW minimum scores the weak
    assert (lower.signals, lower.triggered) == (2, 2)
    assert lower.total_r == pytest.approx(cooled_r + weak_r)
    assert lower.by_tier["LOW"]["signals"] == 1
    proposal = propose(db, S70, now_ms=D_MS + WEEK_MS)
    assert proposal.counts["known_outcome"] == 2 and proposal.counts["unknown_outcome"] == 1


def test_a_candidate_that_became_a_signal_gets_no_would_be_outcome(
    sim: SimExchange, db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    plan, _ = plan_around(sim, "BTCUSDT", D_MS + 10 * 60 * M, 45)
    cooled = stored("BTCUSDT", D_MS + 10 * 60 * M, S70, plan)
    chosen = msgspec.structs.replace(cooled, fate="signal", signal_id=cooled.candidate_id)
    SignalStore(db).save_candidates([chosen])
    res = resources(sim.rest_url, migrated_database_url, tmp_path)
    result = dg.materialize([candidate_outcomes], partition_key=D, resources=res)
    meta = result.asset_materializations_for_node("candidate_outcomes")[0].metadata
    assert meta["candidates_pending"].value == 0  # its signal's outcome is signal_outcomes'
    assert get_candidate_outcome(db, chosen.candidate_id) is None
