"""Every Redis key and stream name of tapewatch, in one place.

Processes talk through these names (and the SQL schema), so a name is defined here and nowhere else. All of
them sit under one prefix, ``tw:`` in production; tests use a unique prefix each so they never meet.

| name                               | type   | holds                                                        |
|------------------------------------|--------|--------------------------------------------------------------|
| ``tw:heartbeat:<component>``       | string | JSON ``{"component", "ts" (ms), "pid", "host", "info"}``, TTL |
| ``tw:components``                  | set    | every component that ever sent a heartbeat (so status can say which is down) |
| ``tw:symbol:<SYMBOL>:feed``        | hash   | live feed stats and book health of one symbol (``SymbolFeed``), TTL |
| ``tw:symbols:feed``                | set    | symbols that have a feed hash                                |
| ``tw:metrics:<component>``         | hash   | counters/gauges snapshot of a component, plus ``updated_ms``   |
| ``tw:control:universe``            | string | JSON array of symbols the service must follow; absent = its own choice |
| ``tw:control:paused``              | string | why signalling is paused; absent = not paused                |
| ``tw:control:backup_feed``         | string | ``1`` = use the backup market-data feed; absent = primary      |
| ``tw:control:max_universe``        | string | most symbols to follow (shrink under load); absent = no cap  |
| ``tw:control:events``              | stream | one entry per control change, so the service wakes up        |
| ``tw:control:marker``              | string | a token set (SET NX) with the first control write and kept by every one; gone = Redis lost its data |
| ``tw:stream:signals``              | stream | published signals                                            |
| ``tw:last_signal``                 | string | JSON ``{"ts" (ms), "info"}`` of the newest signal published (no TTL) |
| ``tw:last_rescan``                 | string | JSON ``{"ts" (ms), "info"}`` of the newest universe rescan (no TTL) |
| ``tw:open_signals``                | hash   | signal_id → JSON of an open ENTRY signal with its live outcome (state, unrealised R) |
| ``tw:symbol:<SYMBOL>:features``    | string | JSON of the symbol's last evaluated feature vector (``{"ts", "features"}``), TTL |
| ``tw:symbol:<SYMBOL>:closes``      | string | JSON ``{"ts", "bars": [[open_time, close], ...]}``: its last closed 1m closes, published by the shard that owns it (``--shard I/N``, N > 1) for the others' correlation rule, TTL |
| ``tw:sensor_ticks``                | hash   | sensor name → JSON of its last tick (``SensorTick``: ``ts``, ``outcome``, ``reason``, ``interval_s``, ``errors``, ``completed_ms``), no TTL |

``last_signal`` and ``last_rescan`` are what ``tapewatch status`` shows (``none yet`` while absent). The signal
dispatch writes ``last_signal`` with ``RedisState.set_last_signal`` / ``AsyncRedisState.set_last_signal``
(``info``: ``signal_id``, ``symbol``, ``direction``, ``priority``, ``event_time``); the rescan job writes
``last_rescan`` with ``set_last_rescan`` (``info``: ``run_id``, ``symbols``, ``added``, ``removed``).

``control:marker`` tells an absent control key ("not paused", "the service's own universe") from a Redis that
came back empty: the realtime service sets it on its first read, every control write keeps it (SET NX), and
nothing deletes it. When it is gone (or replaced) while the service has applied control state, Redis lost its
data; the service keeps what it applied and writes it back (``ControlLoop``).

``sensor_ticks`` is written by the Dagster sensors of :data:`SENSORS` at the end of each evaluation
(``orchestration.sensor_ticks``) and read by ``tapewatch status`` and the dashboard's Health page: a sensor
whose last tick grows old (switched off, hung, or not evaluated) or keeps raising is one whose automatic
reactions have stopped. It has no TTL: an old tick is the point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The prefix of every production key.
PREFIX = "tw:"

#: Components that send heartbeats and metrics.
REALTIME = "realtime"
DAGSTER = "dagster"
DASHBOARD = "dashboard"

#: The Dagster sensors that record their ticks (the fields of ``sensor_ticks``), as ``tapewatch status`` and the
#: dashboard list them: the health checks of spec 11.1 and the emergency exclusion of spec 4.2, each with its
#: interval in seconds (the one place it is set: ``orchestration.sensor_ticks.recorded_sensor`` declares the
#: sensor with it, and status judges a sensor that never ticked by it).
SENSORS: dict[str, int] = {
    "api_connectivity_sensor": 30,
    "data_quality_sensor": 60,
    "system_performance_sensor": 30,
    "emergency_exclusion_sensor": 30,
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SYMBOL = re.compile(r"^[A-Z0-9]+$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*:$")


def check_component(component: str) -> str:
    """``component`` if it is a valid component name (lower-case letters, digits, ``_ . -``); else ValueError."""
    if not _NAME.match(component):
        raise ValueError(f"component names are lower-case letters, digits, '_', '.', '-'; got {component!r}")
    return component


def check_symbol(symbol: str) -> str:
    """``symbol`` if it is a Binance symbol (upper-case letters and digits, like BTCUSDT); else ValueError."""
    if not _SYMBOL.match(symbol):
        raise ValueError(f"symbols are upper-case letters and digits, like BTCUSDT; got {symbol!r}")
    return symbol


@dataclass(frozen=True, slots=True)
class Keyspace:
    """The names of every key and stream under one prefix. ``KEYS`` is the production one."""

    prefix: str = PREFIX

    def __post_init__(self) -> None:
        # No glob characters: patterns built from the prefix must match only our keys.
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"a key prefix is words separated and ended by ':', like 'tw:'; got {self.prefix!r}"
            )

    def heartbeat(self, component: str) -> str:
        """String: the heartbeat JSON of ``component``; expires when the component stops beating."""
        return f"{self.prefix}heartbeat:{check_component(component)}"

    @property
    def components(self) -> str:
        """Set: every component that ever sent a heartbeat."""
        return f"{self.prefix}components"

    def symbol_feed(self, symbol: str) -> str:
        """Hash: live feed stats and book health of ``symbol``."""
        return f"{self.prefix}symbol:{check_symbol(symbol)}:feed"

    @property
    def feed_symbols(self) -> str:
        """Set: the symbols that have a feed hash."""
        return f"{self.prefix}symbols:feed"

    def metrics(self, component: str = REALTIME) -> str:
        """Hash: the latest counters/gauges snapshot of ``component``."""
        return f"{self.prefix}metrics:{check_component(component)}"

    @property
    def control_universe(self) -> str:
        """String: JSON array of the symbols the service must follow; absent = the service chooses."""
        return f"{self.prefix}control:universe"

    @property
    def control_paused(self) -> str:
        """String: why signalling is paused; absent = not paused."""
        return f"{self.prefix}control:paused"

    @property
    def control_backup_feed(self) -> str:
        """String: ``1`` = switch to the backup market-data feed; absent = primary feed."""
        return f"{self.prefix}control:backup_feed"

    @property
    def control_max_universe(self) -> str:
        """String: the most symbols the service may follow (it sheds load); absent = no cap."""
        return f"{self.prefix}control:max_universe"

    @property
    def control_events(self) -> str:
        """Stream: one entry per control change (``command``, ``value``, ``ts``, ``source``)."""
        return f"{self.prefix}control:events"

    @property
    def control_marker(self) -> str:
        """String: a token set (SET NX) with the first control write or read and kept since; its absence
        while the service has applied control state means Redis lost its data."""
        return f"{self.prefix}control:marker"

    @property
    def signals_stream(self) -> str:
        """Stream: published signals."""
        return f"{self.prefix}stream:signals"

    @property
    def last_signal(self) -> str:
        """String: JSON ``{"ts", "info"}`` of the newest signal published; absent = none yet."""
        return f"{self.prefix}last_signal"

    @property
    def last_rescan(self) -> str:
        """String: JSON ``{"ts", "info"}`` of the newest universe rescan; absent = none yet."""
        return f"{self.prefix}last_rescan"

    @property
    def open_signals(self) -> str:
        """Hash: signal_id → JSON of an open ENTRY signal with its live outcome; removed when it finishes."""
        return f"{self.prefix}open_signals"

    def symbol_features(self, symbol: str) -> str:
        """String: JSON ``{"ts", "features"}`` of the last feature vector evaluated for ``symbol``."""
        return f"{self.prefix}symbol:{check_symbol(symbol)}:features"

    def closes(self, symbol: str) -> str:
        """String: JSON ``{"ts", "bars"}`` of ``symbol``'s last closed 1m closes (published by its shard)."""
        return f"{self.prefix}symbol:{check_symbol(symbol)}:closes"

    @property
    def sensor_ticks(self) -> str:
        """Hash: sensor name (one of :data:`SENSORS`) → JSON of the last tick it completed or failed."""
        return f"{self.prefix}sensor_ticks"

    @property
    def pattern(self) -> str:
        """A SCAN/KEYS pattern matching every key of this keyspace (and nothing else)."""
        return f"{self.prefix}*"


#: The production keyspace.
KEYS = Keyspace()
