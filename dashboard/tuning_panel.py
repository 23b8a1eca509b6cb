"""The tuning part of the Quality page: the parameters in force against the newest proposal, side by side,
and an Apply button that calls the same store function as ``tapewatch tuning apply``
(``tuning_store.apply_proposal``), recorded as an operator action. An apply takes effect when the realtime
service restarts: the block says whether the running service uses the set in force (restart pending)."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dashboard import actions, ui
from dashboard import backend as be
from tapewatch.adapters import tuning_store
from tapewatch.adapters.dashboard_queries import APPLY_TUNING_ACTION
from tapewatch.adapters.redis_keys import REALTIME
from tapewatch.errors import StorageUnavailable
from tapewatch.tuning_use import TuningUse

NO_PROPOSAL = "No tuning proposal yet — the monthly tuning job writes one (or `tapewatch tuning propose`)."


def layout() -> html.Section:
    return ui.section(
        "Tuning: parameters in force against the newest proposal",
        dcc.Store(id="quality-proposal"),
        html.Div(id="quality-tuning"),
        html.Div(
            [
                html.Button("Apply proposal", id="quality-apply", className="tw-btn go", n_clicks=0),
                html.Span(id="quality-apply-result", className="tw-muted"),
            ],
            className="tw-controls",
        ),
    )


def tuning_rows(proposal: tuning_store.Proposal, in_force: dict[str, float | int]) -> list[dict[str, Any]]:
    """One row per parameter: in force now (the settings' own value when nothing is applied), proposed, and
    whether applying would change it."""
    rows = []
    for name in sorted(set(proposal.parameters) | set(proposal.current_parameters) | set(in_force)):
        now = in_force.get(name, proposal.current_parameters.get(name))
        rows.append(
            {"parameter": name, "in_force": now, "proposed": proposal.parameters.get(name),
             "changed": "yes" if proposal.parameters.get(name) != now else ""}
        )  # fmt: skip
    return rows


def _result(part: dict[str, Any]) -> str:
    return (
        f"{part.get('signals', 0)} signals, win rate {ui.fmt_pct(part.get('win_rate'))}, "
        f"mean {ui.fmt_r(part.get('mean_r'))}"
    )


def view(backend: be.Backend) -> tuple[Any, int | None]:
    """The side-by-side table (or an explanation) and the id of the proposal Apply would apply (None when
    the newest run proposes no change)."""

    def read() -> tuple[list[tuning_store.Proposal], dict[str, float | int], TuningUse]:
        try:
            started = tuning_store.started_by_instance(backend.redis.heartbeats())
        except StorageUnavailable:  # which tuning the realtime runs is unknown; the rest is still shown
            started = {REALTIME: None}
        return (
            tuning_store.list_proposals(backend.db, limit=1),
            tuning_store.active_parameters(backend.db),
            tuning_store.tuning_use(backend.db, started),
        )

    found, problem = be.attempt(read)
    if problem or found is None:
        return html.Div(problem, className="tw-error"), None
    proposals, in_force, use = found
    if not proposals:
        return ui.empty(NO_PROPOSAL), None
    newest = proposals[0]
    header = html.Div(
        [
            # an apply takes effect when `tapewatch run` restarts: say when the service still runs another set
            html.Div(f"in force: {use.line()}", className="tw-error" if use.pending else "tw-muted"),
            html.Div(f"proposal #{newest.id} · {newest.status} · {newest.note}"),
            html.Div(f"proposed, out of sample: {_result(newest.out_of_sample)}"),
            html.Div(f"current, out of sample: {_result(newest.current_out_of_sample)}"),
        ],
        className="tw-muted",
    )
    table = ui.grid(
        "quality-tuning-grid",
        [
            ui.column("parameter", "parameter"),
            ui.column("in_force", "in force"),
            ui.column("proposed", "proposed"),
            ui.column("changed", "changed"),
        ],
        rowData=tuning_rows(newest, in_force),
        height=200,
    )
    return html.Div([header, table]), (newest.id if newest.status == "proposed" else None)


def apply(backend: be.Backend, proposal_id: int | None, who: actions.Origin) -> str:
    """Apply proposal ``proposal_id`` (recorded as an operator action); the message for the operator."""
    if proposal_id is None:
        return "nothing to apply: the newest tuning run proposes no change"

    def change() -> str:
        # an out-of-date proposal is refused (its message says why); only the CLI can --force it
        done = tuning_store.apply_proposal(
            backend.db, int(proposal_id), actor=who.actor, settings=backend.settings
        )
        return f"(record {done.id}; restart `tapewatch run` to use it)"

    return actions.perform(backend, APPLY_TUNING_ACTION, f"proposal {proposal_id}", who, change).message
