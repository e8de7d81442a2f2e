"""k-means maths: distances, seeding, per-chunk Lloyd statistics.

Squared distances use ||x - r||^2 - 2 (x - r).c + ||c||^2 with a GEMM on row
tiles, the rows and centres taken relative to a common reference point r (a
centre), so the expansion does not cancel for data far from the origin. The
assignment loop is compiled (``kernels.assign``); the rest is NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse

from .._serial import serializable
from . import kernels
from .random import row_uniforms
from .sparse import column_sums, dense_rows, is_sparse, row_sq_norms

_TILE_ROWS = 2048
_NO_WEIGHTS = np.empty(0)  # unweighted rows, for the compiled loops
_GROUP_TILES = 8


def _tiles(n_rows):
    for start in range(0, n_rows, _TILE_ROWS):
        yield slice(start, min(start + _TILE_ROWS, n_rows))


def assign(X, centers, reference, sums=None, counts=None, membership=None, start=0,
           weights=None):
    """Labels and squared distances of the rows of ``X``; adds to the per-centre sums.

    The GEMM runs against the centres minus ``reference``. In float64 it runs
    on the rows as they are, with the reference folded into the per-centre
    scores: the error of x.c is then eps |x| |c|, far below the gaps between
    distances, and the rows are read once. In lower precision each tile is
    first copied minus the reference, so data far from the origin keeps its
    digits. When given, ``sums`` get x - reference, ``counts`` 1 and
    ``membership`` the fingerprint of global row ``start + i``, per label;
    with ``weights``, w (x - reference) and w. Sparse rows take
    :func:`_assign_sparse`.
    """
    if is_sparse(X):
        return _assign_sparse(X, centers, reference, sums, counts, membership, start, weights)
    reference = np.asarray(reference, dtype=np.float64)
    shifted = np.ascontiguousarray(centers - reference, dtype=X.dtype)
    shift = X.dtype != np.float64
    scores = np.einsum("kd,kd->k", shifted, shifted)
    if not shift:
        scores = scores + 2.0 * (shifted @ reference)
    labels = np.empty(X.shape[0], dtype=np.int64)
    dist = np.empty(X.shape[0], dtype=np.float64)
    if sums is None:
        sums, counts, membership = np.zeros((0, X.shape[1])), np.zeros(0), np.zeros(0)
    # Column-major rows (decoded Parquet, pandas) are copied row-major a group of
    # tiles at a time, in cache, instead of all at once: same tiles, same sums.
    group = X.shape[0] if X.flags.c_contiguous else _GROUP_TILES * _TILE_ROWS
    reference, scores = reference.astype(X.dtype), scores.astype(X.dtype)
    weights = _NO_WEIGHTS if weights is None else np.asarray(weights, dtype=np.float64)
    for first in range(0, X.shape[0], group):
        rows = slice(first, first + group)
        kernels.assign(np.ascontiguousarray(X[rows]), reference, shifted, scores, shift,
                       _TILE_ROWS, start + first, labels[rows], dist[rows], sums, counts,
                       membership, weights[rows])
    return labels, dist


def _assign_sparse(X, centers, reference, sums, counts, membership, start, weights):
    """:func:`assign` for scipy.sparse rows: ||x||^2 - 2 x.c + ||c||^2, one compiled pass.

    Rows are not shifted (that would densify them), as in scikit-learn's
    sparse k-means; sparse data (counts, TF-IDF) sits near the origin, where
    the expansion keeps its digits. The work is one multiply-add per stored
    value and centre (``kernels.assign_sparse``); nothing of the rows'
    width is allocated but the (K x features) sums.
    """
    X = scipy.sparse.csr_matrix(X)
    if not X.has_canonical_format:  # duplicate entries would miscount ||x||^2
        X = X.copy()
        X.sum_duplicates()
    centers = np.asarray(centers, dtype=np.float64)
    scores = np.einsum("kd,kd->k", centers, centers)
    labels = np.empty(X.shape[0], dtype=np.int64)
    dist = np.empty(X.shape[0], dtype=np.float64)
    if sums is None:
        sums, counts, membership = np.zeros((0, X.shape[1])), np.zeros(0), np.zeros(0)
    weights = _NO_WEIGHTS if weights is None else np.asarray(weights, dtype=np.float64)
    kernels.assign_sparse(X.data.astype(np.float64, copy=False), X.indices, X.indptr,
                          np.ascontiguousarray(centers.T), scores,
                          np.asarray(reference, dtype=np.float64), start, labels, dist, sums,
                          counts, membership, weights)
    return labels, dist


def nearest(X: np.ndarray, centers: np.ndarray, reference: np.ndarray | None = None):
    """Index of, and squared distance to, the nearest centre of each row.

    Ties go to the lowest index, as in scikit-learn. ``reference`` (default:
    the first centre) is subtracted from rows and centres before the GEMM.
    """
    labels, dist = assign(X, centers, centers[0] if reference is None else reference)
    far = ~np.isfinite(dist)
    if far.any():  # the expansion overflowed: rows far beyond every centre
        far_dist = far_distances(dense_rows(X, far), centers)
        with np.errstate(over="ignore"):
            labels[far], dist[far] = far_dist.argmin(axis=1), far_dist.min(axis=1) ** 2
    return labels, dist


def far_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distances (n, k) of finite rows, without overflow in the arithmetic.

    For the few rows whose expansion ||x||^2 - 2 x.c + ||c||^2 overflowed
    (|x| beyond ~1e154): each row and the centres are scaled by the row's
    largest magnitude first, so the result is exact up to rounding, or
    ``inf`` when it is beyond the float range, never NaN.
    """
    X = np.asarray(X, dtype=np.float64)
    scale = np.maximum(np.abs(X).max(axis=1), np.abs(centers).max())[:, None]
    scale[scale == 0] = 1.0
    diff = X[:, None, :] / scale[:, :, None] - centers[None, :, :] / scale[:, :, None]
    with np.errstate(over="ignore"):
        return np.sqrt(np.einsum("nkd,nkd->nk", diff, diff)) * scale


def distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row to every centre, shape (n, k), tile by tile.

    The same centred expansion as :func:`nearest`, so memory is a tile, never
    an (n, k, d) array of differences (sparse rows: uncentred, as in :func:`assign`).
    """
    if is_sparse(X):
        return np.sqrt(_assign_sparse_all(X, centers))
    reference = centers[0].astype(X.dtype)
    shifted = (centers - centers[0]).astype(X.dtype)
    c_sq = np.einsum("kd,kd->k", shifted, shifted)
    out = np.empty((X.shape[0], centers.shape[0]), dtype=np.float64)
    for rows in _tiles(X.shape[0]):
        tile = X[rows] - reference
        with np.errstate(over="ignore", invalid="ignore"):  # far rows: mended below
            d2 = c_sq - 2.0 * (tile @ shifted.T) + np.einsum("nd,nd->n", tile, tile)[:, None]
        out[rows] = np.sqrt(np.maximum(d2, 0.0))
    far = ~np.isfinite(out).all(axis=1)
    if far.any():
        out[far] = far_distances(dense_rows(X, far), centers)
    return out


def _assign_sparse_all(X, centers) -> np.ndarray:
    """Squared distances (n, k) of sparse rows to every centre, clamped at 0."""
    centers = np.asarray(centers, dtype=np.float64)
    products = np.asarray(X @ centers.T, dtype=np.float64)
    d2 = row_sq_norms(X)[:, None] - 2.0 * products + np.einsum("kd,kd->k", centers, centers)
    return np.maximum(d2, 0.0)


def min_sq_distances(X: np.ndarray, centers: np.ndarray, reference=None) -> np.ndarray:
    """Squared distance of each row to its nearest centre."""
    return nearest(X, centers, reference)[1]


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator, weights=None):
    """Greedy k-means++ (Arthur & Vassilvitskii), as scikit-learn runs it.

    Each new centre is the best of ``2 + log(k)`` candidates drawn with
    probability proportional to (weighted) squared distance; the distances of
    all rows to all candidates of a step come from one GEMM. Returns the
    indices of the chosen rows.
    """
    n = X.shape[0]
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    trials = 2 + int(math.log(n_clusters))
    # Centred, the expansion stays precise; sparse rows stay sparse (and uncentred).
    centred = X if is_sparse(X) else X - np.average(X, axis=0, weights=weights)
    sq_norms = row_sq_norms(centred)

    def sq_distances(rows):  # (len(rows), n)
        products = centred[rows] @ centred.T
        products = products.toarray() if is_sparse(products) else products
        d2 = sq_norms[rows][:, None] - 2.0 * products + sq_norms[None, :]
        return np.maximum(d2, 0.0)

    first = int(rng.choice(n, p=weights / weights.sum()))
    indices = [first]
    closest = sq_distances([first])[0]
    for _ in range(1, n_clusters):
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0:  # every row coincides with a centre: take unused rows
            unused = np.setdiff1d(np.arange(n), indices)
            indices.extend(unused[: n_clusters - len(indices)].tolist())
            break
        candidates = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1])
        candidates = np.minimum(candidates, n - 1)
        cand_dist = np.minimum(closest, sq_distances(candidates))
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


@serializable
class LloydParams(NamedTuple):
    """What a Lloyd pass needs: the centres, and whether to measure the data's moments."""

    centers: np.ndarray
    moments: bool = False


@serializable
@dataclass
class LloydStats:
    """One Lloyd pass over some rows, for fixed centres ``c``.

    ``offsets[k]`` is sum w (x - c_k) over the rows nearest to centre k, and
    ``counts[k]`` sum w (w = 1 for unweighted rows); ``inertia`` is the weighted
    sum of squared distances. ``far_*`` describe the rows farthest from their
    centres (at most n_clusters: global index, distance, label, weight), the
    candidates scikit-learn moves into empty clusters; the rows themselves
    are read only when a cluster is empty (see :func:`rows_to_relocate`), so
    a pass never carries n_clusters rows per chunk. ``membership[k]``
    sums a per-row fingerprint of the global row number, so two passes that
    put every row in the same cluster give equal values (scikit-learn's
    "strict convergence"). ``data_sum``/``data_sq`` are sum (x - r) and
    sum (x - r)^2 about r = the first centre, only when asked for (the
    tolerance is relative to the data's variance).
    """

    n_rows: int
    counts: np.ndarray
    offsets: np.ndarray
    inertia: float
    far_dist: np.ndarray
    far_labels: np.ndarray
    far_index: np.ndarray
    far_weights: np.ndarray
    membership: np.ndarray
    data_sum: np.ndarray
    data_sq: np.ndarray

    def merge(self, other: LloydStats) -> LloydStats:
        dist = np.concatenate([self.far_dist, other.far_dist])
        index = np.concatenate([self.far_index, other.far_index])
        far = _top_far(dist, index, len(self.counts))
        return LloydStats(
            self.n_rows + other.n_rows,
            self.counts + other.counts,
            self.offsets + other.offsets,
            self.inertia + other.inertia,
            dist[far],
            np.concatenate([self.far_labels, other.far_labels])[far],
            index[far],
            np.concatenate([self.far_weights, other.far_weights])[far],
            self.membership + other.membership,
            self.data_sum + other.data_sum,
            self.data_sq + other.data_sq,
        )


def _top_far(dist, index, keep):
    """Positions of the ``keep`` largest distances, largest first, earlier rows on ties.

    ``index`` (the global rows) must increase with the position, as it does in
    a chunk and in a merge of chunks in plan order.
    """
    far = kernels.largest(dist, keep)
    return far[np.lexsort((index[far], -dist[far]))]


def sum_by_label(labels: np.ndarray, values: np.ndarray, n_labels: int, weights=None):
    """Row sums of ``values`` grouped by label, shape (n_labels, d), in float64."""
    if weights is not None:
        values = values * weights[:, None]
    sums = np.zeros((n_labels, values.shape[1]))
    kernels.add_by_label(np.ascontiguousarray(values), np.zeros(values.shape[1]), labels, sums,
                         np.zeros(n_labels))
    return sums


def lloyd_stats(params: LloydParams, X: np.ndarray, start: int, weights=None) -> LloydStats:
    """Assign the rows of ``X`` (global rows ``start...``) to the nearest centre; sum up.

    Per tile, one GEMM against the centres and one compiled loop that picks
    the nearest centre and adds the row (times its weight, when ``weights``
    are given) and its fingerprint to its sums, on rows shifted by the first
    centre. The data's moments (for the tolerance) are unweighted, as
    scikit-learn's.
    """
    k, d = params.centers.shape
    sums, counts, membership = np.zeros((k, d)), np.zeros(k), np.zeros(k)
    reference = params.centers[0]
    labels, dist = assign(X, params.centers, reference, sums, counts, membership, start,
                          weights)
    data_sq, data_sum = np.zeros(d), np.zeros(d)
    if params.moments and is_sparse(X):  # sum (x - r), sum (x - r)^2 without densifying
        n, first = X.shape[0], column_sums(X)
        data_sum = first - n * reference
        data_sq = column_sums(X, squared=True) - 2.0 * reference * first + n * reference ** 2
    elif params.moments:
        for rows in _tiles(X.shape[0]):
            centred = X[rows] - reference.astype(X.dtype)
            data_sum += centred.sum(axis=0, dtype=np.float64)
            data_sq += np.einsum("nd,nd->d", centred, centred, dtype=np.float64)
    far = _top_far(dist, np.arange(X.shape[0]), k)
    offsets = sums - counts[:, None] * (params.centers - params.centers[0])
    weights = np.ones(X.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    return LloydStats(
        X.shape[0], counts, offsets, float(weights @ dist),
        dist[far], labels[far], far + start, weights[far],
        membership, data_sum, data_sq,
    )


def same_partition(a: LloydStats, b: LloydStats) -> bool:
    """Whether two passes assigned every row to the same cluster (up to a 2^-64 chance)."""
    return np.array_equal(a.counts, b.counts) and np.array_equal(a.membership, b.membership)


def mean_variance(stats: LloydStats) -> float:
    """Mean over features of the population variance of the rows seen."""
    mean_dev = stats.data_sum / stats.n_rows
    return float(np.mean(stats.data_sq / stats.n_rows - mean_dev * mean_dev))


def mean_variance_of(X) -> float:
    """Mean over features of the population variance of the rows of ``X`` (dense or sparse)."""
    n = X.shape[0]
    mean = column_sums(X) / n
    return float(np.mean(np.maximum(column_sums(X, squared=True) / n - mean * mean, 0.0)))


def rows_to_relocate(stats: LloydStats) -> np.ndarray:
    """Global indices of the far rows :func:`lloyd_update` moves into empty clusters.

    None when no cluster is empty, or when every row sits on its centre (more
    clusters than distinct rows: moving one is pointless, as scikit-learn
    decides).
    """
    if len(stats.far_dist) == 0 or stats.far_dist.max() <= 0:
        return stats.far_index[:0]
    return stats.far_index[: int((stats.counts == 0).sum())]


def lloyd_update(centers: np.ndarray, stats: LloydStats, far_rows=None):
    """New centres from one pass, relocating empty clusters as scikit-learn does.

    Each empty cluster takes one of the rows farthest from their centres
    (largest distance first), which leaves its old cluster: ``far_rows`` are
    the rows at :func:`rows_to_relocate`. An empty cluster left over goes
    where the biggest cluster goes. Centres move by their mean offset, never
    through raw sums, to keep precision far from the origin. Returns
    ``(new_centers, squared_shift_total, n_relocated)``.
    """
    counts = stats.counts.copy()
    offsets = stats.offsets.copy()
    new = centers.copy()
    moved = np.zeros(len(counts), dtype=bool)
    far_rows = np.zeros((0, centers.shape[1])) if far_rows is None else far_rows
    for new_id, row, old_id, weight in zip(np.flatnonzero(counts == 0), far_rows,
                                           stats.far_labels, stats.far_weights, strict=False):
        offsets[old_id] -= weight * (row - centers[old_id])
        counts[old_id] -= weight
        new[new_id] = row
        moved[new_id] = True
    update = (counts > 0) & ~moved
    new[update] = centers[update] + offsets[update] / counts[update, None]
    empty = (counts <= 0) & ~moved
    new[empty] = new[int(np.argmax(counts))]  # scikit-learn's place for an empty cluster
    shift = float(((new - centers) ** 2).sum())
    return new, shift, int(moved.sum())


@serializable
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


def oversample(spec, X: np.ndarray, start: int, weights=None) -> Oversample:
    """A k-means|| round over a block. ``spec`` is (centres so far, seed, l).

    Weighted rows count w d^2(x): in cost and in their chance to be selected.
    """
    centers, seed, oversampling = spec
    dist = min_sq_distances(X, centers)
    if weights is not None:
        dist = dist * weights
    uniforms = row_uniforms(seed, start, X.shape[0])[:, 0]
    with np.errstate(divide="ignore"):
        keys = oversampling * dist / uniforms
    phi = float(dist.sum())
    keep = keys > phi
    return Oversample(phi, keys[keep], dense_rows(X, np.flatnonzero(keep)),
                      np.flatnonzero(keep) + start)


def nearest_counts(centers: np.ndarray, X: np.ndarray, start: int, weights=None) -> np.ndarray:
    """How many rows of ``X`` (or how much weight) are nearest to each centre (float64)."""
    return np.bincount(nearest(X, centers)[0], weights=weights,
                       minlength=centers.shape[0]).astype(np.float64)


def explain(centers: np.ndarray, X: np.ndarray):
    """Nearest centre, (no probability), distance, and each feature's share of the squared
    distance (scaled first, so rows far beyond every centre give finite shares)."""
    component, dist = nearest(X, centers)
    residual = np.asarray(X, dtype=np.float64) - centers[component]
    residual /= np.maximum(np.abs(residual).max(axis=1, keepdims=True), np.finfo(float).tiny)
    squared = residual * residual
    total = squared.sum(axis=1, keepdims=True)
    shares = np.divide(squared, total, out=np.zeros_like(squared), where=total > 0)
    return component, np.full(X.shape[0], np.nan), np.sqrt(dist), shares


def silhouette_score(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987), as scikit-learn defines it.

    For each row, a = mean distance to the other rows of its cluster, b = the
    smallest mean distance to another cluster, s = (b - a) / max(a, b); rows
    alone in their cluster count as 0. Quadratic in the rows: pass a sample.
    """
    X = np.asarray(X, dtype=np.float64)
    sq = np.einsum("nd,nd->n", X, X)
    dist = np.sqrt(np.maximum(sq[:, None] - 2.0 * (X @ X.T) + sq[None, :], 0.0))
    np.fill_diagonal(dist, 0.0)
    clusters, labels = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        raise ValueError("the silhouette needs at least two clusters")
    counts = np.bincount(labels)
    sums = np.stack([dist[:, labels == c].sum(axis=1) for c in range(len(clusters))], axis=1)
    own = counts[labels]
    a = sums[np.arange(len(X)), labels] / np.maximum(own - 1, 1)
    means = sums / counts[None, :]
    means[np.arange(len(X)), labels] = np.inf
    b = means.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())
