"""Whether the running realtime service uses the applied tuning, pure.

An applied tuning (``tapewatch tuning apply``, a rollback, the dashboard's Apply) is laid over the settings when
``tapewatch run`` starts, never while it runs. Each realtime instance publishes in its heartbeat the
``tuning_applications`` row it started with (:data:`HEARTBEAT_FIELD`: its id, 0 when none was applied), so
``tapewatch status``, ``tapewatch tuning list`` and the dashboard can tell the row in force in the database
from the one the service runs with: a **restart is pending** when their parameters differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The heartbeat detail holding the id of the applied tuning row an instance started with (0: none).
HEARTBEAT_FIELD = "tuning_record"


@dataclass(frozen=True, slots=True)
class Record:
    """One ``tuning_applications`` row as seen here: after it, ``parameters`` are in force ({}: the settings'
    own values); id 0 stands for "nothing ever applied"."""

    id: int
    action: str
    proposal_id: int | None
    parameters: Mapping[str, float | int] = field(default_factory=dict)

    def describe(self) -> str:
        """``applied #12 (record 7)``, ``rolled back to #9 (record 8)``, ``the settings' own values (record
        8)``; ``nothing applied`` for id 0."""
        if self.id == 0:
            return "nothing applied"
        if not self.parameters or self.proposal_id is None:
            return f"the settings' own values (record {self.id})"
        verb = "applied" if self.action == "apply" else "rolled back to"
        return f"{verb} #{self.proposal_id} (record {self.id})"


NOTHING_APPLIED = Record(0, "none", None)


def started_with(info: Mapping[str, Any]) -> int | None:
    """The tuning row id a heartbeat's details say the instance started with; None when they do not say (an
    instance of an older version, or one not started through ``tapewatch run``)."""
    value = info.get(HEARTBEAT_FIELD)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class TuningUse:
    """The applied tuning row in force in the database (``in_force``: :data:`NOTHING_APPLIED` when none) against
    the row each live realtime instance started with (``running``; None: unknown — it does not say, or the row
    is not in this database)."""

    in_force: Record
    running: Mapping[str, Record | None]

    @property
    def pending(self) -> list[str]:
        """The live instances that run other parameters than those in force: they need a restart."""
        return sorted(
            name
            for name, record in self.running.items()
            if record is not None and dict(record.parameters) != dict(self.in_force.parameters)
        )

    @property
    def unknown(self) -> list[str]:
        """The live instances that do not say which tuning they started with."""
        return sorted(name for name, record in self.running.items() if record is None)

    def line(self) -> str:
        """What ``tapewatch status`` shows: ``applied #12 (record 7), restart pending: realtime started with
        applied #9 (record 5)``, ``…, in use``, or why it is not known."""
        what = self.in_force.describe()
        if self.pending:
            started = "; ".join(
                f"{name} started with {record.describe()}"
                for name in self.pending
                if (record := self.running[name]) is not None
            )
            return f"{what}, restart pending: {started}"
        if not self.running:
            return f"{what} (no realtime running: used from its next start)"
        if self.unknown:
            return f"{what} ({', '.join(self.unknown)} does not say which tuning it started with)"
        return f"{what}, in use"

    def mark(self, proposal_id: int) -> str:
        """``tapewatch tuning list``'s mark for proposal ``proposal_id`` ("" when none)."""
        applied = self.in_force.proposal_id == proposal_id and bool(self.in_force.parameters)
        if applied:
            if self.pending:
                return f"  <- in force from the next start ({', '.join(self.pending)} runs another set)"
            if not self.running:
                return "  <- in force from the next start (no realtime running)"
            if self.unknown:
                return "  <- in force (whether the running realtime uses it is unknown)"
            return "  <- in force"
        if any(
            record is not None and record.proposal_id == proposal_id and record.parameters
            for name, record in self.running.items()
            if name in self.pending
        ):
            return "  <- still used by the running realtime until its next start"
        return ""

    def to_json(self) -> dict[str, Any]:
        """The row in force (id, action, proposal), each live instance's row (null: unknown), and the instances
        waiting for a restart."""
        return {
            "in_force": {
                "record": self.in_force.id,
                "action": self.in_force.action,
                "proposal": self.in_force.proposal_id,
            },
            "running": {name: None if r is None else r.id for name, r in sorted(self.running.items())},
            "restart_pending": self.pending,
        }
