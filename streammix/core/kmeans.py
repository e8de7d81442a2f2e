"""k-means maths in pure NumPy: nearest centres, k-means++ seeding, Lloyd steps."""

from __future__ import annotations

import math

import numpy as np

_TILE_ROWS = 8192


def nearest(X: np.ndarray, centers: np.ndarray):
    """Index of and squared distance to the nearest centre of each row.

    Uses ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 as a GEMM on row tiles;
    callers centre ``X`` and ``centers`` on a common reference point first so
    that the expansion does not cancel for data far from the origin.
    """
    labels = np.empty(X.shape[0], dtype=np.int64)
    dist = np.empty(X.shape[0], dtype=np.float64)
    c_sq = np.einsum("kd,kd->k", centers, centers)
    for s in range(0, X.shape[0], _TILE_ROWS):
        tile = X[s : s + _TILE_ROWS]
        d2 = c_sq - 2.0 * (tile @ centers.T)
        lab = d2.argmin(axis=1)
        labels[s : s + _TILE_ROWS] = lab
        x_sq = np.einsum("nd,nd->n", tile, tile)
        dist[s : s + _TILE_ROWS] = np.maximum(d2[np.arange(tile.shape[0]), lab] + x_sq, 0.0)
    return labels, dist


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator, weights=None):
    """Greedy k-means++ (Arthur & Vassilvitskii), as scikit-learn runs it.

    Each new centre is the best of ``2 + log(k)`` candidates drawn with
    probability proportional to (weighted) squared distance. Returns the
    indices of the chosen rows.
    """
    n = X.shape[0]
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    trials = 2 + int(math.log(n_clusters))
    first = rng.choice(n, p=weights / weights.sum())
    indices = [first]
    closest = nearest(X, X[[first]])[1]
    potential = float(weights @ closest)
    for _ in range(1, n_clusters):
        if potential <= 0:  # every row is already a centre: take unused rows
            unused = np.setdiff1d(np.arange(n), indices)
            indices.extend(unused[: n_clusters - len(indices)].tolist())
            break
        cumulative = np.cumsum(weights * closest)
        candidates = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1])
        candidates = np.minimum(candidates, n - 1)
        cand_dist = np.stack([nearest(X, X[[c]])[1] for c in candidates])
        cand_dist = np.minimum(closest, cand_dist)
        cand_pot = cand_dist @ weights
        best = int(np.argmin(cand_pot))
        indices.append(int(candidates[best]))
        closest, potential = cand_dist[best], float(cand_pot[best])
    return np.asarray(indices[:n_clusters])


def lloyd(X: np.ndarray, centers: np.ndarray, *, max_iter: int = 300, tol: float = 1e-4):
    """Lloyd iterations in memory until the centres move less than ``tol``.

    ``tol`` is relative to the mean per-feature variance, as in scikit-learn.
    An empty cluster keeps its centre. Returns the final centres.
    """
    abs_tol = tol * float(np.mean(np.var(X, axis=0)))
    centers = centers.astype(np.float64, copy=True)
    k = centers.shape[0]
    for _ in range(max_iter):
        labels, _ = nearest(X, centers)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, X)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= abs_tol:
            break
    return centers
