"""Fast scalar random draws for the per-event parts of the market model.

numpy is quick for arrays but slow for one number at a time, so single draws come from blocks that numpy
fills in bulk. The sequence depends only on the generator's seed and the order of the calls, which is
what keeps the simulated market deterministic.
"""

from __future__ import annotations

import math

import numpy as np

_BLOCK = 1 << 15


class Draws:
    """Uniform, normal and derived draws taken from pre-generated blocks of a numpy generator."""

    __slots__ = ("_i", "_j", "_n", "_norm", "_rng", "_unif")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._unif: list[float] = rng.random(_BLOCK).tolist()
        self._norm: list[float] = rng.standard_normal(_BLOCK).tolist()
        self._i = 0
        self._j = 0
        self._n = _BLOCK

    def u(self) -> float:
        """A uniform number in [0, 1)."""
        i = self._i
        if i >= self._n:
            self._unif = self._rng.random(_BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._unif[i]

    def normal(self) -> float:
        """A standard normal number."""
        j = self._j
        if j >= self._n:
            self._norm = self._rng.standard_normal(_BLOCK).tolist()
            j = 0
        self._j = j + 1
        return self._norm[j]

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return int(self.u() * n)

    def exp(self, mean: float) -> float:
        """An exponential number with the given mean."""
        return -mean * math.log(1.0 - self.u())

    def lognormal(self, sigma: float) -> float:
        """A log-normal factor with median 1."""
        return math.exp(sigma * self.normal())

    def pareto(self, alpha: float, cap: float) -> float:
        """A heavy-tailed factor with mean about 1 (Pareto with shape ``alpha``), capped at ``cap``."""
        x_min = (alpha - 1.0) / alpha
        return min(cap, x_min * float((1.0 - self.u()) ** (-1.0 / alpha)))
