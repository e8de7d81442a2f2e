"""A uniform random sample of rows, drawn in one pass without holding the data."""

from __future__ import annotations

import numpy as np

from .engine import Engine


def _pick_rows(wanted, block, start):
    lo, hi = np.searchsorted(wanted, [start, start + block.shape[0]])
    return np.array(block[wanted[lo:hi] - start], dtype=np.float64)


def _concat(a, b):
    return np.concatenate([a, b])


def sample_rows(engine: Engine, source, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n_samples, n_rows)`` rows drawn uniformly without replacement, in row order.

    Row counts come from the plan, so only the chunks' selected rows travel
    back. A uniform subset of this sample is itself a uniform sample of the
    data, which is what the seedings drawn from it rely on.
    """
    n_rows = source.n_rows
    if n_samples >= n_rows:
        wanted = np.arange(n_rows)
    else:
        wanted = np.sort(rng.choice(n_rows, size=n_samples, replace=False))
    return engine.map_reduce(_pick_rows, wanted, source, _concat)
