"""Statistics of R series, pure: the UTC day of an event time, the daily R series, its Sharpe ratio (from the
series or from database sums), the drawdown of a cumulative R curve and a trend slope. :mod:`tapewatch.metrics`
defines each and re-exports these names."""

from __future__ import annotations

import math
import operator
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from itertools import accumulate

from tapewatch.outcome import Outcome

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
#: Periods per year of the daily series, for the Sharpe ratio.
DAYS_PER_YEAR = 365
#: Fewest UTC days with at least one *triggered* signal in a Sharpe window for the ratio to be given (None
#: below): with k active days among N the ratio is a function of those k values and N, an artefact for small
#: k. A day whose signals all stayed untriggered adds exactly 0 R, like a day without signals, so it is no
#: active day (counting it let one losing day among 29 zeros show sign(v)·sqrt(365/30) = −3.49).
MIN_SHARPE_SIGNAL_DAYS = 5


def day_of(event_time: int) -> date:
    """The UTC date of an event time in ms."""
    return EPOCH + timedelta(days=event_time // DAY_MS)


def _annualised(mean: float, variance: float, mean_square: float) -> float | None:
    """``mean / sqrt(variance) × sqrt(365)``; None without variation. A variance at rounding level of the values'
    mean square is none: the same R values summed in another order differ in the last bit, and such a series
    must not read as a Sharpe ratio of 1e17 (nor differ between the series and its database sums)."""
    if not math.isfinite(variance) or variance <= 1e-12 * max(mean_square, 1e-300):
        return None
    return mean / math.sqrt(variance) * math.sqrt(DAYS_PER_YEAR)


def sharpe_ratio(daily_r: Sequence[float]) -> float | None:
    """``mean / sample stdev × sqrt(365)`` of a daily R series; None below 2 days or without variation."""
    if len(daily_r) < 2:
        return None
    mean_square = statistics.fmean(r * r for r in daily_r)
    return _annualised(statistics.fmean(daily_r), statistics.variance(daily_r), mean_square)


def sharpe_from_sums(days: int, total: float, total_sq: float, signal_days: int) -> float | None:
    """:func:`sharpe_ratio` of a daily R series given only its length, its sum and its sum of squares (days
    without signals add 0 to both): what a database can aggregate. None below 2 days, without variation, or
    with fewer than :data:`MIN_SHARPE_SIGNAL_DAYS` of the days having a triggered signal (``signal_days``:
    the caller counts days with a triggered signal, as :func:`sharpe_signal_days`), as :func:`window_sharpe`."""
    if days < 2 or signal_days < MIN_SHARPE_SIGNAL_DAYS:
        return None
    mean = total / days
    return _annualised(mean, (total_sq - days * mean * mean) / (days - 1), total_sq / days)


def max_drawdown(pnl_r: Iterable[float]) -> float:
    """Largest fall of the cumulative sum of ``pnl_r`` (from 0) below its running peak, >= 0."""
    # C-level loops (the dashboard runs this over 100,000 signals): the curve from 0, its running peak, the
    # largest gap between them
    curve = list(accumulate(pnl_r, initial=0.0))
    return float(max(map(operator.sub, accumulate(curve, max), curve)))


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(x, y)`` points; None with fewer than 2 distinct x."""
    if len(points) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def daily_r(outcomes: Iterable[Outcome], first: date, last: date) -> list[float]:
    """R per UTC day from ``first`` to ``last`` inclusive (0 for a day without signals)."""
    by_day: dict[date, float] = defaultdict(float)
    for o in outcomes:
        by_day[day_of(o.signal.created)] += o.pnl_r
    return [by_day[first + timedelta(days=i)] for i in range((last - first).days + 1)]


def sharpe_signal_days(outcomes: Iterable[Outcome]) -> int:
    """How many UTC days of creation the *triggered* ``outcomes`` span: the days that count towards
    :data:`MIN_SHARPE_SIGNAL_DAYS` (an untriggered signal adds exactly 0 R, as an empty day does)."""
    return len({day_of(o.signal.created) for o in outcomes if o.triggered})


def window_sharpe(outcomes: Sequence[Outcome], first: date, last: date) -> float | None:
    """:func:`sharpe_ratio` of the daily R of ``outcomes`` from ``first`` to ``last``; None when fewer than
    :data:`MIN_SHARPE_SIGNAL_DAYS` of those days have a triggered signal (:func:`sharpe_signal_days`; see
    :mod:`tapewatch.metrics`)."""
    if sharpe_signal_days(outcomes) < MIN_SHARPE_SIGNAL_DAYS:
        return None
    return sharpe_ratio(daily_r(outcomes, first, last))
