"""Dagster Definitions, resources, jobs, schedules and sensors. Filled by issue 5."""
