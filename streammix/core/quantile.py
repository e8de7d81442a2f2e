"""Exact quantiles of values computed chunk by chunk, in two passes.

Pass 1 keeps a uniform sample of the values (the rows with the smallest
per-row random keys, so the sample does not depend on the chunking). The
sample brackets the wanted order statistics with a wide safety margin. Pass 2
counts the values below the bracket and collects those inside it, from which
the exact order statistics follow. The result equals ``np.percentile``
(linear interpolation) of all the values; memory is the sample plus the
bracket, a small fraction of the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .random import row_uniforms

#: Half-width of the bracket, in standard deviations of the sample quantile.
_MARGIN_SIGMAS = 6.0


@dataclass
class ValueSample:
    """The ``size`` values with the smallest per-row keys, and how many values were seen."""

    size: int
    n_values: int
    keys: np.ndarray
    values: np.ndarray

    def merge(self, other: ValueSample) -> ValueSample:
        keys = np.concatenate([self.keys, other.keys])
        keep = np.argsort(keys, kind="stable")[: self.size]
        return ValueSample(self.size, self.n_values + other.n_values, keys[keep],
                           np.concatenate([self.values, other.values])[keep])


def sample_values(values: np.ndarray, start: int, size: int, seed: int) -> ValueSample:
    """A block's values (rows ``start...``) as a :class:`ValueSample` of at most ``size``."""
    keys = row_uniforms(seed, start, len(values))[:, 0]
    keep = np.argsort(keys, kind="stable")[:size]
    return ValueSample(size, len(values), keys[keep], np.asarray(values, np.float64)[keep])


@dataclass
class Bracket:
    """Values in [low, high], and how many fell below ``low``."""

    below: int
    inside: np.ndarray

    def merge(self, other: Bracket) -> Bracket:
        return Bracket(self.below + other.below, np.concatenate([self.inside, other.inside]))


def bracket_values(values: np.ndarray, low: float, high: float) -> Bracket:
    values = np.asarray(values, np.float64)
    return Bracket(int((values < low).sum()), values[(values >= low) & (values <= high)])


def ranks(q: float, n: int) -> tuple[int, int, float]:
    """The two order statistics ``np.percentile`` interpolates between, and the weight."""
    position = q * (n - 1)
    low = math.floor(position)
    return low, min(low + 1, n - 1), position - low


def bracket_from_sample(sample: ValueSample, q: float) -> tuple[float, float]:
    """Bounds that contain the q-quantile of all values with overwhelming probability."""
    ordered = np.sort(sample.values)
    m = len(ordered)
    spread = _MARGIN_SIGMAS * math.sqrt(m * q * (1 - q)) + 2
    first, last = math.floor(q * (m - 1) - spread), math.ceil(q * (m - 1) + spread)
    low = ordered[first] if first >= 0 else -np.inf
    high = ordered[last] if last < m else np.inf
    return float(low), float(high)


def quantile_from_bracket(bracket: Bracket, q: float, n: int):
    """The exact q-quantile, or None when the bracket missed it (then widen and retry)."""
    first, second, weight = ranks(q, n)
    inside = np.sort(bracket.inside)
    a, b = first - bracket.below, second - bracket.below
    if a < 0 or b >= len(inside):
        return None
    return float(inside[a] + weight * (inside[b] - inside[a]))
