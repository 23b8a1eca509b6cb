"""Fault injection for the simulated exchange: what can go wrong with Binance, on demand.

Faults never touch the market model (the same seed still gives the same market); they change what is
delivered: a dropped connection, reconnects refused for a while, a missing diff, a stream gone quiet, a
malformed frame, a REST error or a slow snapshot, the 24-hour cut. Three ways to trigger them:

- from Python, on a running exchange: ``sim.faults.gap("BTCUSDT")``, ``sim.faults.drop_connections()``
  (after ``sim.faults.hold()``: an outage that lasts until ``sim.faults.release()``);
- from another process: ``POST /sim/faults?action=gap&symbol=BTCUSDT`` (parameters in the query string:
  the shared websocket/HTTP port reads no request bodies), ``GET /sim/faults`` shows the state;
- on a schedule, from :class:`FaultConfig` (the ``--faults`` CLI flag, see :func:`parse_faults`).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

MALFORMED_KINDS = ("invalid_json", "nan_price", "negative_qty", "unknown_stream")
REST_FAULT_STATUSES = (418, 429, 500, 502, 503, 504)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"250ms"``, ``"30"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` (ValueError otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*", text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 30s, 5m, 2h, 1d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults on a schedule (wall seconds) and the connection limits Binance imposes.

    ``*_every``: None = never; otherwise the mean interval between two such faults (exponentially
    distributed). ``rest_error_rate``: share of REST requests answered with a random 5xx.
    ``slow_snapshot``: extra seconds before every depth snapshot is answered.
    """

    drop_every: float | None = None
    gap_every: float | None = None
    stale_every: float | None = None
    stale_for: float = 20.0
    malformed_every: float | None = None
    rest_error_rate: float = 0.0
    slow_snapshot: float = 0.0
    max_connection_age: float = 86_400.0
    ping_interval: float = 180.0
    ping_timeout: float = 600.0


_SPEC_KEYS = {
    "drop": "drop_every",
    "gap": "gap_every",
    "stale": "stale_every",
    "stale-for": "stale_for",
    "malformed": "malformed_every",
    "rest5xx": "rest_error_rate",
    "slow-snapshot": "slow_snapshot",
    "cut": "max_connection_age",
    "ping": "ping_interval",
    "ping-timeout": "ping_timeout",
}


def parse_faults(spec: str) -> FaultConfig:
    """``"gap=30s,drop=5m,stale=2m,stale-for=20s,malformed=1m,rest5xx=0.02,slow-snapshot=2s,cut=1h,ping=3m,
    ping-timeout=10m"`` -> :class:`FaultConfig`; ValueError naming the bad key or value."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or key.strip() not in _SPEC_KEYS:
            raise ValueError(f"unknown fault {part!r}; known: {', '.join(_SPEC_KEYS)}")
        name = _SPEC_KEYS[key.strip()]
        if name == "rest_error_rate":
            rate = float(raw)
            if not 0 <= rate <= 1:
                raise ValueError(f"rest5xx must be a share between 0 and 1, got {raw!r}")
            values[name] = rate
        else:
            seconds = parse_duration(raw)
            if seconds <= 0 and name != "slow_snapshot":
                raise ValueError(f"{key} must be positive, got {raw!r}")
            values[name] = seconds
    return FaultConfig(**values)


def malformed_payload(kind: str, stream: str, symbol: str) -> tuple[str, str]:
    """A bad frame for ``stream``: (stream name for the combined envelope, payload text)."""
    s = symbol.upper()
    if kind == "invalid_json":
        return stream, '{"e":"depthUpdate","E":17,"s":"' + s + '","b":[["1.0",'
    if kind == "nan_price":
        return (
            stream,
            f'{{"e":"aggTrade","E":1,"a":1,"s":"{s}","p":"NaN","q":"1","f":1,"l":1,"T":1,"m":false}}',
        )
    if kind == "negative_qty":
        return (
            stream,
            f'{{"e":"aggTrade","E":1,"a":1,"s":"{s}","p":"1.0","q":"-1.5","f":1,"l":1,"T":1,"m":true}}',
        )
    if kind == "unknown_stream":
        return f"{symbol.lower()}@bogusStream", f'{{"e":"bogus","E":1,"s":"{s}"}}'
    raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")


class Faults:
    """The fault switches of one running exchange. The server binds the actions that need sockets."""

    def __init__(
        self, config: FaultConfig | None = None, clock: Callable[[], float] | None = None, seed: int = 0
    ):
        self.config = config or FaultConfig()
        self.max_connection_age = self.config.max_connection_age
        self._clock = clock or time.monotonic
        self._rng = random.Random(seed ^ 0xFA17)
        self._gaps: dict[str, float] = {}  # depth stream name -> expiry
        self._stale: dict[str, float] = {}  # stream name -> until (inf = until cleared)
        # [status, remaining count, path prefix, symbol (None: any request)]
        self._rest: list[tuple[int, int, str, str | None]] = []
        self._slow: tuple[float, int] | None = None  # seconds, remaining count (-1 = forever)
        self._held: float | None = None  # websocket handshakes refused until then (inf = until released)
        self.counts: dict[str, int] = {}
        self._drop: Callable[[], int] = lambda: 0
        self._inject: Callable[[str, str | None], int] = lambda kind, stream: 0
        if self.config.slow_snapshot > 0:
            self._slow = (self.config.slow_snapshot, -1)

    def bind(self, drop: Callable[[], int], inject: Callable[[str, str | None], int]) -> None:
        self._drop = drop
        self._inject = inject

    @property
    def active(self) -> bool:
        """True when a delivery fault (gap or stale) may apply; the hot path skips checks otherwise."""
        return bool(self._gaps or self._stale)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    # --- websocket faults ------------------------------------------------------------------------------
    def drop_connections(self) -> int:
        """Cut every websocket connection at once (no close frame: the client sees 1006); return how many.
        The clients reconnect at once; :meth:`hold` first makes an outage of it."""
        self._count("drop")
        return self._drop()

    def hold(self, seconds: float | None = None) -> None:
        """Refuse every websocket handshake (HTTP 503, as an exchange gateway during an outage) for
        ``seconds`` or until :meth:`release`; open connections stay as they are, REST is answered."""
        self._held = float("inf") if seconds is None else self._clock() + seconds
        self._count("hold")

    def release(self) -> None:
        """Let websocket handshakes in again (a no-op when none are held)."""
        self._held = None

    def gap(self, symbol: str, within: float = 5.0) -> None:
        """Lose the next diff of every depth stream of ``symbol`` (sent within ``within`` seconds)."""
        s = symbol.lower()
        until = self._clock() + within
        for suffix in ("@depth", "@depth@100ms", "@depth@500ms"):
            self._gaps[s + suffix] = until
        self._count("gap")

    def stale(self, stream: str, seconds: float | None = None) -> None:
        """Stop delivering ``stream`` (connection stays open) for ``seconds`` or until :meth:`unstale`."""
        self._stale[stream] = float("inf") if seconds is None else self._clock() + seconds
        self._count("stale")

    def unstale(self, stream: str | None = None) -> None:
        if stream is None:
            self._stale.clear()
        else:
            self._stale.pop(stream, None)

    def malformed(self, kind: str, stream: str | None = None) -> int:
        """Send one malformed frame to subscribers of ``stream`` (every connection if None); return how many."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")
        self._count("malformed")
        return self._inject(kind, stream)

    def cut_connections_after(self, seconds: float) -> None:
        """Set the connection lifetime (Binance: 24 h), applied to open connections too."""
        self.max_connection_age = seconds

    # --- REST faults -----------------------------------------------------------------------------------
    def rest_error(
        self, status: int, count: int = 1, path: str = "/fapi/", symbol: str | None = None
    ) -> None:
        """Answer the next ``count`` REST requests under ``path`` with ``status`` (418, 429 or 5xx); with
        ``symbol``, only requests whose ``symbol`` parameter is that symbol."""
        if status not in REST_FAULT_STATUSES:
            raise ValueError(f"status must be one of {REST_FAULT_STATUSES}, got {status}")
        self._rest.append((status, count, path, symbol))
        self._count("rest_error")

    def slow_snapshots(self, seconds: float, count: int = -1) -> None:
        """Delay the next ``count`` depth snapshots (all if -1) by ``seconds``; 0 turns it off."""
        self._slow = (seconds, count) if seconds > 0 else None

    def clear(self) -> None:
        """Remove every pending fault and restore the configured connection lifetime."""
        self._gaps.clear()
        self._stale.clear()
        self._rest.clear()
        self._slow = None
        self._held = None
        self.max_connection_age = self.config.max_connection_age

    # --- what the server asks --------------------------------------------------------------------------
    def holding(self) -> bool:
        """Whether a websocket handshake is refused now."""
        if self._held is None:
            return False
        if self._clock() < self._held:
            return True
        self._held = None
        return False

    def take_gap(self, stream: str) -> bool:
        until = self._gaps.pop(stream, None)
        return until is not None and self._clock() <= until

    def is_stale(self, stream: str) -> bool:
        until = self._stale.get(stream)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._stale[stream]
        return False

    def take_rest_error(self, path: str, params: Mapping[str, str] | None = None) -> int | None:
        asked = None if params is None else params.get("symbol")
        for k, (status, remaining, prefix, symbol) in enumerate(self._rest):
            if path.startswith(prefix) and (symbol is None or symbol == asked):
                if remaining <= 1:
                    del self._rest[k]
                else:
                    self._rest[k] = (status, remaining - 1, prefix, symbol)
                return status
        if self.config.rest_error_rate and self._rng.random() < self.config.rest_error_rate:
            return self._rng.choice((500, 502, 503, 504))
        return None

    def take_snapshot_delay(self) -> float:
        if self._slow is None:
            return 0.0
        seconds, remaining = self._slow
        if remaining > 0:
            self._slow = (seconds, remaining - 1) if remaining > 1 else None
        return seconds

    def pick(self, choices: list[str]) -> str:
        """A random choice for scheduled faults (its own generator: the market is unaffected)."""
        return self._rng.choice(choices)

    def interval(self, mean: float) -> float:
        return self._rng.expovariate(1.0 / mean)

    # --- HTTP control ----------------------------------------------------------------------------------
    def apply(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Run one control action from query parameters (``action=...``); ValueError when they are bad."""
        action = params.get("action", "")
        if action == "drop":
            return {"dropped": self.drop_connections()}
        if action == "gap":
            self.gap(_need(params, "symbol"))
        elif action == "stale":
            seconds = params.get("seconds")
            self.stale(_need(params, "stream"), None if seconds is None else float(seconds))
        elif action == "unstale":
            self.unstale(params.get("stream"))
        elif action == "hold":
            seconds = params.get("seconds")
            self.hold(None if seconds is None else float(seconds))
        elif action == "release":
            self.release()
        elif action == "malformed":
            return {"sent": self.malformed(params.get("kind", "invalid_json"), params.get("stream"))}
        elif action == "rest_error":
            self.rest_error(
                int(_need(params, "status")),
                int(params.get("count", "1")),
                params.get("path", "/fapi/"),
                params.get("symbol"),
            )
        elif action == "slow_snapshots":
            self.slow_snapshots(float(_need(params, "seconds")), int(params.get("count", "-1")))
        elif action == "cut":
            self.cut_connections_after(float(_need(params, "seconds")))
        elif action == "clear":
            self.clear()
        else:
            raise ValueError(
                f"unknown action {action!r}; known: drop, gap, stale, unstale, hold, release, malformed, "
                "rest_error, slow_snapshots, cut, clear"
            )
        return self.state()

    def state(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "config": {f.name: getattr(self.config, f.name) for f in fields(self.config)},
            "max_connection_age": self.max_connection_age,
            "pending_gaps": sorted(s for s, until in self._gaps.items() if until >= now),
            "stale": sorted(self._stale),
            "held": self.holding(),
            "rest_errors": [
                {"status": s, "count": c, "path": p, "symbol": sym} for s, c, p, sym in self._rest
            ],
            "slow_snapshots": None
            if self._slow is None
            else {"seconds": self._slow[0], "count": self._slow[1]},
            "counts": dict(self.counts),
        }


def _need(params: Mapping[str, str], key: str) -> str:
    value = params.get(key)
    if not value:
        raise ValueError(f"missing parameter {key!r}")
    return value
