"""Tests of the simulated exchange (realtime/sim)."""
