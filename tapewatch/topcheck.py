"""Proof that a local book is right: compare it with Binance's ``bookTicker`` at the same update id.

A bookTicker and a depth diff that carry the same ``u`` describe the same instant, but they arrive on
separate streams in either order. The checker remembers recent book tops by ``u`` and recent
bookTickers by ``u`` (both bounded) and compares whichever arrives second. A bookTicker whose ``u``
falls strictly inside a diff's ``[U, u]`` shows a state a diff-built book never has: it is not
comparable and is not counted.

A mismatch proves the local book wrong: each comparing call returns its description (None otherwise) and the
market restarts the book (:meth:`tapewatch.market_depth.MarketDepth._proven_wrong`), so it is never read until
a new snapshot has synced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from tapewatch.book import Top
from tapewatch.book_sides import Side
from tapewatch.events import BookTicker

V = TypeVar("V")
#: A top of book as kept: (bid price, bid qty, ask price, ask qty). Plain tuples, not :class:`Top`: one is kept
#: per applied diff, and the native replay path (:mod:`tapewatch.native_lines`) makes them too.
Quote = tuple[float, float, float, float]
#: A ticker as kept until its diff comes: its quote and its symbol (for the mismatch's text).
HeldTicker = tuple[float, float, float, float, str]


@dataclass(slots=True)
class TopCheck:
    """Per-symbol comparison state; ``checks``/``mismatches`` are the counts the replay reports."""

    keep: int = 512
    checks: int = 0
    mismatches: int = 0
    samples: list[str] = field(default_factory=list)
    # Insertion-ordered dicts trimmed to the newest ``keep`` entries once they hold twice that many
    # (amortised O(1): no per-event bookkeeping on the hot path).
    _tops: dict[int, Quote] = field(default_factory=dict)
    _tickers: dict[int, HeldTicker] = field(default_factory=dict)

    def on_book(self, update_id: int, top: Top | None) -> str | None:
        """Record the top of book right after the diff with final id ``update_id`` was applied. Returns the
        mismatch (its sample text) when a ticker of ``update_id`` came first and disagrees, else None."""
        if top is None:
            return None
        quote = (top.bid_price, top.bid_qty, top.ask_price, top.ask_qty)
        ticker = self._tickers.pop(update_id, None)
        if ticker is not None:
            self.checks += 1
            return None if ticker[:4] == quote else self._mismatch(update_id, ticker, quote)
        self._store(update_id, quote)
        return None

    def on_sides(self, update_id: int, bids: Side, asks: Side) -> str | None:
        """:meth:`on_book` for the top of ``bids`` / ``asks`` (a book's sides right after the diff with final id
        ``update_id``), same result. The per-diff path of :class:`~tapewatch.market.Market`: a quote is built
        only when it is kept for a later ticker (or a mismatch is reported), not when a pending ticker is
        compared at once, and a symbol without pending tickers skips their lookup."""
        bid, ask = bids.best(), asks.best()
        if bid is None or ask is None:
            return None
        if self._tickers:
            ticker = self._tickers.pop(update_id, None)
            if ticker is not None:
                self.checks += 1
                if (ticker[0], ticker[1]) != bid or (ticker[2], ticker[3]) != ask:
                    return self._mismatch(update_id, ticker, (bid[0], bid[1], ask[0], ask[1]))
                return None
        self._store(update_id, (bid[0], bid[1], ask[0], ask[1]))
        return None

    def _store(self, update_id: int, top: Quote) -> None:
        """Keep ``top`` for a ticker of ``update_id`` still to come (the newest ``keep`` survive a trim)."""
        tops = self._tops
        tops[update_id] = top
        if len(tops) > 2 * self.keep:
            _drop_oldest(tops, self.keep)

    def on_ticker(self, ticker: BookTicker) -> str | None:
        """Compare ``ticker`` with the book's top at its update id when that is known, else keep it for the
        diff still to come. Returns the mismatch (its sample text) when it disagrees, else None."""
        u = ticker.update_id
        held = (ticker.bid_price, ticker.bid_qty, ticker.ask_price, ticker.ask_qty, ticker.symbol)
        top = self._tops.pop(u, None)
        if top is not None:
            self.checks += 1
            return None if held[:4] == top else self._mismatch(u, held, top)
        tickers = self._tickers
        tickers[u] = held
        if len(tickers) > 2 * self.keep:
            _drop_oldest(tickers, self.keep)
        return None

    def mismatched(self, update_id: int, ticker: HeldTicker, top: Quote) -> str:
        """Count a check of ``ticker`` against ``top`` at ``update_id`` that disagreed (the native replay path
        found it: :mod:`tapewatch.native_lines`); returns its description, as a comparing call would."""
        self.checks += 1
        return self._mismatch(update_id, ticker, top)

    def forget_ticker(self, update_id: int) -> None:
        """Drop the pending ticker of ``update_id`` (one the market found bogus), so it is never compared."""
        self._tickers.pop(update_id, None)

    def reset(self) -> None:
        """Forget pending tops and tickers (the book was resynced)."""
        self._tops.clear()
        self._tickers.clear()

    def _mismatch(self, update_id: int, t: HeldTicker, top: Quote) -> str:
        """Count a ticker that disagrees with the book at its update id (the first 10 kept as samples); returns
        its description."""
        self.mismatches += 1
        sample = (
            f"{t[4]} u={update_id}: ticker {t[0]}x{t[1]} / {t[2]}x{t[3]}"
            f" vs book {top[0]}x{top[1]} / {top[2]}x{top[3]}"
        )
        if len(self.samples) < 10:
            self.samples.append(sample)
        return sample


def _drop_oldest(entries: dict[int, V], keep: int) -> None:
    """Trim an insertion-ordered dict to its newest ``keep`` entries, in place (no copy of the survivors)."""
    for key in list(islice(entries, len(entries) - keep)):
        del entries[key]
