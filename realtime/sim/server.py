"""The simulated exchange on the network: Binance's REST and websocket protocol on one port.

:class:`SimExchange` serves ``/fapi/v1/...`` (plain HTTP, answered from the websocket server's
``process_request`` hook), websockets under ``/public/...`` and ``/market/...``, and the fault control
endpoint ``/sim/faults``. A clock task advances the venue in fixed steps as (accelerated) wall time
passes and publishes what each step produced; the market is the same whoever connects. In ``manual``
mode there is no clock task and tests move time with :meth:`SimExchange.advance`.

Limits as Binance: request weight per minute (429, then 418), 10 incoming messages per second per
connection, 1024 streams per connection, server pings (``ping_interval``) answered within
``ping_timeout``, and a connection lifetime (24 h by default) counted in wall seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from realtime.sim import rest
from realtime.sim.episodes import Episode
from realtime.sim.faults import FaultConfig, Faults, malformed_payload
from realtime.sim.hub import MAX_STREAMS, Client, Hub, parse_ws_path
from realtime.sim.lag import LagReport
from realtime.sim.model import STEP_MS
from realtime.sim.protocol import dumps, error_body
from realtime.sim.ratelimit import WeightLimiter
from realtime.sim.resume import MarketResume
from realtime.sim.venue import Venue

log = logging.getLogger(__name__)

SNAPSHOT_WAIT_S = 2.0  # answer anyway when the symbol's book has not changed for this long
MAX_STEPS_PER_TICK = 200  # yield to the network at least this often when catching up
SLOW_CONSUMER_BYTES = 64 << 20
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 418: "I'm a teapot", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


class SimExchange:
    """A running simulated Binance USD-M exchange; ``async with SimExchange(port=0) as sim: ...``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        symbols: int = 40,
        speed: float = 1.0,
        start_ms: int | None = None,
        faults: FaultConfig | None = None,
        *,
        weight_limit: int = 2400,
        manual: bool = False,
        clock: Callable[[], float] = time.monotonic,
        episode_rate_scale: float = 1.0,
        resume: MarketResume | None = None,
    ) -> None:
        """``resume``: go on with the market a previous run left (see :class:`~realtime.sim.venue.Venue`)."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.host = host
        self.port = port
        self.speed = speed
        self.manual = manual
        self._clock = clock
        start = int(time.time() * 1000) if start_ms is None else start_ms
        self.venue = Venue(seed, symbols, start, episode_rate_scale=episode_rate_scale, resume=resume)
        self.faults = Faults(faults, clock, seed)
        self.faults.bind(self._drop_all, self._inject)
        self.limiter = WeightLimiter(weight_limit, clock)
        self.lag = LagReport()  # the clock falling behind a machine too slow for it
        self.hub = Hub()
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[int, list[tuple[asyncio.Future[str], int]]] = {}
        self._time_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (``port=0`` picks a free port, see :attr:`port`) and start the clock."""
        config = self.faults.config
        self._server = await ws_serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            open_timeout=120,
            close_timeout=5,
            server_header=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if not self.manual:
            self._tasks.append(asyncio.create_task(self._run_clock(), name="sim-clock"))
        self._tasks.append(asyncio.create_task(self._run_faults(), name="sim-faults"))
        log.info("simulated exchange listening on %s", self.rest_url, extra={"port": self.port})

    async def stop(self) -> None:
        """Stop the clock, answer pending snapshots with the book as it is, close every connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for i, waiting in self._waiters.items():
            for fut, limit in waiting:
                if not fut.done():
                    fut.set_result(self.venue.snapshot(self.venue.market.symbols[i], limit))
        self._waiters.clear()
        for _, done in self._time_waiters:
            done.cancel()
        self._time_waiters.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SimExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_public_url(self) -> str:
        return f"ws://{self.host}:{self.port}/public"

    @property
    def ws_market_url(self) -> str:
        return f"ws://{self.host}:{self.port}/market"

    @property
    def now_ms(self) -> int:
        return self.venue.now_ms

    @property
    def episodes(self) -> list[Episode]:
        return list(self.venue.market.episodes)

    # --- time ------------------------------------------------------------------------------------------
    def _step(self) -> None:
        hub, faults = self.hub, self.faults
        for _, stream, payload, _ in self.venue.step(hub.wants):
            if faults.active and (faults.is_stale(stream) or faults.take_gap(stream)):
                continue
            hub.deliver(stream, payload)
        if self._time_waiters:
            now = self.venue.now_ms
            for target, done in [w for w in self._time_waiters if w[0] <= now]:
                self._time_waiters.remove((target, done))
                if not done.done():
                    done.set_result(None)
        if self._waiters:
            for i in self.venue.market.touched:
                waiting = self._waiters.pop(i, None)
                for fut, limit in waiting or ():
                    if not fut.done():
                        fut.set_result(self.venue.snapshot(self.venue.market.symbols[i], limit))

    async def wait_until(self, sim_ms: int) -> None:
        """Return once simulated time has reached ``sim_ms``."""
        if self.venue.now_ms >= sim_ms:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._time_waiters.append((sim_ms, fut))
        await fut

    async def advance(self, ms: int) -> None:
        """Manual mode: move simulated time forward by ``ms`` (whole steps), publishing as it goes."""
        for n in range(max(1, ms // STEP_MS)):
            self._step()
            if n % 20 == 19:
                await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def _run_clock(self) -> None:
        clock = self._clock
        wall0, sim0 = clock(), self.venue.now_ms
        rate = 1000.0 * self.speed  # simulated ms per wall second
        last_check = wall0
        while True:
            target = sim0 + (clock() - wall0) * rate
            steps = 0
            while self.venue.now_ms + STEP_MS <= target and steps < MAX_STEPS_PER_TICK:
                self._step()
                steps += 1
            now = clock()
            if now - last_check > 1.0:
                last_check = now
                self._drop_slow_consumers()
                if target - self.venue.now_ms > 5_000:
                    message = self.lag.behind(target - self.venue.now_ms, now)
                    if message is not None:
                        log.warning(message)
                    wall0, sim0 = now, self.venue.now_ms
            if steps >= MAX_STEPS_PER_TICK:
                await asyncio.sleep(0)
                continue
            next_wall = wall0 + (self.venue.now_ms + STEP_MS - sim0) / rate
            await asyncio.sleep(max(0.0, next_wall - clock()))

    def _drop_slow_consumers(self) -> None:
        for client in list(self.hub.clients.values()):
            transport = client.ws.transport
            if transport is not None and transport.get_write_buffer_size() > SLOW_CONSUMER_BYTES:
                log.warning("dropping a slow consumer", extra={"streams": len(client.streams)})
                transport.abort()

    async def _run_faults(self) -> None:
        """Scheduled faults of :class:`FaultConfig`, each on its own random timer (wall time)."""
        config, faults = self.faults.config, self.faults
        symbols = [s.symbol for s in self.venue.specs]
        schedule: dict[str, float] = {}
        every = {"drop": config.drop_every, "gap": config.gap_every, "stale": config.stale_every,
                 "malformed": config.malformed_every}  # fmt: skip
        for name, mean in every.items():
            if mean:
                schedule[name] = self._clock() + faults.interval(mean)
        while schedule:
            name = min(schedule, key=schedule.__getitem__)
            await asyncio.sleep(max(0.0, schedule[name] - self._clock()))
            if name == "drop":
                faults.drop_connections()
            elif name == "gap":
                faults.gap(faults.pick(symbols))
            elif name == "stale":
                sym = faults.pick(symbols).lower()
                faults.stale(
                    faults.pick([f"{sym}@depth@100ms", f"{sym}@aggTrade", f"{sym}@bookTicker"]),
                    config.stale_for,
                )
            else:
                faults.malformed(faults.pick(["invalid_json", "nan_price", "negative_qty", "unknown_stream"]))
            log.info("scheduled fault: %s", name, extra={"fault": name})
            schedule[name] = self._clock() + faults.interval(every[name] or 1.0)
        await asyncio.Future()  # nothing scheduled: wait to be cancelled

    # --- faults that need the network ------------------------------------------------------------------
    def _drop_all(self) -> int:
        clients = list(self.hub.clients.values())
        for client in clients:
            if client.ws.transport is not None:
                client.ws.transport.abort()
        return len(clients)

    def _inject(self, kind: str, stream: str | None) -> int:
        targets = self.hub.subscribers(stream) if stream else list(self.hub.clients.values())
        for client in targets:
            name = stream or next(iter(client.streams), "btcusdt@aggTrade")
            framed_stream, payload = malformed_payload(kind, name, name.partition("@")[0])
            self.hub.send_to(client, framed_stream, payload)
        return len(targets)

    # --- websockets ------------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        target = parse_ws_path(ws.request.path if ws.request else "")
        if target is None:  # process_request already refused other paths
            return
        client = Client(ws, target.route, target.combined, self._clock())
        self.hub.add(client)
        self.hub.subscribe(client, list(target.streams))
        guard = asyncio.create_task(self._lifetime(client))
        try:
            async for message in ws:
                if client.too_fast(self._clock()):
                    await ws.close(1008, "Too many requests")
                    break
                await ws.send(self.hub.control(client, message))
        except ConnectionClosed:
            pass
        finally:
            guard.cancel()
            self.hub.remove(client)

    async def _lifetime(self, client: Client) -> None:
        """Close the connection once it is older than the lifetime (re-read each time: it can change)."""
        while True:
            left = client.opened + self.faults.max_connection_age - self._clock()
            if left <= 0:
                await client.ws.close(1001, "Connection lifetime expired")
                return
            await asyncio.sleep(min(left, 0.5))

    # --- HTTP ------------------------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.startswith("/fapi/"):
            return await self._rest(url.path, _params(url.query))
        if url.path.startswith("/sim/"):
            return self._control(request, url.path, _params(url.query))
        target = parse_ws_path(request.path)
        if target is None:
            return _response(404, error_body(-5000, f"Path {url.path} is invalid"), self.limiter.peek())
        if len(target.streams) > MAX_STREAMS:
            return _response(
                400, error_body(-1130, f"Too many streams; at most {MAX_STREAMS}"), self.limiter.peek()
            )
        if self.faults.holding():  # an outage: the handshake fails, the client tries again later
            return _response(
                503, error_body(-1001, "Service unavailable (injected outage)."), self.limiter.peek()
            )
        return None

    async def _rest(self, path: str, params: dict[str, str]) -> Response:
        weight = rest.weight_of(path, params)
        verdict = self.limiter.charge(weight)
        if verdict.status == 429:
            msg = (f"Too much request weight used; current limit is {self.limiter.limit} request weight per 1 MINUTE. "
                   "Please use WebSocket Streams for live updates to avoid polling the API.")  # fmt: skip
            return _response(429, error_body(-1003, msg), verdict.used, verdict.retry_after)
        if verdict.status == 418:
            until = int(time.time() * 1000) + verdict.retry_after * 1000
            msg = f"Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans."
            return _response(418, error_body(-1003, msg), verdict.used, verdict.retry_after)
        forced = self.faults.take_rest_error(path, params)
        if forced is not None:
            return _fault_response(forced, verdict.used)
        reply = rest.answer(self.venue, path, params)
        if isinstance(reply, rest.SnapshotWait):
            body = await self._snapshot(reply)
            delay = self.faults.take_snapshot_delay()
            if delay > 0:
                await asyncio.sleep(delay)
            return _response(200, body.encode(), self.limiter.peek())
        return _response(reply.status, reply.body, verdict.used)

    async def _snapshot(self, wait: rest.SnapshotWait) -> str:
        """The book of ``wait.symbol`` right after its next change (so its diff with ``u == lastUpdateId`` is
        published to every subscriber before the answer leaves)."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(wait.symbol.index, []).append((fut, wait.limit))
        try:
            return await asyncio.wait_for(fut, SNAPSHOT_WAIT_S)
        except TimeoutError:
            return self.venue.snapshot(wait.symbol, wait.limit)

    def _control(self, request: Request, path: str, params: dict[str, str]) -> Response:
        if path == "/sim/faults":
            if params.get("action") is None:
                return _response(200, dumps(self.faults.state()), self.limiter.peek())
            try:
                return _response(200, dumps(self.faults.apply(params)), self.limiter.peek())
            except ValueError as exc:
                return _response(400, dumps({"error": str(exc)}), self.limiter.peek())
        if path == "/sim/status":
            status: dict[str, Any] = {
                "now_ms": self.venue.now_ms, "speed": self.speed, "symbols": len(self.venue.specs),
                "connections": len(self.hub.clients), "episodes": len(self.venue.market.episodes),
                "weight_used": self.limiter.peek(),
                "agg_trades_from_id_too_old": self.venue.agg_trades_from_id_too_old,
                "invalid_subscribes": self.hub.invalid_subscribes,
            }  # fmt: skip
            return _response(200, dumps(status), self.limiter.peek())
        if path == "/sim/episodes":
            return _response(
                200, dumps([e.ground_truth() for e in self.venue.market.episodes]), self.limiter.peek()
            )
        return _response(404, dumps({"error": f"unknown path {path}"}), self.limiter.peek())


def _params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _response(status: int, body: bytes, used: int, retry_after: int | None = None) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    headers["X-MBX-USED-WEIGHT-1M"] = str(used)  # on every answer, errors included, as Binance
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(status, _REASONS.get(status, "Error"), headers, body)


def _fault_response(status: int, used: int) -> Response:
    if status == 429:
        return _response(429, error_body(-1003, "Too many requests (injected fault)."), used, 5)
    if status == 418:
        return _response(418, error_body(-1003, "IP banned (injected fault)."), used, 30)
    return _response(
        status, error_body(-1001, "Internal error; unable to process your request. Please try again."), used
    )


async def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    seed: int = 1,
    symbols: int = 40,
    speed: float = 1.0,
    faults_config: FaultConfig | None = None,
    start_ms: int | None = None,
) -> None:
    """Run the simulated exchange until cancelled (the ``tapewatch sim`` command)."""
    async with SimExchange(host, port, seed, symbols, speed, start_ms, faults_config) as sim:
        log.info(
            "simulated Binance USD-M: REST %s, websockets %s and %s",
            sim.rest_url,
            sim.ws_public_url,
            sim.ws_market_url,
        )
        await asyncio.Future()
