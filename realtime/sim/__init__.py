"""The simulated Binance USD-M exchange: same protocol on 127.0.0.1, a deterministic market with planted
order-flow episodes, fault injection, and a record mode that writes a capture without any network.

Entry points: :func:`serve` / :class:`SimExchange` (network) and :func:`record` (capture files).
"""

from realtime.sim.episodes import Episode
from realtime.sim.faults import FaultConfig, Faults, parse_duration, parse_faults
from realtime.sim.record import DEFAULT_RECORD_START_MS, RecordResult, parse_gap, record
from realtime.sim.server import SimExchange, serve
from realtime.sim.venue import Venue

__all__ = [
    "DEFAULT_RECORD_START_MS",
    "Episode",
    "FaultConfig",
    "Faults",
    "RecordResult",
    "SimExchange",
    "Venue",
    "parse_duration",
    "parse_faults",
    "parse_gap",
    "record",
    "serve",
]
