"""Dagster assets and asset checks (universe, outcomes, metrics, reports, archive). Filled by issue 5."""
