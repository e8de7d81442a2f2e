"""k-means maths in pure NumPy: distances, seeding, per-chunk Lloyd statistics.

Squared distances use ||x||^2 - 2 x.c + ||c||^2 as a GEMM on row tiles, after
subtracting a common reference point from rows and centres, so the expansion
does not cancel for data far from the origin. The distance a row contributes to
the inertia is then recomputed exactly as ||x - c||^2 for its chosen centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .random import row_uniforms

_TILE_ROWS = 4096


def _tiles(n_rows):
    for start in range(0, n_rows, _TILE_ROWS):
        yield slice(start, min(start + _TILE_ROWS, n_rows))


def nearest(X: np.ndarray, centers: np.ndarray, reference: np.ndarray | None = None):
    """Index of, and exact squared distance to, the nearest centre of each row.

    Ties go to the lowest index, as in scikit-learn. ``reference`` (default:
    the first centre) is subtracted from rows and centres before the GEMM.
    """
    reference = centers[0] if reference is None else reference
    shifted = (centers - reference).astype(X.dtype, copy=False)
    c_sq = np.einsum("kd,kd->k", shifted, shifted)
    labels = np.empty(X.shape[0], dtype=np.int64)
    dist = np.empty(X.shape[0], dtype=np.float64)
    for rows in _tiles(X.shape[0]):
        tile = X[rows] - reference.astype(X.dtype, copy=False)
        lab = (c_sq - 2.0 * (tile @ shifted.T)).argmin(axis=1)
        diff = tile - shifted[lab]
        labels[rows] = lab
        dist[rows] = np.einsum("nd,nd->n", diff, diff)
    return labels, dist


def min_sq_distances(X: np.ndarray, centers: np.ndarray, reference=None) -> np.ndarray:
    """Squared distance of each row to its nearest centre."""
    return nearest(X, centers, reference)[1]


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator, weights=None):
    """Greedy k-means++ (Arthur & Vassilvitskii), as scikit-learn runs it.

    Each new centre is the best of ``2 + log(k)`` candidates drawn with
    probability proportional to (weighted) squared distance. Returns the
    indices of the chosen rows.
    """
    n = X.shape[0]
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    trials = 2 + int(math.log(n_clusters))
    reference = np.average(X, axis=0, weights=weights)
    first = int(rng.choice(n, p=weights / weights.sum()))
    indices = [first]
    closest = min_sq_distances(X, X[[first]], reference)
    for _ in range(1, n_clusters):
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0:  # every row coincides with a centre: take unused rows
            unused = np.setdiff1d(np.arange(n), indices)
            indices.extend(unused[: n_clusters - len(indices)].tolist())
            break
        candidates = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1])
        candidates = np.minimum(candidates, n - 1)
        # Distance of every row to every candidate, each candidate on its own.
        cand_dist = np.stack([min_sq_distances(X, X[[c]], reference) for c in candidates])
        cand_dist = np.minimum(closest, cand_dist)
        best = int(np.argmin(cand_dist @ weights))
        indices.append(int(candidates[best]))
        closest = cand_dist[best]
    return np.asarray(indices[:n_clusters])


def lloyd(X: np.ndarray, centers: np.ndarray, *, weights=None, max_iter: int = 300,
          tol: float = 1e-4) -> np.ndarray:
    """Weighted Lloyd iterations in memory (for samples and candidate sets).

    ``tol`` is relative to the mean per-feature variance, as in scikit-learn.
    An empty cluster keeps its centre. Returns the final centres.
    """
    weights = np.ones(X.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = np.average(X, axis=0, weights=weights)
    abs_tol = tol * float(np.mean(np.average((X - mean) ** 2, axis=0, weights=weights)))
    centers = centers.astype(np.float64, copy=True)
    k = centers.shape[0]
    for _ in range(max_iter):
        labels, _ = nearest(X, centers, mean)
        counts = np.bincount(labels, weights=weights, minlength=k)
        sums = sum_by_label(labels, X, k, weights)
        new = np.where(counts[:, None] > 0, sums / np.where(counts > 0, counts, 1)[:, None],
                       centers)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= abs_tol:
            break
    return centers


@dataclass
class LloydStats:
    """One Lloyd pass over some rows, for a fixed set of centres ``c``.

    ``offsets`` is sum (x - c_k) over the rows nearest to centre k (centred on
    its own centre, for precision); ``far_*`` hold the rows farthest from their
    centres (at most n_clusters of them), the candidates scikit-learn moves into
    empty clusters. ``data_sum``/``data_sq`` are sum (x - r) and
    sum (x - r)^2 about the reference ``r`` = the first centre, for the
    data-dependent tolerance.
    """

    n_rows: int
    counts: np.ndarray
    offsets: np.ndarray
    inertia: float
    far_dist: np.ndarray
    far_rows: np.ndarray
    far_labels: np.ndarray
    far_index: np.ndarray
    data_sum: np.ndarray
    data_sq: np.ndarray
    membership: np.ndarray  # per cluster: wrapping sum of hash(global row), uint64

    def merge(self, other: LloydStats) -> LloydStats:
        far = _top_far(
            np.concatenate([self.far_dist, other.far_dist]),
            np.concatenate([self.far_index, other.far_index]),
            len(self.counts),
        )
        return LloydStats(
            self.n_rows + other.n_rows,
            self.counts + other.counts,
            self.offsets + other.offsets,
            self.inertia + other.inertia,
            np.concatenate([self.far_dist, other.far_dist])[far],
            np.concatenate([self.far_rows, other.far_rows])[far],
            np.concatenate([self.far_labels, other.far_labels])[far],
            np.concatenate([self.far_index, other.far_index])[far],
            self.data_sum + other.data_sum,
            self.data_sq + other.data_sq,
            self.membership + other.membership,
        )


def _row_hash(index: np.ndarray) -> np.ndarray:
    """SplitMix64 of global row numbers: a 64-bit hash per row (wrapping arithmetic)."""
    z = index.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _top_far(dist, index, keep):
    """Positions of the ``keep`` largest distances, largest first, earlier rows on ties."""
    order = np.lexsort((index, -dist))
    return order[:keep]


def sum_by_label(labels: np.ndarray, values: np.ndarray, n_labels: int, weights=None):
    """Row sums of ``values`` grouped by label, shape (n_labels, d), in float64."""
    if weights is not None:
        values = values * weights[:, None]
    return np.stack([np.bincount(labels, weights=values[:, j], minlength=n_labels)
                     for j in range(values.shape[1])], axis=1)


def lloyd_stats(centers: np.ndarray, X: np.ndarray, start: int) -> LloydStats:
    """Assign the rows of ``X`` (global rows ``start...``) to ``centers`` and sum them up."""
    k = centers.shape[0]
    labels, dist = nearest(X, centers)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    offsets = sum_by_label(labels, X - centers[labels].astype(X.dtype), k)
    far = _top_far(dist, np.arange(X.shape[0]), k)
    deviation = X - centers[0].astype(X.dtype)
    membership = np.zeros(k, dtype=np.uint64)
    np.add.at(membership, labels, _row_hash(np.arange(start, start + X.shape[0])))
    return LloydStats(
        X.shape[0], counts, offsets, float(dist.sum()),
        dist[far], np.asarray(X[far], dtype=np.float64), labels[far], far + start,
        deviation.sum(axis=0, dtype=np.float64),
        (deviation * deviation).sum(axis=0, dtype=np.float64),
        membership,
    )


def same_partition(a: LloydStats, b: LloydStats) -> bool:
    """Whether two passes assigned every row to the same cluster (up to a 2^-64 chance)."""
    return np.array_equal(a.counts, b.counts) and np.array_equal(a.membership, b.membership)


def mean_variance(stats: LloydStats) -> float:
    """Mean over features of the population variance of the rows seen."""
    mean_dev = stats.data_sum / stats.n_rows
    return float(np.mean(stats.data_sq / stats.n_rows - mean_dev * mean_dev))


def lloyd_update(centers: np.ndarray, stats: LloydStats):
    """New centres from one pass, relocating empty clusters as scikit-learn does.

    Each empty cluster takes one of the rows farthest from their centres
    (largest distance first), which leaves its old cluster. Centres move by
    their mean offset, never through raw sums, to keep precision far from the
    origin. Returns ``(new_centers, squared_shift_total, n_relocated)``.
    """
    counts = stats.counts.copy()
    offsets = stats.offsets.copy()
    new = centers.copy()
    moved = np.zeros(len(counts), dtype=bool)
    for new_id, row, old_id in zip(np.flatnonzero(counts == 0), stats.far_rows,
                                   stats.far_labels, strict=False):
        offsets[old_id] -= row - centers[old_id]
        counts[old_id] -= 1
        new[new_id] = row
        moved[new_id] = True
    update = (counts > 0) & ~moved
    new[update] = centers[update] + offsets[update] / counts[update, None]
    shift = float(((new - centers) ** 2).sum())
    return new, shift, int(moved.sum())


@dataclass
class Oversample:
    """One k-means|| round over some rows: the cost, and the rows it may select.

    Row x is selected with probability min(1, l * d2(x) / phi), where phi is the
    cost of *all* rows, known only after the pass. With a per-row uniform u,
    that is ``key = l * d2 / u > phi``. A block keeps the rows whose key beats
    its own partial cost (a superset, since phi is at least that), merges prune
    against the growing partial cost, and the caller applies the final phi.
    """

    phi: float
    keys: np.ndarray
    rows: np.ndarray
    index: np.ndarray

    def merge(self, other: Oversample) -> Oversample:
        phi = self.phi + other.phi
        keys = np.concatenate([self.keys, other.keys])
        keep = keys > phi
        return Oversample(
            phi, keys[keep], np.concatenate([self.rows, other.rows])[keep],
            np.concatenate([self.index, other.index])[keep],
        )

    def selected(self) -> np.ndarray:
        """The rows this round selects, in row order."""
        order = np.argsort(self.index[self.keys > self.phi], kind="stable")
        return self.rows[self.keys > self.phi][order]


def oversample(spec, X: np.ndarray, start: int) -> Oversample:
    """A k-means|| round over a block. ``spec`` is (centres so far, seed, l)."""
    centers, seed, oversampling = spec
    dist = min_sq_distances(X, centers)
    uniforms = row_uniforms(seed, start, X.shape[0])[:, 0]
    with np.errstate(divide="ignore"):
        keys = oversampling * dist / uniforms
    phi = float(dist.sum())
    keep = keys > phi
    return Oversample(phi, keys[keep], np.asarray(X[keep], dtype=np.float64),
                      np.flatnonzero(keep) + start)


def nearest_counts(centers: np.ndarray, X: np.ndarray, start: int) -> np.ndarray:
    """How many rows of ``X`` are nearest to each centre (float64)."""
    return np.bincount(nearest(X, centers)[0], minlength=centers.shape[0]).astype(np.float64)
