"""What a notice tells a trader beyond the signal's fields: by when an ENTRY must trigger, and what an EXIT
closes and which stop is then in force. The same figures for every notifier (Telegram's text, the webhook's
added JSON fields), from the rules the outcome tracker follows (``tapewatch.outcome_models.OutcomeParams``).

- ENTRY: it must trigger within its priority's response window (``response_window_*``) of the signal's event
  time, else it expires untriggered: ``trigger_by``.
- EXIT TP1: closes ``TP1_SHARE`` (half) of the position; with ``move_stop_to_entry_at_tp1`` the stop moves to
  the entry for the rest.
- EXIT TP2: closes the rest. EXIT STOP/EXPIRED: the rest after TP1, else the whole position (nothing when the
  entry never filled). A STOP after TP1 with the stop moved fills at the entry (break-even on the rest), not
  at the original ``stop_loss`` the EXIT still carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tapewatch.outcome_models import OutcomeParams
from tapewatch.signal import NOT_TRIGGERED, Signal, iso_timestamp


def trigger_by_ms(signal: Signal, rules: OutcomeParams) -> int:
    """The last event time (epoch ms) an ENTRY may trigger at: its event time plus its priority's window (the
    outcome tracker's ``trigger_deadline``)."""
    return signal.event_time + rules.response_ms[signal.priority]


def after_tp1(signal: Signal, tp1_hit: bool | None) -> bool:
    """Whether an EXIT comes after its ENTRY's TP1: always for TP2; for STOP/EXPIRED ``tp1_hit`` when known,
    else a STOP filled on the profit side of the original stop (a stop fills at its price or worse: only a
    stop moved to the entry fills there)."""
    if signal.exit_reason == "TP2":
        return True
    if signal.exit_reason not in ("STOP", "EXPIRED"):
        return False
    if tp1_hit is not None:
        return tp1_hit
    if signal.exit_reason != "STOP" or signal.exit_price is None:
        return False
    sign = 1 if signal.direction == "LONG" else -1
    return sign * (signal.exit_price - signal.stop_loss) > 0


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """What an EXIT does: ``closed_share`` of the original position closed now, ``open_share`` left open,
    ``stop_in_force`` (after this exit, or the one that filled), ``stop_moved`` (to the entry, at TP1)."""

    closed_share: float
    open_share: float
    stop_in_force: float
    stop_moved: bool
    tp1_hit: bool


def exit_plan(signal: Signal, rules: OutcomeParams, tp1_hit: bool | None = None) -> ExitPlan:
    """What the EXIT ``signal`` does under ``rules`` (``tp1_hit``: see :func:`after_tp1`)."""
    rest = 1.0 - rules.tp1_share
    if signal.exit_reason == "TP1":
        stop = signal.entry_price if rules.move_stop_to_entry else signal.stop_loss
        return ExitPlan(rules.tp1_share, rest, stop, rules.move_stop_to_entry, True)
    hit = after_tp1(signal, tp1_hit)
    moved = hit and rules.move_stop_to_entry
    stop = signal.entry_price if moved else signal.stop_loss
    if NOT_TRIGGERED in signal.reasons:
        return ExitPlan(0.0, 0.0, stop, False, False)
    return ExitPlan(rest if hit else 1.0, 0.0, stop, moved, hit)


def webhook_fields(signal: Signal, rules: OutcomeParams, tp1_hit: bool | None = None) -> dict[str, Any]:
    """The fields the webhook adds to the published JSON (never renaming one): ENTRY ``trigger_by`` (ISO UTC)
    and ``trigger_by_ms``, ``response_window_s``; EXIT ``closed_share``, ``open_share``, ``stop_in_force``,
    ``stop_moved_to_entry``, ``tp1_hit``."""
    if signal.signal_type == "ENTRY":
        deadline = trigger_by_ms(signal, rules)
        return {
            "trigger_by": iso_timestamp(deadline),
            "trigger_by_ms": deadline,
            "response_window_s": rules.response_ms[signal.priority] / 1000,
        }
    plan = exit_plan(signal, rules, tp1_hit)
    return {
        "closed_share": plan.closed_share,
        "open_share": plan.open_share,
        "stop_in_force": plan.stop_in_force,
        "stop_moved_to_entry": plan.stop_moved,
        "tp1_hit": plan.tp1_hit,
    }
