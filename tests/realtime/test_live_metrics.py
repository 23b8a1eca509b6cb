"""The service's latency figures: inside tapewatch from the frame's receipt, and from the exchange's event time."""

from __future__ import annotations

import pytest

from realtime.live_metrics import LatencyRing


def test_latency_is_measured_from_receipt_even_when_the_exchange_clock_runs_ahead() -> None:
    ring = LatencyRing()
    # the simulator's accelerated clock stamps events an hour ahead of our wall clock
    ahead = 3_600_000
    for i in range(10):
        recv = 1_000_000 + i * 100
        ring.add(handed_ms=recv + 0.4 + i * 0.1, recv_ms=recv, event_time_ms=recv + ahead)
    m = ring.metrics()
    assert m["signal_latency_samples"] == 10
    assert 0.4 <= m["signal_latency_ms_p50"] <= 1.3 and m["signal_latency_ms_p99"] == pytest.approx(1.3)
    # the age from the event time keeps the offset: meaningful against Binance, not the simulator
    assert m["signal_age_ms_p50"] < -3_599_000


def test_latency_never_reads_negative_within_a_millisecond_of_receipt() -> None:
    ring = LatencyRing(size=4)
    # recv is whole milliseconds; a hand-over read just below it (a wall-clock step) counts as 0, not negative
    for handed in (999.7, 1_000.2, 1_001.5, 1_002.0):
        ring.add(handed_ms=handed, recv_ms=1_000, event_time_ms=990)
    assert list(ring.values) == pytest.approx([0.0, 0.2, 1.5, 2.0])
    ring.add(handed_ms=1_003.0, recv_ms=1_000, event_time_ms=990)
    m = ring.metrics()
    assert m["signal_latency_samples"] == 4  # the ring keeps the last four
    assert min(ring.values) == pytest.approx(0.2)
    assert m["signal_age_ms_p99"] == pytest.approx(13.0, abs=0.1)


def test_an_empty_ring_publishes_zeros() -> None:
    assert LatencyRing().metrics() == {
        "signal_latency_ms_p50": 0.0,
        "signal_latency_ms_p99": 0.0,
        "signal_latency_samples": 0,
        "signal_age_ms_p50": 0.0,
        "signal_age_ms_p99": 0.0,
    }
