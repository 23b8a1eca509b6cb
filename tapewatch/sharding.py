"""Scale-out: which realtime instance owns which symbol (``tapewatch run --shard I/N``).

A symbol belongs to shard ``blake2b(symbol) mod N``: a stable hash (Python's ``hash`` is salted per process)
so every instance, on every machine and after every restart, agrees on the partition without talking to the
others. The risk limits that span shards are enforced by :mod:`tapewatch.adapters.risk_ledger`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")  # signed: ``-1/2`` gets the range error


@dataclass(frozen=True, slots=True)
class Shard:
    """Instance ``index`` (0-based) of ``count``; ``Shard(0, 1)`` is the whole universe."""

    index: int
    count: int

    def __post_init__(self) -> None:
        got = f"{self.index}/{self.count}"
        if self.count < 1:
            raise ValueError(f"shard count N must be at least 1 (I/N: instance I of N); got {got}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index must be within 0..{self.count - 1} (I/N: instance I of N); got {got}"
            )

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        """True when this instance owns every symbol (no sharding)."""
        return self.count == 1

    def owns(self, symbol: str) -> bool:
        return self.count == 1 or shard_of(symbol, self.count) == self.index

    def select(self, symbols: Iterable[str]) -> list[str]:
        """The symbols of ``symbols`` this shard owns, in their order."""
        return [s for s in symbols if self.owns(s)]


WHOLE = Shard(0, 1)


def shard_of(symbol: str, count: int) -> int:
    """The shard (0..count-1) that owns ``symbol``."""
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> Shard:
    """``"I/N"`` → Shard; ValueError with the expected form otherwise. The message names no option: the value
    comes from ``--shard`` or from ``TAPEWATCH_SHARD``, and the caller says which."""
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"a shard is I/N, like 0/2 (instance 0 of 2); got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))
