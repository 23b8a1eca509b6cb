"""The Dagster code location loaded by ``workspace.yaml``.

It holds no assets yet: the batch side (universe selection, outcomes, metrics, reports) arrives with
issue 5. It exists now so that ``dagster dev -w workspace.yaml`` loads and the layout is stable.
"""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()
