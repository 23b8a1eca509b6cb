"""The Dagster code location named in workspace.yaml loads."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from orchestration.definitions import defs
from tests.helpers import ROOT


def test_workspace_points_at_a_loadable_definitions_object() -> None:
    workspace = yaml.safe_load(Path(ROOT / "workspace.yaml").read_text())
    target = workspace["load_from"][0]["python_module"]
    assert (target["module_name"], target["attribute"]) == ("orchestration.definitions", "defs")
    assert isinstance(defs, dg.Definitions)
    dg.Definitions.validate_loadable(defs)
