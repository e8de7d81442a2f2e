"""Gaussian mixture maths: per-chunk sufficient statistics and the M-step.

NumPy and the compiled per-tile loops of ``kernels``: no IO, no Dask. The
formulas follow scikit-learn's ``sklearn.mixture._gaussian_mixture`` so that,
from the same start, the fitted numbers agree; where scikit-learn uses raw
second moments (tied, diag, spherical), these use moments centred on a
reference point near the data (the weighted mean of the current means), which
keeps precision for data far from the origin.

Statistics of one pass are centred on that fixed reference (the *shift*), so
merging two chunks' statistics is plain addition: associative, with zeros as
the identity, and independent of the chunking. Initialisation statistics
(``resp_stats``) may use any per-component shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy import linalg

from .._serial import serializable
from ..exceptions import CollapsedComponentError
from . import kernels

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# A tile's work arrays (its features and its (rows x K) responsibilities) stay
# near this many elements, so they live in the core's L2 cache.
_TILE_ELEMENTS = 1 << 16

# The E-step features of the tiles handled between two calls from Python take
# about this many bytes (they stay in L3 from one GEMM to the next).
_BATCH_BYTES = 2 << 20

_LOG_2PI = math.log(2 * math.pi)


@serializable
@dataclass(frozen=True)
class GaussianParams:
    """Parameters of one Gaussian mixture.

    ``precisions_cholesky`` has scikit-learn's shapes: (K, d, d) for full,
    (d, d) for tied, (K, d) for diag and (K,) for spherical.
    """

    weights: np.ndarray
    means: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str
    covariances: np.ndarray | None = None
    #: The E-step's log weight of each component, when it is not log(weights):
    #: a variational mixture's expected log weights plus its per-component terms.
    log_weights: np.ndarray | None = None
    log_det: np.ndarray = field(init=False, repr=False)
    #: Where the E-step centres the rows: the weighted mean of the means.
    reference: np.ndarray = field(init=False, repr=False)
    _kernels: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(
            self,
            "log_det",
            log_det_cholesky(self.precisions_cholesky, self.covariance_type, self.means.shape[1]),
        )
        weights = np.asarray(self.weights, dtype=np.float64)
        share = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights),
                                                                            1 / len(weights))
        object.__setattr__(self, "reference", share @ np.asarray(self.means, dtype=np.float64))
        object.__setattr__(self, "_kernels", {})

    def weight_terms(self) -> np.ndarray:
        """Each component's additive term of the log density: log(weights), unless
        ``log_weights`` are given."""
        if self.log_weights is not None:
            return np.asarray(self.log_weights, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.log(self.weights)

    def shift(self) -> np.ndarray:
        """The per-component shift of this pass's statistics (all the reference)."""
        return np.broadcast_to(self.reference, self.means.shape)

    def kernel(self, dtype) -> dict:
        """Matrices of the E-step in ``dtype``, computed once per parameters and dtype."""
        key = np.dtype(dtype).str
        if key not in self._kernels:
            self._kernels[key] = _make_kernel(self, np.dtype(dtype))
        return self._kernels[key]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __getstate__(self):  # the kernels are rebuilt where they are used
        state = dict(self.__dict__)
        state["_kernels"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


@serializable
@dataclass
class GaussianStats:
    """Sufficient statistics of a mixture over some rows, centred on ``shift``.

    ``resp_sum`` is N_k = sum_i r_ik, ``first`` is sum_i r_ik (x_i - c_k),
    ``second`` is sum_i r_ik (x_i - c_k)(x_i - c_k)^T for full (K, d, d), summed
    over components for tied (d, d), or its diagonal for diag and spherical
    (K, d). ``log_lik`` is the sum of log p(x_i) under the parameters of the
    pass, and ``n_rows`` counts the rows. Weighted rows count w_i times in
    every sum; ``n_rows`` is then their total weight.
    """

    n_rows: int
    log_lik: float
    resp_sum: np.ndarray
    first: np.ndarray
    second: np.ndarray

    def merge(self, other: GaussianStats) -> GaussianStats:
        return GaussianStats(
            self.n_rows + other.n_rows,
            self.log_lik + other.log_lik,
            self.resp_sum + other.resp_sum,
            self.first + other.first,
            self.second + other.second,
        )

    @classmethod
    def zero(cls, n_components: int, n_features: int, covariance_type: str) -> GaussianStats:
        return cls(
            0,
            0.0,
            np.zeros(n_components),
            np.zeros((n_components, n_features)),
            np.zeros(_second_shape(n_components, n_features, covariance_type)),
        )


def _second_shape(n_components, n_features, covariance_type):
    """Shape of the statistics' second moments: per component (full), summed over the
    components (tied), or their diagonals (diag, spherical)."""
    return {"full": (n_components, n_features, n_features), "tied": (n_features, n_features),
            "diag": (n_components, n_features), "spherical": (n_components, n_features)
            }[covariance_type]


def covariance_shape(n_components, n_features, covariance_type):
    """Shape of the covariances, precisions and their Cholesky factors (scikit-learn's)."""
    return {"full": (n_components, n_features, n_features), "tied": (n_features, n_features),
            "diag": (n_components, n_features), "spherical": (n_components,)}[covariance_type]


def check_covariances(matrices, covariance_type, name):
    """Raise a ValueError naming ``name`` unless covariances (or precisions) are valid:
    symmetric positive definite matrices (full, tied), or positive variances."""
    if covariance_type in ("diag", "spherical"):
        if not (matrices > 0).all():
            raise ValueError(f"attribute {name!r} must be positive")
        return
    stack = matrices if covariance_type == "full" else matrices[None]
    for k, matrix in enumerate(stack):
        scale = np.abs(matrix).max()
        if not np.allclose(matrix, matrix.T, rtol=0, atol=1e-10 * scale):
            raise ValueError(f"attribute {name!r}[{k}] is not symmetric")
        try:
            linalg.cholesky(matrix, lower=True)
        except linalg.LinAlgError:
            raise ValueError(f"attribute {name!r}[{k}] is not positive definite") from None


def check_precisions_cholesky(factors, covariance_type):
    """Raise a ValueError unless ``factors`` are upper-triangular with a positive diagonal
    (full, tied) or positive (diag, spherical): the factors of positive definite precisions."""
    if covariance_type in ("diag", "spherical"):
        diagonal, lower = factors, np.zeros(1)
    else:
        stack = factors if covariance_type == "full" else factors[None]
        diagonal = np.diagonal(stack, axis1=1, axis2=2)
        lower = np.tril(stack, k=-1)
    if not (diagonal > 0).all() or lower.any():
        raise ValueError("attribute 'precisions_cholesky_' must be upper-triangular with a "
                         "positive diagonal (the factor of positive definite precisions)")


_LOG_DET = {
    "full": lambda factors, d: np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1),
    "tied": lambda factor, d: np.log(np.diagonal(factor)).sum(),
    "diag": lambda factors, d: np.log(factors).sum(axis=1),
    "spherical": lambda factors, d: d * np.log(factors),
}


def log_det_cholesky(precisions_cholesky, covariance_type, n_features):
    """Log-determinant of each component's precision Cholesky factor, shape (K,)."""
    return _LOG_DET[covariance_type](precisions_cholesky, n_features)


def _tile_rows(n_components, n_features, covariance_type="full"):
    """Rows per tile: the work arrays of a tile stay near ``_TILE_ELEMENTS`` elements."""
    width = {"full": n_features * (n_features + 3) // 2, "tied": 2 * n_features}.get(
        covariance_type, 2 * n_features)
    return max(64, _TILE_ELEMENTS // (width + n_components))


def _centred(X, means):
    """x_i - mu_k for every component: shape (K, n, d)."""
    return X[None, :, :] - means[:, None, :]


def _log_normalise(weighted):
    """Row-wise log-sum-exp and the log responsibilities."""
    top = weighted.max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    with np.errstate(divide="ignore"):
        log_norm = np.log(np.exp(weighted - top).sum(axis=1, keepdims=True)) + top
    return log_norm[:, 0], weighted - log_norm


def _full_second_moments(diff, resp):
    return np.matmul((diff * resp.T[:, :, None]).transpose(0, 2, 1), diff)


def _tied_second_moments(diff, resp):
    k, n, d = diff.shape
    weighted = (diff * resp.T[:, :, None]).reshape(k * n, d)
    return weighted.T @ diff.reshape(k * n, d)


def _diagonal_second_moments(diff, resp):
    return np.einsum("nk,knd->kd", resp, diff * diff)


#: Second moments of the differences (K, n, d) weighted by the responsibilities (n, K).
_SECOND_MOMENTS = {"full": _full_second_moments, "tied": _tied_second_moments,
                   "diag": _diagonal_second_moments, "spherical": _diagonal_second_moments}


@np.errstate(over="ignore", invalid="ignore")  # overflow: non-finite stats, located by the engine
def _moments(diff, resp, covariance_type):
    """First and second moments of ``diff`` weighted by ``resp``, in float64."""
    first = np.einsum("nk,knd->kd", resp, diff)
    second = _SECOND_MOMENTS[covariance_type](diff, resp)
    return first.astype(np.float64), second.astype(np.float64)


def _tiles(n_rows, tile):
    for start in range(0, n_rows, tile):
        yield slice(start, min(start + tile, n_rows))


# The E-step's matrices of each covariance type (see _make_kernel), from the precision
# factors and the means about the reference.
def _full_kernel(factors, m):
    precisions = np.matmul(factors, factors.transpose(0, 2, 1))
    first, second = np.triu_indices(m.shape[1])
    pair_weights = np.where(first == second, 1.0, 2.0)
    return {"AB": np.vstack([(precisions[:, first, second] * pair_weights).T,
                             -2.0 * np.einsum("kde,ke->dk", precisions, m),
                             np.zeros((1, len(m)))]),
            "c0": np.einsum("kd,kde,ke->k", m, precisions, m)}


def _tied_kernel(factor, m):
    projected = m @ factor
    return {"W": factor, "M": projected.T, "M_sq": np.einsum("kd,kd->k", projected, projected)}


def _diagonal_kernel(precisions, m):
    return {"AB": np.vstack([precisions.T, -2.0 * (m * precisions).T, np.zeros((1, len(m)))]),
            "c0": np.einsum("kd,kd->k", m * m, precisions)}


_KERNELS = {
    "full": _full_kernel,
    "tied": _tied_kernel,
    "diag": lambda factors, m: _diagonal_kernel(factors * factors, m),
    # a diag with every precision of a component equal
    "spherical": lambda factors, m: _diagonal_kernel(
        np.repeat((factors * factors)[:, None], m.shape[1], 1), m),
}


def _make_kernel(params: GaussianParams, dtype) -> dict:
    """Matrices that turn the E-step into a few GEMMs on rows centred on the reference.

    With m_k = mu_k - g, rows c = x - g and Lambda_k the precision, the squared
    Mahalanobis distance (c - m_k)' Lambda_k (c - m_k) is linear in the E-step
    features (``kernels.features``): full, [c_a c_b (a <= b), c, 1] @ ``AB``
    with the pair weights Lambda_ab (doubled off the diagonal) over -2 Lambda m
    over 0, plus ``c0`` = m' Lambda m; diag and spherical (a diag with equal
    precisions), [c^2, c, 1] the same way. Tied uses the expansion of
    ||c P - m_k P||^2 (P the shared precision factor). Centring on g keeps the
    expansions precise for data far from the origin.
    """
    d = params.means.shape[1]
    m = params.means - params.reference
    kernel = {"g": params.reference,
              "const": -0.5 * d * _LOG_2PI + params.log_det + params.weight_terms(),
              **_KERNELS[params.covariance_type](params.precisions_cholesky, m)}
    return {name: np.asarray(value, dtype=dtype) for name, value in kernel.items()}


def _tied_log_weights(centred, kernel):
    """log(w_k) + log N(x | mu_k, Sigma) for tied covariance, from c = x - g: (t, K)."""
    y = centred @ kernel["W"]
    dist = y @ kernel["M"]
    dist *= -2.0
    dist += np.einsum("nd,nd->n", y, y)[:, None]
    kernels.log_weights_from_expansion(dist, kernel["M_sq"], kernel["const"],
                                       kernels.typed_constants(dist.dtype))
    return dist


def _pairs(n_features, covariance_type):
    """(a, b) for a <= b: the distinct feature products of full covariance; else none."""
    if covariance_type != "full":
        return np.zeros((0, 2), dtype=np.int64)
    return np.stack(np.triu_indices(n_features), axis=1).astype(np.int64)


def _n_features_of(pairs, n_features):
    """Rows of the E-step features: second-moment features, c, and a row of ones."""
    return (len(pairs) or n_features) + n_features + 1


def _feature_batches(X, n_components, n_features, kind, width):
    """``(rows, tiles)`` over ``X``: a batch of whole tiles and a buffer for their features.

    Batches are the unit between two calls from Python (the compiled loops run
    without the GIL, the Python between them does not); their features, about
    ``_BATCH_BYTES``, stay in cache from the E-step's GEMM to the M-step's.
    The rows left after the last whole tile form one smaller tile.
    """
    tile = _tile_rows(n_components, n_features, kind)
    per_batch = max(1, _BATCH_BYTES // (width * tile * X.dtype.itemsize))
    whole = X.shape[0] // tile * tile
    for start in range(0, whole, per_batch * tile):
        stop = min(start + per_batch * tile, whole)
        tiles = np.empty(((stop - start) // tile, width, tile), dtype=X.dtype)
        yield np.ascontiguousarray(X[start:stop]), tiles
    if whole < X.shape[0]:
        rest = X.shape[0] - whole
        yield np.ascontiguousarray(X[whole:]), np.empty((1, width, rest), dtype=X.dtype)


def estep_stats(params: GaussianParams, X: np.ndarray, weights=None) -> GaussianStats:
    """E-step over a block of rows: statistics for the M-step, and the log-likelihood.

    With ``weights``, row i counts w_i times: in N_k, the moments, the
    log-likelihood and ``n_rows`` (then the total weight).

    The arithmetic runs in ``X``'s dtype as GEMMs on row tiles; each tile's
    results are added up in float64. Statistics are centred on
    ``params.reference`` (see :meth:`GaussianParams.shift`). Except for tied
    covariance, a batch of tiles is two compiled calls around NumPy's
    vectorised exp: the features and log-weights (one GEMM per tile), then
    the responsibilities and moments (one more GEMM per tile, on the same
    features).
    """
    kind = params.covariance_type
    K, d = params.means.shape
    kernel = params.kernel(X.dtype)
    total = GaussianStats.zero(K, d, kind)
    row_weights = kernels.NO_WEIGHTS if weights is None else np.asarray(weights, np.float64)
    if kind == "tied":
        for rows in _tiles(X.shape[0], _tile_rows(K, d, kind)):
            centred = X[rows] - kernel["g"]
            with np.errstate(over="ignore", invalid="ignore"):  # located by the engine
                resp = _tied_log_weights(centred, kernel)
            w = row_weights[rows]
            total.log_lik += kernels.normalise_rows(resp, w)
            total.n_rows += rows.stop - rows.start if weights is None else w.sum()
            total.resp_sum += resp.sum(axis=0, dtype=np.float64)
            total.first += resp.T @ centred
            total.second += centred.T @ (centred if weights is None else
                                         centred * w[:, None].astype(X.dtype))
        return total
    pairs = _pairs(d, kind)
    width = _n_features_of(pairs, d)
    moments = np.zeros((width, K))  # [second moments, first moments, N_k] by component
    floor, cut = kernels.exp_floor(X.dtype)
    constants = kernels.typed_constants(X.dtype)
    offset = 0
    for block, tiles in _feature_batches(X, K, d, kind, width):
        n = len(block)
        resp, top = np.empty((n, K), dtype=X.dtype), np.empty(n, dtype=X.dtype)
        kernels.expansion_log_weights(block, kernel["g"], pairs, kernel["AB"], kernel["c0"],
                                      kernel["const"], floor, constants, tiles, resp, top)
        np.exp(resp, out=resp)
        w = row_weights[offset : offset + n]
        total.log_lik += kernels.responsibilities_and_moments(resp, top, cut, constants, tiles,
                                                              moments, w)
        total.n_rows += n if weights is None else w.sum()
        offset += n
    second = moments[: width - d - 1].T
    total.first = moments[width - d - 1 : -1].T
    total.resp_sum = moments[-1].copy()
    if kind == "full":
        total.second[:, pairs[:, 0], pairs[:, 1]] = second
        total.second[:, pairs[:, 1], pairs[:, 0]] = second
    else:
        total.second = np.ascontiguousarray(second)
    return total


def resp_stats(resp: np.ndarray, X: np.ndarray, shift: np.ndarray, covariance_type: str,
               weights=None):
    """Statistics of ``X`` under given responsibilities (for initialisation).

    With ``weights``, each row's responsibilities count w_i times.
    """
    n_components, n_features = shift.shape
    total = GaussianStats.zero(n_components, n_features, covariance_type)
    shift = shift.astype(X.dtype)
    for rows in _tiles(X.shape[0], _tile_rows(n_components, n_features)):
        r = resp[rows].astype(X.dtype, copy=False)
        if weights is not None:
            r = r * np.asarray(weights[rows], dtype=X.dtype)[:, None]
        first, second = _moments(_centred(X[rows], shift), r, covariance_type)
        total.n_rows += rows.stop - rows.start if weights is None else weights[rows].sum()
        total.resp_sum += r.sum(axis=0, dtype=np.float64)
        total.first += first
        total.second += second
    return total


def weighted_log_prob(params: GaussianParams, X: np.ndarray) -> np.ndarray:
    """log(w_k) + log N(x | mu_k, Sigma_k) for every row and component, shape (n, K)."""
    kernel = params.kernel(X.dtype)
    kind = params.covariance_type
    K, d = params.means.shape
    out = np.empty((X.shape[0], K), dtype=X.dtype)
    if kind == "tied":
        for rows in _tiles(X.shape[0], _tile_rows(K, d, kind)):
            out[rows] = _tied_log_weights(X[rows] - kernel["g"], kernel)
        return out
    pairs = _pairs(d, kind)
    start = 0
    for block, tiles in _feature_batches(X, K, d, kind, _n_features_of(pairs, d)):
        kernels.expansion_log_weights(
            block, kernel["g"], pairs, kernel["AB"], kernel["c0"], kernel["const"],
            X.dtype.type(0), kernels.typed_constants(X.dtype), tiles,
            out[start : start + len(block)], np.empty(0, dtype=X.dtype))
        start += len(block)
    return out


#: The differences of rows from component k times its precision factor: y with ||y||^2
#: their squared Mahalanobis distances.
_WHITENED = {
    "full": lambda diff, factors, k: diff @ factors[k],
    "tied": lambda diff, factor, k: diff @ factor,
    "diag": lambda diff, factors, k: diff * factors[k],
    "spherical": lambda diff, factors, k: diff * factors[k],
}


def _far_log_distances(params: GaussianParams, X: np.ndarray) -> np.ndarray:
    """log of the squared Mahalanobis distance of rows to each component, (n, K).

    For rows far beyond the model, where the fast expansion overflows: each
    row's differences are scaled by their largest magnitude before the
    precision factor is applied, so nothing overflows and the logarithm is
    finite (or -inf at distance 0).
    """
    whitened = _WHITENED[params.covariance_type]
    X = np.asarray(X, dtype=np.float64)
    out = np.empty((X.shape[0], params.n_components))
    for k, mean in enumerate(params.means):
        scale = np.maximum(np.abs(X).max(axis=1), np.abs(mean).max())[:, None]
        scale[scale == 0] = 1.0
        y = whitened(X / scale - mean / scale, params.precisions_cholesky, k)
        with np.errstate(divide="ignore"):
            out[:, k] = np.log(np.einsum("nd,nd->n", y, y)) + 2 * np.log(scale[:, 0])
    return out


def _far_log_weights(params: GaussianParams, X: np.ndarray) -> np.ndarray:
    """log(w_k) + log N(x | mu_k, Sigma_k) without overflow: finite, or -inf, never NaN."""
    d = params.means.shape[1]
    with np.errstate(divide="ignore", over="ignore"):
        constant = -0.5 * d * _LOG_2PI + params.log_det + params.weight_terms()
        return constant - 0.5 * np.exp(_far_log_distances(params, X))


def weighted_log_prob_checked(params: GaussianParams, X: np.ndarray) -> np.ndarray:
    """:func:`weighted_log_prob`, with rows whose expansion overflowed (NaN or +inf, for
    finite rows far beyond the model) computed again by the exact, scaled formula."""
    with np.errstate(over="ignore", invalid="ignore"):  # far rows: mended below
        out = weighted_log_prob(params, X)
    far = np.isnan(out).any(axis=1) | (out == np.inf).any(axis=1)
    if far.any():
        out[far] = _far_log_weights(params, X[far])
    return out


def log_prob_resp(params: GaussianParams, X: np.ndarray):
    """Per-row log density and log responsibilities: ``(log p(x), log r)``.

    Never NaN for finite rows: a row so far from every component that its
    density underflows scores ``-inf`` and belongs wholly to the component it
    is nearest to in Mahalanobis distance (the limit of the responsibilities).
    """
    with np.errstate(invalid="ignore"):  # rows of density 0: mended below
        log_density, log_resp = _log_normalise(weighted_log_prob_checked(params, X))
    lost = log_density == -np.inf
    if lost.any():
        nearest = _far_log_distances(params, X[lost]).argmin(axis=1)
        log_resp[lost] = np.where(np.arange(params.n_components) == nearest[:, None], 0.0,
                                  -np.inf)
    return log_density, log_resp


def predict_components(params: GaussianParams, X: np.ndarray) -> np.ndarray:
    """The most likely component of each row (the nearest one for rows beyond the model)."""
    weighted = weighted_log_prob_checked(params, X)
    labels = weighted.argmax(axis=1)
    lost = weighted.max(axis=1) == -np.inf
    if lost.any():
        labels[lost] = _far_log_distances(params, X[lost]).argmin(axis=1)
    return labels


# The M-step's covariances of each type from the moments about the shift, with delta the
# new means relative to the shift and nk = N_k + 10 eps.
def _full_covariances(stats, delta, nk, reg_covar):
    outer_sd = stats.first[:, :, None] * delta[:, None, :]
    covariances = (
        stats.second
        - outer_sd
        - outer_sd.transpose(0, 2, 1)
        + stats.resp_sum[:, None, None] * delta[:, :, None] * delta[:, None, :]
    ) / nk[:, None, None]
    idx = np.arange(delta.shape[1])
    covariances[:, idx, idx] += reg_covar
    return covariances


def _tied_covariances(stats, delta, nk, reg_covar):
    outer_sd = stats.first.T @ delta
    covariances = (
        stats.second - outer_sd - outer_sd.T + (stats.resp_sum[:, None] * delta).T @ delta
    ) / nk.sum()
    covariances.flat[:: delta.shape[1] + 1] += reg_covar
    return covariances


def _diag_covariances(stats, delta, nk, reg_covar):
    return (
        stats.second - 2 * delta * stats.first + stats.resp_sum[:, None] * delta * delta
    ) / nk[:, None] + reg_covar


def _spherical_covariances(stats, delta, nk, reg_covar):
    return _diag_covariances(stats, delta, nk, reg_covar).mean(axis=1)


_COVARIANCES = {"full": _full_covariances, "tied": _tied_covariances,
                "diag": _diag_covariances, "spherical": _spherical_covariances}


def estimate_parameters(
    stats: GaussianStats,
    shift: np.ndarray,
    reg_covar: float,
    covariance_type: str,
    *,
    normalise_weights: bool = True,
):
    """The M-step: weights, means and covariances from merged statistics.

    Mirrors scikit-learn's ``_estimate_gaussian_parameters`` (including the
    ``10 * eps`` added to each N_k) but from centred moments. With
    ``normalise_weights=False`` the weights are N_k / n as in scikit-learn's
    initialisation.
    """
    resp_sum = stats.resp_sum
    nk = resp_sum + 10 * np.finfo(np.float64).eps
    # scikit-learn's mean is sum(r x) / nk; with x = c + (x - c) that is:
    means = (resp_sum[:, None] * shift + stats.first) / nk[:, None]
    delta = means - shift  # new mean relative to the shift
    covariances = _COVARIANCES[covariance_type](stats, delta, nk, reg_covar)
    weights = nk / (nk.sum() if normalise_weights else stats.n_rows)
    return weights, means, covariances


#: Per feature, the second moments about the reference (per unit of N_k) and the
#: variances of the M-step: (second moments, covariances, nk) -> (raw, var).
_RAW_AND_VARIANCES = {
    "full": lambda second, cov, nk: (np.diagonal(second, axis1=1, axis2=2) / nk[:, None],
                                     np.diagonal(cov, axis1=1, axis2=2)),
    "tied": lambda second, cov, nk: (np.diagonal(second) / nk.sum(), np.diagonal(cov)),
    "diag": lambda second, cov, nk: (second / nk[:, None], cov),
    "spherical": lambda second, cov, nk: (second / nk[:, None], cov[:, None]),
}


def digits_cancelled(stats: GaussianStats, covariances: np.ndarray, covariance_type: str):
    """How many decimal digits the M-step cancelled: log10 of the largest ratio of a
    second moment about the pass's reference to the variance left after removing
    the mean. Arithmetic with p digits leaves about p minus this many correct.
    """
    nk = stats.resp_sum + 10 * np.finfo(np.float64).eps
    raw, var = _RAW_AND_VARIANCES[covariance_type](stats.second, covariances, nk)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.nanmax(np.where(var > 0, raw / var, np.nan), initial=1.0)
    return float(np.log10(max(ratio, 1.0)))


# scikit-learn's words, so that code matching its message matches ours.
_COLLAPSE_HINT = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
    "the number of components, increase reg_covar, or scale the input data."
)


def _tied(per_matrix):
    """Tied covariance's version of a function of full covariance's (K, d, d) stack:
    its one matrix as a stack of one."""
    return lambda matrix: per_matrix(matrix[None])[0]


def _matrices_precision_cholesky(covariances, which="component {k}"):
    out = np.empty_like(covariances)
    eye = np.eye(covariances.shape[1])
    for k, cov in enumerate(covariances):
        try:
            chol = linalg.cholesky(cov, lower=True)
        except linalg.LinAlgError:
            message = f"{_COLLAPSE_HINT} ({which.format(k=k)} is not positive definite)"
            raise CollapsedComponentError(message) from None
        out[k] = linalg.solve_triangular(chol, eye, lower=True).T
    return out


def _variances_precision_cholesky(variances):
    bad = np.flatnonzero(np.atleast_2d(variances.T).T.min(axis=-1) <= 0)
    if bad.size:
        raise CollapsedComponentError(
            f"{_COLLAPSE_HINT} (component {bad[0]} has a variance <= 0)")
    return 1.0 / np.sqrt(variances)


_PRECISION_CHOLESKY = {
    "full": _matrices_precision_cholesky,
    "tied": _tied(partial(_matrices_precision_cholesky, which="the tied covariance")),
    "diag": _variances_precision_cholesky,
    "spherical": _variances_precision_cholesky,
}


def precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Upper-triangular U with U U^T = inverse covariance, as scikit-learn stores it.

    Raises
    ------
    CollapsedComponentError
        When a component's covariance is not positive definite.
    """
    return _PRECISION_CHOLESKY[covariance_type](covariances)


def _matrices_cholesky_of_precisions(precisions):
    return np.stack([np.flip(linalg.cholesky(np.flip(p), lower=True)) for p in precisions])


_CHOLESKY_OF_PRECISIONS = {"full": _matrices_cholesky_of_precisions,
                           "tied": _tied(_matrices_cholesky_of_precisions),
                           "diag": np.sqrt, "spherical": np.sqrt}


def precision_cholesky_from_precisions(precisions: np.ndarray, covariance_type: str):
    """Upper Cholesky factor of given precision matrices (scikit-learn's convention)."""
    return _CHOLESKY_OF_PRECISIONS[covariance_type](precisions)


_PRECISIONS_OF_CHOLESKY = {
    "full": lambda factors: np.matmul(factors, factors.transpose(0, 2, 1)),
    "tied": lambda factor: factor @ factor.T,
    "diag": lambda factors: factors**2,
    "spherical": lambda factors: factors**2,
}


def precisions_from_cholesky(precisions_cholesky: np.ndarray, covariance_type: str):
    """Precision matrices from their Cholesky factors."""
    return _PRECISIONS_OF_CHOLESKY[covariance_type](precisions_cholesky)


def _matrices_covariances_of_cholesky(factors):
    eye = np.eye(factors.shape[1])
    inv = [linalg.solve_triangular(u, eye, lower=False) for u in factors]
    return np.stack([a.T @ a for a in inv])  # (U U^T)^-1 = U^-T U^-1


_COVARIANCES_OF_CHOLESKY = {"full": _matrices_covariances_of_cholesky,
                            "tied": _tied(_matrices_covariances_of_cholesky),
                            "diag": lambda factors: 1.0 / factors**2,
                            "spherical": lambda factors: 1.0 / factors**2}


def covariances_from_cholesky(precisions_cholesky: np.ndarray, covariance_type: str):
    """Covariances from precision Cholesky factors (used after ``precisions_init``)."""
    return _COVARIANCES_OF_CHOLESKY[covariance_type](precisions_cholesky)


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters, as scikit-learn counts them for BIC/AIC."""
    cov = {
        "full": n_components * n_features * (n_features + 1) / 2.0,
        "diag": n_components * n_features,
        "tied": n_features * (n_features + 1) / 2.0,
        "spherical": n_components,
    }[covariance_type]
    return int(cov + n_features * n_components + n_components - 1)


#: Standard normal draws z given component k's covariance.
_CORRELATED = {
    "full": lambda z, covariances, k: z @ linalg.cholesky(covariances[k], lower=True).T,
    "tied": lambda z, covariance, k: z @ linalg.cholesky(covariance, lower=True).T,
    "diag": lambda z, covariances, k: z * np.sqrt(covariances[k]),
    "spherical": lambda z, covariances, k: z * np.sqrt(covariances[k]),
}


def sample(params: GaussianParams, covariances: np.ndarray, n_samples: int, rng):
    """Draw ``n_samples`` rows; returns ``(X, y)`` sorted by component like scikit-learn."""
    counts = rng.multinomial(n_samples, params.weights / params.weights.sum())
    kind = params.covariance_type
    n_features = params.means.shape[1]
    parts, labels = [], []
    for k, (mean, count) in enumerate(zip(params.means, counts, strict=True)):
        z = rng.standard_normal((count, n_features))
        parts.append(mean + _CORRELATED[kind](z, covariances, k))
        labels.append(np.full(count, k))
    return np.concatenate(parts), np.concatenate(labels)


#: Lambda r for each row's residual r and the precision of its component.
_PRECISION_TIMES = {
    "full": lambda residual, precisions, component: np.einsum(
        "nij,nj->ni", precisions[component], residual),
    "tied": lambda residual, precision, component: residual @ precision,
    "diag": lambda residual, precisions, component: residual * precisions[component],
    "spherical": lambda residual, precisions, component: (
        residual * precisions[component][:, None]),
}


def explain(params: GaussianParams, X: np.ndarray):
    """Why each row scores as it does.

    Returns ``(component, probability, distance, shares)``: the most likely
    component, its posterior probability, the Mahalanobis distance to it, and
    each feature's share r_j (Lambda r)_j / r' Lambda r of the squared
    distance (r = x - mu, Lambda the precision; the shares add up to 1): the
    features with the largest shares are those that make the row unlikely.
    Residuals are scaled before they are multiplied, so rows far beyond the
    model get an infinite distance and finite shares, never NaN.
    """
    _, log_resp = log_prob_resp(params, X)
    component = log_resp.argmax(axis=1)
    rows = np.arange(X.shape[0])
    probability = np.exp(log_resp[rows, component])
    residual = np.asarray(X, dtype=np.float64) - params.means[component]
    scale = np.abs(residual).max(axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    residual /= scale
    kind = params.covariance_type
    precisions = precisions_from_cholesky(params.precisions_cholesky, kind)
    contributions = residual * _PRECISION_TIMES[kind](residual, precisions, component)
    squared = np.maximum(contributions.sum(axis=1), 0.0)
    with np.errstate(over="ignore"):
        distance = np.sqrt(squared) * scale[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(squared[:, None] > 0, contributions / squared[:, None], 0.0)
    return component, probability, distance, shares
