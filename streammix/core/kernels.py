"""Compiled per-tile loops (Numba) for the steps NumPy would do in several passes.

Each function is one loop over the rows of a tile that is already in cache:
the GEMMs stay in BLAS, and what follows them (arg-min, log-sum-exp, sums by
label, products of feature pairs) would otherwise be three to six NumPy passes
over (tile x K) arrays, each taking the GIL. The loops release the GIL
(``nogil``), so Dask's threads run them on every core at once.

They keep NumPy's semantics (no ``fastmath``): results do not depend on the
tile size or on which thread runs them. Numba caches the machine code next to
this file (``cache=True``): that is the compiler's own cache, not data.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Fingerprint of global row i: frac(i * golden ratio), a Weyl sequence: distinct rows
# get distinct, well-spread values, so moving any row changes the sums. Float
# sums are reproducible because the chunking and the reduction tree are fixed.
_GOLDEN = 0.6180339887498949

# error_model="numpy": a division by zero gives inf/nan as in NumPy, not an exception.
_jit = njit(nogil=True, cache=True, error_model="numpy")


@_jit
def nearest_rows(products, rows, reference, centers, scores, labels, dist):
    """Nearest centre of each row, and the exact squared distance to it.

    ``products = rows @ centers.T`` (centres already minus ``reference``), and
    ``scores[c] = ||c||^2 + 2 reference.c``, so ``scores - 2 products`` is the
    squared distance to each centre up to a per-row constant. The arg-min takes
    the lowest index on ties (as ``np.argmin``); ``dist`` gets
    ||(x - reference) - c||^2, computed directly so that it does not cancel.
    """
    n, d = rows.shape
    k = centers.shape[0]
    for i in range(n):
        best = 0
        best_value = scores[0] - 2.0 * products[i, 0]
        for c in range(1, k):
            value = scores[c] - 2.0 * products[i, c]
            if value < best_value:
                best_value = value
                best = c
        total = 0.0
        for j in range(d):
            diff = (rows[i, j] - reference[j]) - centers[best, j]
            total += diff * diff
        labels[i] = best
        dist[i] = total


@_jit
def add_by_label(rows, reference, labels, sums, counts):
    """``sums[l] += x - reference`` and ``counts[l] += 1`` for each row x with label l."""
    n, d = rows.shape
    for i in range(n):
        label = labels[i]
        counts[label] += 1.0
        for j in range(d):
            sums[label, j] += rows[i, j] - reference[j]


@_jit
def add_fingerprints(labels, start, membership):
    """``membership[l] += frac((start + i) * golden)`` for row i with label l."""
    for i in range(labels.shape[0]):
        value = (start + i) * _GOLDEN
        membership[labels[i]] += value - math.floor(value)


@_jit
def normalise_rows(weighted):
    """Turn log-weights into responsibilities in place; returns sum_i log sum_k exp.

    Per row: the maximum, one ``exp`` per entry, the sum and the division, in
    one pass. Rows whose maximum is not finite use 0 as the shift (as
    scikit-learn's log-sum-exp does), so all-``-inf`` rows give ``-inf``.
    """
    n, k = weighted.shape
    log_lik = 0.0
    for i in range(n):
        top = weighted[i, 0]
        for c in range(1, k):
            if weighted[i, c] > top:
                top = weighted[i, c]
        if not math.isfinite(top):
            top = 0.0
        total = 0.0
        for c in range(k):
            value = math.exp(weighted[i, c] - top)
            weighted[i, c] = value
            total += value
        for c in range(k):
            weighted[i, c] /= total
        log_lik += math.log(total) + top if total > 0 else -math.inf
    return log_lik


@_jit
def grouped_square_distance(projected, offsets, const, out):
    """``out[i, k] = const[k] - 0.5 * sum_j (projected[i, k d + j] - offsets[k d + j])^2``.

    The full-covariance E-step: ``projected`` is (x - g) @ [P_1 ... P_K].
    """
    n = projected.shape[0]
    k = const.shape[0]
    d = projected.shape[1] // k
    for i in range(n):
        for c in range(k):
            total = 0.0
            for j in range(c * d, c * d + d):
                diff = projected[i, j] - offsets[j]
                total += diff * diff
            out[i, c] = const[c] - 0.5 * total


@_jit
def pair_products(rows, first, second, out):
    """``out[:, p] = rows[:, first[p]] * rows[:, second[p]]``: the distinct feature products.

    ``out`` is column-major, so each column is written contiguously.
    """
    n = rows.shape[0]
    for p in range(first.shape[0]):
        a = first[p]
        b = second[p]
        for i in range(n):
            out[i, p] = rows[i, a] * rows[i, b]



@_jit
def largest(values, keep):
    """Positions of the ``keep`` largest values (earlier positions win ties), unordered.

    One pass that keeps the current candidates and the position of the
    weakest: O(n) with O(keep) work only when a candidate is replaced.
    """
    n = values.shape[0]
    keep = min(keep, n)
    chosen = np.empty(keep, dtype=np.int64)
    weakest = 0
    for i in range(n):
        if i < keep:
            chosen[i] = i
        elif values[i] > values[chosen[weakest]]:
            chosen[weakest] = i
        else:
            continue
        if i >= keep - 1:  # find the weakest: smallest value, latest position on ties
            weakest = 0
            for p in range(1, keep):
                a, b = values[chosen[p]], values[chosen[weakest]]
                if a < b or (a == b and chosen[p] > chosen[weakest]):
                    weakest = p
    return chosen
