"""Mini-batch k-means maths (Sculley 2010) in pure NumPy.

With the per-centre learning rate 1/count, each centre is the running mean of
the rows ever assigned to it: c <- c + sum(x - c) / (N + n). Consecutive
batches therefore compose into one update from summed per-centre statistics,
which is what lets a step merge the statistics of batches processed in
parallel (one worker alone reproduces the sequential algorithm exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._serial import serializable
from .kmeans import assign
from .random import uniforms_at
from .sparse import dense_rows


@serializable
@dataclass
class StepStats:
    """Rows of one step: per-centre counts and offsets from the step's centres.

    ``offsets[j]`` is sum (x - c_j) over the rows assigned to centre j, where
    c_j is the centre the step started from. ``inertia`` sums each row's squared
    distance at the time it was assigned. ``sample_*`` keep a uniform sample of
    the rows (those with the smallest per-row keys), the candidates for
    re-seeding starving centres.
    """

    n_rows: int
    counts: np.ndarray
    offsets: np.ndarray
    inertia: float
    sample_keys: np.ndarray
    sample_rows: np.ndarray

    def merge(self, other: StepStats) -> StepStats:
        keys = np.concatenate([self.sample_keys, other.sample_keys])
        keep = np.argsort(keys, kind="stable")[: len(self.counts)]
        return StepStats(
            self.n_rows + other.n_rows,
            self.counts + other.counts,
            self.offsets + other.offsets,
            self.inertia + other.inertia,
            keys[keep],
            np.concatenate([self.sample_rows, other.sample_rows])[keep],
        )


def run_batches(spec, X: np.ndarray, start, weights=None) -> StepStats:
    """Sequential mini-batches over the rows of ``X`` (in a seeded random order).

    ``spec`` is ``(centers, counts, batch_size, seed)``. Each batch is assigned
    to the centres as updated by the batches before it (running means; with
    ``weights``, weighted running means: counts add up weights). ``start`` is
    the first global row of ``X``, or the global rows of ``X`` when they were
    gathered from several chunks; the random order is tied to the rows.
    """
    centers, counts, batch_size, seed = spec
    k = centers.shape[0]
    local, local_counts = centers.copy(), counts.astype(np.float64).copy()
    keys = uniforms_at(seed, start, X.shape[0])
    if X.shape[0] <= batch_size:  # one batch: its row order does not matter, only the sample's
        nearest_keys = np.argpartition(keys, k - 1)[:k] if len(keys) > k else np.arange(len(keys))
        order = nearest_keys[np.argsort(keys[nearest_keys], kind="stable")]
        batches = [np.arange(X.shape[0])]
    else:
        order = np.argsort(keys, kind="stable")
        batches = (np.sort(order[b : b + batch_size]) for b in range(0, len(order), batch_size))
    total_counts = np.zeros(k)
    inertia = 0.0
    for rows in batches:
        batch = X if len(rows) == X.shape[0] else X[rows]
        w = None if weights is None else weights[rows]
        sums, n = np.zeros_like(local), np.zeros(k)
        _, dist = assign(batch, local, local[0], sums, n, np.zeros(k), weights=w)
        moved = n > 0
        offsets = sums - n[:, None] * (local - local[0])  # sum w (x - c_j) per centre
        local[moved] += offsets[moved] / (local_counts[moved] + n[moved])[:, None]
        local_counts += n
        total_counts += n
        inertia += float(dist.sum() if w is None else w @ dist)
    sample = order[:k]
    # Running means: (N + n) c_local = N c + sum x, so sum (x - c) = (N + n)(c_local - c).
    offsets = (counts + total_counts)[:, None] * (local - centers)
    return StepStats(X.shape[0], total_counts, offsets, inertia, keys[sample],
                     dense_rows(X, sample))


def apply_step(centers: np.ndarray, counts: np.ndarray, stats: StepStats):
    """Centres and counts after a step's merged statistics; also the squared centre change."""
    new_counts = counts + stats.counts
    moved = stats.counts > 0
    new = centers.copy()
    new[moved] += stats.offsets[moved] / new_counts[moved, None]
    return new, new_counts, float(((new - centers) ** 2).sum())


def reassign_starving(centers, counts, stats: StepStats, ratio: float, rng):
    """Move centres with too few rows onto random rows of the step (scikit-learn's rule).

    A centre starves when its count is below ``ratio`` times the largest
    count; its count is reset to the smallest count of the others so that it
    is not moved again at once. Returns ``(centers, counts, n_moved)``.
    """
    starving = counts < ratio * counts.max()
    if starving.sum() > 0.5 * stats.n_rows:
        starving[np.argsort(counts)[int(0.5 * stats.n_rows):]] = False
    n_moved = int(starving.sum())
    if n_moved == 0 or n_moved == len(counts) or len(stats.sample_rows) < n_moved:
        return centers, counts, 0
    centers, counts = centers.copy(), counts.copy()
    picks = rng.choice(len(stats.sample_rows), size=n_moved, replace=False)
    centers[starving] = stats.sample_rows[picks]
    counts[starving] = counts[~starving].min()
    return centers, counts, n_moved
