"""The settings a monthly tuning may change, pure: their names, their current values, the validation of a
proposed set, and the tuning errors. :mod:`tapewatch.tuning` re-exports these names."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tapewatch.errors import FatalError
from tapewatch.settings import Settings, allowed_range
from tapewatch.tuning_score import Params, _breakpoints

#: The settings a tuning may change (their names are the spec's CONFIG keys).
TUNABLE: tuple[str, ...] = (
    "orderbook_imbalance_threshold",
    "min_large_trades",
    "large_trade_size",
    "volume_confirmation_multiplier",
    "quality_low_min",
    "quality_medium_min",
    "quality_high_min",
)


class TuningError(FatalError):
    """A tuning proposal cannot be used as asked (unknown id, nothing to apply, bad parameters)."""


class UnknownProposal(TuningError):
    """No tuning proposal has this id."""


def current_parameters(settings: Settings) -> Params:
    """The tunable settings as they are now."""
    return {name: getattr(settings, name) for name in TUNABLE}


def check_parameters(params: Mapping[str, Any]) -> Params:
    """``params`` validated against the settings' own types and bounds (only tunable names). Raises
    TuningError naming each bad key and its allowed range."""
    bad: list[str] = []
    out: Params = {}
    for name, value in params.items():
        if name not in TUNABLE:
            bad.append(f"{name} is not a tunable setting (tunable: {', '.join(TUNABLE)})")
            continue
        spec = Settings.model_fields[name]
        kind = int if spec.annotation is int else float
        try:
            checked: float | int = TypeAdapter(kind).validate_python(value)
        except ValidationError:
            bad.append(f"{name} = {value!r} is not a {kind.__name__}")
            continue
        out[name] = checked
        for meta in spec.metadata:
            if not all(_within(checked, meta, attr) for attr in _BOUNDS):
                bad.append(f"{name} = {value!r} is out of range; allowed: {allowed_range(name)}")
    if not bad and all(k in out for k in _BREAKPOINT_KEYS):
        try:
            _breakpoints(out)
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise TuningError("bad tuning parameters: " + "; ".join(dict.fromkeys(bad)))
    return out


_BREAKPOINT_KEYS = ("quality_low_min", "quality_medium_min", "quality_high_min")


_BOUNDS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _within(value: float, meta: object, attr: str) -> bool:
    bound = getattr(meta, attr, None)
    return bound is None or _BOUNDS[attr](value, bound)
