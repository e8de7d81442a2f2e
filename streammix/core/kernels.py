"""Compiled per-tile loops (Numba) for the steps NumPy would do in several passes.

Each function loops over the rows of cache-sized tiles: the GEMMs stay in
BLAS (called through ``np.dot`` from inside the loops), and what surrounds them
(arg-min, log-sum-exp, sums by label, products of feature pairs) would
otherwise be three to six NumPy passes over (tile x K) arrays, each taking the
GIL. The loops release the GIL (``nogil``) and take many tiles per call, so
Dask's threads run them on every core at once.

Floating point: the only relaxation is that a sum *within one row* (over
features or components) may be reassociated and use fused multiply-adds
(``fastmath={"reassoc", "contract"}``), which lets it vectorise instead of
waiting on one long chain of dependent additions. Results stay deterministic
and do not depend on the tile size or on which thread runs them; infinities
and NaNs keep their IEEE meaning. Numba caches the machine code next to this
file (``cache=True``): that is the compiler's own cache, not data.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

# Fingerprint of global row i: frac(i * golden ratio), a Weyl sequence: distinct rows
# get distinct, well-spread values, so moving any row changes the sums. Float
# sums are reproducible because the chunking and the reduction tree are fixed.
GOLDEN = 0.6180339887498949

# error_model="numpy": a division by zero gives inf/nan as in NumPy, not an exception.
_jit = njit(nogil=True, cache=True, error_model="numpy",
            fastmath={"reassoc", "contract"})


@_jit
def assign(X, reference, centers, scores, shift, tile_rows, start, labels, dist, sums, counts,
           membership, weights):
    """Nearest centre of each row of ``X`` and the squared distance to it.

    ``centers`` are the centres minus ``reference``; ``scores[c]`` is
    ||c||^2 + 2 reference.c, so that ``scores - 2 x.c`` is the squared distance
    minus ||x - reference||^2. With ``shift`` each tile is first copied minus
    ``reference`` (for float32, whose digits would be lost far from the origin;
    ``scores`` is then just ||c||^2). Per tile of ``tile_rows``: one GEMM (BLAS,
    through ``np.dot``), then one loop over the rows for the arg-min (lowest
    index on ties, as ``np.argmin``) and ||x - reference||^2, which completes
    the distance (clamped at 0). When ``sums`` has rows, the same loop adds
    x - reference to ``sums[l]``, 1 to ``counts[l]`` and the fingerprint of
    global row ``start + i`` to ``membership[l]`` for the chosen label l; with
    ``weights`` (one per row of ``X``; empty for unweighted rows) the row adds
    w (x - reference) and w instead.
    """
    n, d = X.shape
    k = centers.shape[0]
    centers_t = np.ascontiguousarray(centers.T)
    products = np.empty((tile_rows, k), dtype=X.dtype)
    shifted = np.empty((tile_rows if shift else 0, d), dtype=X.dtype)
    accumulate = sums.shape[0] > 0
    weighted = weights.shape[0] > 0
    for first in range(0, n, tile_rows):
        m = min(tile_rows, n - first)
        if shift:
            for i in range(m):
                for j in range(d):
                    shifted[i, j] = X[first + i, j] - reference[j]
            tile = shifted[:m]
            offset = np.zeros(d, dtype=X.dtype)
        else:
            tile = X[first : first + m]
            offset = reference
        np.dot(tile, centers_t, products[:m])
        for i in range(m):
            best = 0
            best_value = scores[0] - 2.0 * products[i, 0]
            for c in range(1, k):
                value = scores[c] - 2.0 * products[i, c]
                if value < best_value:
                    best_value = value
                    best = c
            norm = 0.0
            if accumulate:
                w = weights[first + i] if weighted else 1.0
                for j in range(d):
                    value = tile[i, j] - offset[j]
                    sums[best, j] += w * value
                    norm += value * value
                counts[best] += w
                weyl = (start + first + i) * GOLDEN
                membership[best] += weyl - math.floor(weyl)
            else:
                for j in range(d):
                    value = tile[i, j] - offset[j]
                    norm += value * value
            labels[first + i] = best
            dist[first + i] = max(best_value + norm, 0.0)


@_jit
def assign_sparse(data, indices, indptr, centers_t, scores, reference, start, labels, dist,
                  sums, counts, membership, weights):
    """:func:`assign` for CSR rows (``data``, ``indices``, ``indptr``), in one pass.

    ``centers_t`` is the centres transposed (features x K), so a stored value
    meets its K centre coordinates in one contiguous row; ``scores[c]`` is
    ||c||^2. Per row: x.c for every centre from its stored values, the
    arg-min of ||c||^2 - 2 x.c (lowest index on ties), the squared distance
    (clamped at 0); when ``sums`` has rows, w (x - reference) is added to
    ``sums[l]`` (the stored values first, the reference once per centre at
    the end), w to ``counts[l]`` and the row's fingerprint to
    ``membership[l]``. ``weights`` is empty for unweighted rows.
    """
    n = indptr.shape[0] - 1
    k = centers_t.shape[1]
    accumulate = sums.shape[0] > 0
    weighted = weights.shape[0] > 0
    products = np.empty(k)
    added = np.zeros(k)
    for i in range(n):
        products[:] = 0.0
        norm = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            value = data[p]
            norm += value * value
            column = indices[p]
            for c in range(k):
                products[c] += value * centers_t[column, c]
        best = 0
        best_value = scores[0] - 2.0 * products[0]
        for c in range(1, k):
            value = scores[c] - 2.0 * products[c]
            if value < best_value:
                best_value = value
                best = c
        labels[i] = best
        dist[i] = max(best_value + norm, 0.0)
        if accumulate:
            w = weights[i] if weighted else 1.0
            for p in range(indptr[i], indptr[i + 1]):
                sums[best, indices[p]] += w * data[p]
            added[best] += w
            weyl = (start + i) * GOLDEN
            membership[best] += weyl - math.floor(weyl)
    if accumulate:
        for c in range(k):
            counts[c] += added[c]
            for j in range(reference.shape[0]):
                sums[c, j] -= added[c] * reference[j]


@_jit
def add_by_label(rows, reference, labels, sums, counts):
    """``sums[l] += x - reference`` and ``counts[l] += 1`` for each row x with label l."""
    n, d = rows.shape
    for i in range(n):
        label = labels[i]
        counts[label] += 1.0
        for j in range(d):
            sums[label, j] += rows[i, j] - reference[j]


#: Unweighted rows, for the compiled loops that take per-row weights.
NO_WEIGHTS = np.empty(0)


def normalise_rows(weighted, row_weights=NO_WEIGHTS):
    """Turn log-weights into responsibilities in place; returns sum_i log sum_k exp.

    Log-sum-exp per row with the row maximum as the shift; rows whose maximum
    is not finite use 0 (as scikit-learn), so all-``-inf`` rows give ``-inf``.
    The ``exp`` is NumPy's (vectorised); the passes around it are compiled.
    With ``row_weights``, row i's responsibilities are scaled by w_i and its
    log-likelihood counts w_i times (a row of weight 0 counts nothing).
    """
    floor, cut = exp_floor(weighted.dtype)
    constants = typed_constants(weighted.dtype)
    top = np.empty(weighted.shape[0], dtype=weighted.dtype)
    _subtract_row_max(weighted, top, floor, constants)
    np.exp(weighted, out=weighted)
    return _divide_row_sums(weighted, top, cut, constants, row_weights)


@functools.cache
def exp_floor(dtype):
    """``(floor, cut)`` in ``dtype``: terms more than |floor| below their row's
    maximum are clamped to the floor before the exp and zeroed after it (at or
    below ``cut``). Next to the row's largest term (1) they are far below
    rounding, and NumPy's vectorised exp is several times slower on -inf, as
    every later product would be on subnormal numbers."""
    floor = np.dtype(dtype).type(0.5 * np.log(np.finfo(dtype).tiny))
    return floor, np.exp(floor)


# The loops below take their constants from arrays of the data's dtype (a
# Python float literal would be float64 and turn float32 loops into float64).
@functools.cache
def typed_constants(dtype):
    return np.array([0.0, 0.5, 1.0], dtype=dtype)  # zero, half, one


@_jit
def _subtract_row_max(weighted, top, floor, constants):
    zero = constants[0]
    n, k = weighted.shape
    for i in range(n):
        best = weighted[i, 0]
        for c in range(1, k):
            best = max(best, weighted[i, c])
        if not math.isfinite(best):
            best = zero
        top[i] = best
        for c in range(k):
            weighted[i, c] = max(weighted[i, c] - best, floor)


@_jit
def _divide_row_sums(resp, top, cut, constants, row_weights):
    zero, one = constants[0], constants[2]
    n, k = resp.shape
    weighted = row_weights.shape[0] > 0
    log_lik = 0.0  # float64 whatever the dtype: a sum over all rows
    for i in range(n):
        total = zero
        for c in range(k):
            if resp[i, c] <= cut:
                resp[i, c] = zero
            total += resp[i, c]
        if weighted:
            w = row_weights[i]
            inverse = w / total if w > 0 else 0.0  # a row of weight 0 adds nothing
            for c in range(k):
                resp[i, c] *= inverse
            if w > 0:
                log_lik += w * (math.log(total) + top[i]) if total > 0 else -math.inf
        else:
            inverse = one / total
            for c in range(k):
                resp[i, c] *= inverse
            log_lik += math.log(total) + top[i] if total > 0 else -math.inf
    return log_lik


@_jit
def log_weights_from_expansion(dist, c0, const, constants):
    """In place: ``const - 0.5 * max(dist + c0, 0)`` (the clamp undoes cancellation)."""
    zero, half = constants[0], constants[1]
    n, k = dist.shape
    for i in range(n):
        for c in range(k):
            dist[i, c] = const[c] - half * max(dist[i, c] + c0[c], zero)


@_jit
def features(X, reference, pairs, out):
    """The E-step's GEMM input, feature-major: ``out`` is (width, n) with rows
    [second-moment features, c, 1], c = x - reference.

    The second-moment features are c_a c_b for each pair (a <= b) of ``pairs``
    (full covariance: a quadratic form is linear in them) or, when ``pairs``
    is empty, c_j^2 (diag and spherical). Multiplied by the responsibilities
    they also give both M-step moments and N_k in one GEMM. Written one
    feature at a time, so each inner loop runs over contiguous rows.
    """
    n, d = X.shape
    width = out.shape[0] - d - 1
    centred = out[width : width + d]
    for i in range(n):
        for j in range(d):
            centred[j, i] = X[i, j] - reference[j]
        out[width + d, i] = 1.0
    for p in range(width):
        a, b = (pairs[p, 0], pairs[p, 1]) if pairs.shape[0] else (p, p)
        for i in range(n):
            out[p, i] = centred[a, i] * centred[b, i]


@_jit
def expansion_log_weights(X, reference, pairs, AB, c0, const, floor, constants, tiles, out,
                          top):
    """``out = const - 0.5 max(features @ AB + c0, 0)``: log(w_k) + log N(x | k) per row.

    ``tiles`` is (n_tiles, width, tile_rows) with n_tiles x tile_rows = len(X):
    tile by tile it receives the features (see :func:`features`), kept for
    :func:`responsibilities_and_moments`; then one GEMM, and the clamp at 0,
    which undoes what cancellation in the expansion can do to a row very
    close to a mean. When ``top`` has a slot per row, each row is also shifted
    by its maximum (stored in ``top``) and clamped at ``floor``, ready for the
    exp of :func:`normalise_rows`.
    """
    n_tiles, _, tile_rows = tiles.shape
    for s in range(n_tiles):
        first = s * tile_rows
        features(X[first : first + tile_rows], reference, pairs, tiles[s])
        rows = out[first : first + tile_rows]
        np.dot(tiles[s].T, AB, rows)
        log_weights_from_expansion(rows, c0, const, constants)
        if top.shape[0]:
            _subtract_row_max(rows, top[first : first + tile_rows], floor, constants)


@_jit
def responsibilities_and_moments(resp, top, cut, constants, tiles, moments, row_weights):
    """Finish the responsibilities (see :func:`normalise_rows`, also for
    ``row_weights``) and add, tile by tile, ``features @ resp`` to ``moments``
    (float64); returns the log-likelihood.

    ``tiles`` holds the features that :func:`expansion_log_weights` built.
    """
    n_tiles, width, tile_rows = tiles.shape
    log_lik = 0.0
    for s in range(n_tiles):
        first = s * tile_rows
        rows = resp[first : first + tile_rows]
        log_lik += _divide_row_sums(rows, top[first : first + tile_rows], cut, constants,
                                    row_weights[first : first + tile_rows])
        products = np.dot(tiles[s], rows)
        for p in range(width):
            for c in range(moments.shape[1]):
                moments[p, c] += products[p, c]
    return log_lik


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
