"""The Quality page's tuning block says when the applied tuning waits for the realtime service's restart (an
apply takes effect at ``tapewatch run``'s next start). Real PostgreSQL and Redis."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from dashboard import actions, tuning_panel
from dashboard import backend as be
from tests.dashboard.test_pages import text_of

WHO = actions.Origin(actor="alice", client_addr="10.1.2.3")


def seed_proposal(backend: be.Backend) -> int:
    result = json.dumps({"signals": 40, "wins": 22, "win_rate": 0.55, "mean_r": 0.2, "total_r": 8.0})
    with backend.db.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO tuning_proposals (window_start, split_at, window_end, status, parameters, "
                    "current_parameters, in_sample, out_of_sample, current_in_sample, current_out_of_sample, "
                    "note, applied_parameters) VALUES (0, 1, 2, 'proposed', CAST(:p AS jsonb), "
                    "CAST(:c AS jsonb), CAST(:r AS jsonb), CAST(:r AS jsonb), CAST(:r AS jsonb), "
                    "CAST(:r AS jsonb), 'better out of sample', '{}') RETURNING id"
                ),
                {
                    "p": json.dumps({"orderbook_imbalance_threshold": 0.32}),
                    "c": json.dumps({"orderbook_imbalance_threshold": 0.28}),
                    "r": result,
                },
            ).scalar_one()
        )


def first_line(table: Any) -> Any:
    return table.children[0].children[0]


def test_the_tuning_block_says_an_apply_waits_for_the_restart(backend: be.Backend) -> None:
    proposal_id = seed_proposal(backend)
    backend.redis.beat("realtime", ttl_s=30, info={"pid": 1, "tuning_record": 0})  # running, nothing applied
    table, _ = tuning_panel.view(backend)
    assert text_of(first_line(table)) == "in force: nothing applied, in use"
    assert tuning_panel.apply(backend, proposal_id, WHO).startswith("apply_tuning done")

    table, _ = tuning_panel.view(backend)
    line = first_line(table)
    assert "restart pending: realtime started with nothing applied" in text_of(line)
    assert line.className == "tw-error" and f"applied #{proposal_id}" in text_of(line)
    assert table.children[1].rowData[0]["in_force"] == 0.32  # the table shows the database's set in force

    record = text_of(line).split("(record ")[1].split(")")[0]
    backend.redis.beat("realtime", ttl_s=30, info={"pid": 1, "tuning_record": int(record)})  # restarted
    line = first_line(tuning_panel.view(backend)[0])
    assert text_of(line).endswith(", in use") and line.className == "tw-muted"
