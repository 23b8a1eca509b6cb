"""Dagster definitions of one area (see orchestration/definitions.py); filled by its issue-5 workstream."""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()
