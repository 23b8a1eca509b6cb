"""``tuning_proposal``: the monthly re-scoring of stored candidates (``tapewatch.tuning``), stored as a proposal.

The proposal is never applied by itself: ``tapewatch tuning apply ID`` (or the dashboard's Apply button)
does that, recording who and when. The materialization's metadata shows the proposed and current
parameters with their in-sample and out-of-sample results.
"""

import time

import dagster as dg
from dagster import AssetExecutionContext

from orchestration.resources import DatabaseResource, TapewatchSettings
from tapewatch.adapters.tuning_store import propose


def _result_line(result: dict[str, object]) -> str:
    mean = result.get("mean_r")
    rate = result.get("win_rate")
    return (
        f"{result.get('signals')} signals, win rate {'-' if rate is None else f'{rate:.1%}'}, "
        f"mean {'-' if mean is None else f'{mean:.3f}'} R, total {result.get('total_r'):.2f} R"
    )


@dg.asset(
    group_name="tuning", description="Monthly tuning proposal (walk-forward re-scoring; never applied)."
)
def tuning_proposal(
    context: AssetExecutionContext, settings: TapewatchSettings, database: DatabaseResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    s = settings.settings()
    with database.open() as db:
        proposal = propose(db, s, now_ms=int(time.time() * 1000))
    context.log.info("tuning proposal %d: %s (%s)", proposal.id, proposal.status, proposal.note)
    rows = [
        "| | parameters | in-sample | out-of-sample |",
        "|---|---|---|---|",
        f"| proposed | {proposal.parameters} | {_result_line(proposal.in_sample)} | "
        f"{_result_line(proposal.out_of_sample)} |",
        f"| current | {proposal.current_parameters} | {_result_line(proposal.current_in_sample)} | "
        f"{_result_line(proposal.current_out_of_sample)} |",
    ]
    return dg.MaterializeResult(
        metadata={
            "proposal_id": proposal.id,
            "status": proposal.status,
            "note": proposal.note,
            "counts": proposal.counts,
            # the applied tuning it was scored under ({} = the settings' own): what apply checks it against
            "scored_under": dg.MetadataValue.json(proposal.applied_parameters or {}),
            "comparison": dg.MetadataValue.md("\n".join(rows)),
            "apply_with": f"tapewatch tuning apply {proposal.id}",
        }
    )
