"""Variational Bayesian Gaussian mixtures from the sufficient statistics EM already merges.

The variational M-step needs, per component, N_k, the mean x̄_k and the
scatter S_k of the responsibilities — exactly what a pass of
:func:`streammix.core.gaussian.estep_stats` returns — so one pass per
iteration serves both models. The formulas are scikit-learn's
``BayesianGaussianMixture`` (Bishop, PRML §10.2, with its covariances
normalised by the degrees of freedom), written on merged statistics:

* :func:`update` — the M-step: the posterior of the weights (Dirichlet process
  or distribution), the means (Gaussian) and the precisions (Wishart);
* :func:`estep_params` — the E-step's parameters: the posterior's means and
  precisions with, as each component's log weight, its expected log weight
  plus the expectation terms of its Wishart, so that the compiled E-step of
  the finite mixture computes the variational responsibilities unchanged;
* :func:`lower_bound` — the evidence lower bound, scikit-learn's (constants
  removed), whose only data term, the entropy of the responsibilities, comes
  from the same pass's statistics (:func:`entropy`).

Default priors come from the data's mean and covariance: :func:`moments` and
:meth:`Moments.merge` compute them in one pass, each chunk centred on its own
mean and merged exactly (Chan et al.), so data far from the origin keeps its
digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, digamma, gammaln

from .._serial import serializable
from . import gaussian as gm

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@serializable
@dataclass
class Moments:
    """Count, mean and scatter (sum of centred outer products; its diagonal
    only when ``full`` is False) of some rows."""

    count: float
    mean: np.ndarray
    scatter: np.ndarray

    def merge(self, other: Moments) -> Moments:
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        outer = np.outer(delta, delta) if self.scatter.ndim == 2 else delta * delta
        return Moments(count, mean, self.scatter + other.scatter +
                       outer * (self.count * other.count / count))

    def covariance(self, covariance_type: str):
        """The sample covariance (ddof=1, as ``np.cov``) in the prior's shape for the type."""
        if self.count <= 1:
            raise ValueError("the data's covariance, the default covariance_prior, needs at "
                             "least 2 rows; give covariance_prior")
        return _PRIOR_OF_COVARIANCE[covariance_type](self.scatter / (self.count - 1))


def _variances(covariance):
    return np.diagonal(covariance) if covariance.ndim == 2 else covariance


#: The covariance prior from the data's covariance (or only its diagonal).
_PRIOR_OF_COVARIANCE = {"full": np.atleast_2d, "tied": np.atleast_2d, "diag": _variances,
                        "spherical": lambda covariance: float(_variances(covariance).mean())}


def moments(full: bool, block: np.ndarray, weights=None) -> Moments:
    """The :class:`Moments` of a block's rows (each counted ``weights[i]`` times)."""
    X = np.asarray(block, dtype=np.float64)
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64)
    count = float(w.sum())
    if count == 0:
        d = X.shape[1]
        return Moments(0.0, np.zeros(d), np.zeros((d, d) if full else d))
    mean = w @ X / count
    centred = X - mean
    scatter = (centred * w[:, None]).T @ centred if full else w @ (centred * centred)
    return Moments(count, mean, scatter)


def covariance_prior_shape(n_features: int, covariance_type: str) -> tuple:
    """Shape of the covariance prior: a matrix (full, tied), a variance per feature
    (diag), or one number (spherical)."""
    return {"full": (n_features, n_features), "tied": (n_features, n_features),
            "diag": (n_features,), "spherical": ()}[covariance_type]


@serializable
@dataclass
class Priors:
    """The priors of a variational mixture, as scikit-learn's ``*_prior_`` attributes."""

    prior_type: str
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: np.ndarray  # (d, d) full/tied, (d,) diag, () spherical


@serializable
@dataclass
class Posterior:
    """The variational posterior, as scikit-learn's fitted attributes.

    ``weight_concentration`` is (2, K) for the Dirichlet process (the two Beta
    parameters of each stick) and (K,) for the Dirichlet distribution;
    ``degrees_of_freedom`` is (K,), one shared value repeated for tied.
    """

    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


# The posterior's degrees of freedom and (normalised) Wishart scale of each covariance
# type, from N_k, the covariances s_k, the means' distances to the prior mean (diff)
# and the means' posterior precisions beta_k.
def _full_wishart(nk, sk, diff, beta, priors):
    beta0, nu0, psi0 = priors.mean_precision, priors.degrees_of_freedom, priors.covariance
    dof = nu0 + nk
    spread = (beta0 * nk / beta)[:, None, None] * diff[:, :, None] * diff[:, None, :]
    return dof, (psi0 + nk[:, None, None] * sk + spread) / dof[:, None, None]


def _tied_wishart(nk, sk, diff, beta, priors):  # one Wishart, its dof repeated per component
    beta0, nu0, psi0 = priors.mean_precision, priors.degrees_of_freedom, priors.covariance
    k = len(nk)
    dof = np.full(k, nu0 + nk.sum() / k)
    spread = beta0 / k * ((nk / beta) * diff.T) @ diff
    return dof, (psi0 + sk * nk.sum() / k + spread) / dof[0]


def _diag_wishart(nk, sk, diff, beta, priors):
    beta0, nu0, psi0 = priors.mean_precision, priors.degrees_of_freedom, priors.covariance
    dof = nu0 + nk
    return dof, (psi0 + nk[:, None] * (sk + (beta0 / beta)[:, None] * diff**2)) / dof[:, None]


def _spherical_wishart(nk, sk, diff, beta, priors):
    beta0, nu0, psi0 = priors.mean_precision, priors.degrees_of_freedom, priors.covariance
    dof = nu0 + nk
    return dof, (psi0 + nk * (sk + beta0 / beta * np.mean(diff**2, axis=1))) / dof


_WISHART = {"full": _full_wishart, "tied": _tied_wishart, "diag": _diag_wishart,
            "spherical": _spherical_wishart}


def update(nk, xk, sk, priors: Priors, covariance_type: str) -> Posterior:
    """The variational M-step from the responsibilities' N_k (with scikit-learn's
    10 eps added), means ``xk`` and covariances ``sk`` (``reg_covar`` included):
    what :func:`streammix.core.gaussian.estimate_parameters` gives."""
    if priors.prior_type == "dirichlet_process":
        tail = np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))
        concentration = np.vstack([1.0 + nk, priors.weight_concentration + tail])
    else:
        concentration = priors.weight_concentration + nk
    beta0, m0 = priors.mean_precision, priors.mean
    mean_precision = beta0 + nk
    means = (beta0 * m0 + nk[:, None] * xk) / mean_precision[:, None]
    dof, covariances = _WISHART[covariance_type](nk, sk, xk - m0, mean_precision, priors)
    return Posterior(concentration, mean_precision, means, dof, covariances,
                     gm.precision_cholesky(covariances, covariance_type))


def expected_log_weights(posterior: Posterior, prior_type: str) -> np.ndarray:
    """E[log pi_k] under the posterior of the weights."""
    concentration = posterior.weight_concentration
    if prior_type == "dirichlet_process":
        a, b = concentration
        total = digamma(a + b)
        return digamma(a) - total + np.hstack((0, np.cumsum(digamma(b) - total)[:-1]))
    return digamma(concentration) - digamma(concentration.sum())


def _expected_log_det_terms(posterior: Posterior, n_features: int) -> np.ndarray:
    """Per component, what E[log p(x | mu_k, Lambda_k)] adds to log N(x | m_k, nu_k W_k)."""
    dof = posterior.degrees_of_freedom
    log_lambda = n_features * math.log(2.0) + digamma(
        0.5 * (dof - np.arange(n_features)[:, None])).sum(axis=0)
    return -0.5 * n_features * np.log(dof) + 0.5 * (log_lambda - n_features /
                                                     posterior.mean_precision)


def estep_params(posterior: Posterior, prior_type: str, covariance_type: str
                 ) -> gm.GaussianParams:
    """Parameters whose finite-mixture E-step gives the variational responsibilities
    (and scikit-learn's ``_estimate_weighted_log_prob`` as the weighted log density)."""
    n_features = posterior.means.shape[1]
    log_weights = expected_log_weights(posterior, prior_type) + \
        _expected_log_det_terms(posterior, n_features)
    shares = np.exp(log_weights - log_weights.max())
    return gm.GaussianParams(shares / shares.sum(), posterior.means,
                             posterior.precisions_cholesky, covariance_type,
                             posterior.covariances, log_weights=log_weights)


# sum_i r_ik (x_i - m_k)' Lambda_k (x_i - m_k) of each covariance type, from the
# statistics about the shift, the means relative to it (delta) and the precision factors.
def _full_mahalanobis(stats, delta, factors):
    nk, first, second = stats.resp_sum, stats.first, stats.second
    precisions = np.matmul(factors, factors.transpose(0, 2, 1))
    spread = np.einsum("kde,kde->k", precisions, second)
    cross = np.einsum("kd,kde,ke->k", delta, precisions, first)
    centre = np.einsum("kd,kde,ke->k", delta, precisions, delta)
    return spread - 2 * cross + nk * centre


def _tied_mahalanobis(stats, delta, factor):
    nk, first, second = stats.resp_sum, stats.first, stats.second
    precision = factor @ factor.T
    mahalanobis = np.zeros(len(nk))
    mahalanobis[0] = np.sum(precision * second)  # the components share it
    mahalanobis += -2 * np.einsum("kd,de,ke->k", delta, precision, first) + \
        nk * np.einsum("kd,de,ke->k", delta, precision, delta)
    return mahalanobis


def _diagonal_mahalanobis(stats, delta, precisions):
    nk, first, second = stats.resp_sum, stats.first, stats.second
    return (precisions * (second - 2 * delta * first + nk[:, None] * delta**2)).sum(axis=1)


_MAHALANOBIS = {
    "full": _full_mahalanobis,
    "tied": _tied_mahalanobis,
    "diag": lambda stats, delta, factors: _diagonal_mahalanobis(stats, delta, factors**2),
    "spherical": lambda stats, delta, factors: _diagonal_mahalanobis(
        stats, delta, np.repeat((factors**2)[:, None], delta.shape[1], 1)),
}


def entropy(stats: gm.GaussianStats, params: gm.GaussianParams) -> float:
    """-sum_ik r_ik log r_ik of the pass that computed ``stats`` with ``params``.

    With rho_ik the weighted densities of the E-step and r_ik = rho_ik / sum_j
    rho_ij, it is sum_i log sum_j rho_ij (``stats.log_lik``) minus sum_ik r_ik
    log rho_ik, whose Mahalanobis part comes from the moments about the
    pass's shift: sum_i r_ik (x_i - m_k)' Lambda_k (x_i - m_k) =
    tr(Lambda_k S_k) - 2 delta_k' Lambda_k F_k + N_k delta_k' Lambda_k delta_k.
    """
    n_features = params.means.shape[1]
    mahalanobis = _MAHALANOBIS[params.covariance_type](
        stats, params.means - params.shift(), params.precisions_cholesky)
    expected = stats.resp_sum @ (-0.5 * n_features * gm._LOG_2PI + params.log_det +
                                 params.weight_terms()) - 0.5 * mahalanobis.sum()
    return float(stats.log_lik - expected)


def lower_bound(entropy_: float, posterior: Posterior, priors: Priors,
                covariance_type: str) -> float:
    """scikit-learn's evidence lower bound (constant terms left out)."""
    n_features = posterior.means.shape[1]
    dof = posterior.degrees_of_freedom
    log_det = gm.log_det_cholesky(posterior.precisions_cholesky, covariance_type, n_features)
    if covariance_type == "tied":
        dof = dof[:1]
    log_det = np.atleast_1d(log_det) - 0.5 * n_features * np.log(dof)
    log_wishart = -(dof * log_det + dof * n_features * 0.5 * math.log(2.0) +
                    gammaln(0.5 * (dof - np.arange(n_features)[:, None])).sum(axis=0))
    log_wishart = log_wishart.sum() * (len(posterior.mean_precision)
                                       if covariance_type == "tied" else 1)
    concentration = posterior.weight_concentration
    if priors.prior_type == "dirichlet_process":
        log_norm_weight = -np.sum(betaln(concentration[0], concentration[1]))
    else:
        log_norm_weight = gammaln(concentration.sum()) - gammaln(concentration).sum()
    return float(entropy_ - log_wishart - log_norm_weight
                 - 0.5 * n_features * np.log(posterior.mean_precision).sum())


def implied_stats(posterior: Posterior, priors: Priors, covariance_type: str,
                  shift: np.ndarray, reg_covar: float) -> tuple[gm.GaussianStats, float]:
    """The statistics (per unit of row weight, centred on ``shift``) and the total row
    weight N whose M-step (:func:`~streammix.core.gaussian.estimate_parameters` with
    ``reg_covar``, then :func:`update`) gives ``posterior``: their inverse.

    Components the data left empty (N_k below 1e-9 N) imply nothing: their
    statistics are zero (their implied mean would be the prior's pull divided
    by almost nothing).
    """
    beta0, m0, psi0 = priors.mean_precision, priors.mean, priors.covariance
    beta, dof, cov = posterior.mean_precision, posterior.degrees_of_freedom, \
        posterior.covariances
    nk = np.maximum(beta - beta0, 0.0)
    total = float(nk.sum())
    used = nk > 1e-9 * total
    nk = np.where(used, nk, 0.0)
    mean = np.where(used[:, None], (beta[:, None] * posterior.means - beta0 * m0)
                    / np.where(used, nk, 1.0)[:, None], shift)  # N_k x_k / N_k
    diff, delta = mean - m0, mean - shift
    d = len(m0)
    if covariance_type == "full":  # N_k s_k, then without reg_covar: the scatter
        scatter = cov * dof[:, None, None] - psi0 - \
            (beta0 * nk / beta)[:, None, None] * diff[:, :, None] * diff[:, None, :]
        scatter -= nk[:, None, None] * reg_covar * np.eye(d)
        second = scatter + nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
        second[~used] = 0.0
    elif covariance_type == "tied":  # s N / K, then N (s - reg_covar)
        k = len(nk)
        spread = cov * dof[0] - psi0 - beta0 / k * ((nk / beta) * diff.T) @ diff
        second = spread * k - total * reg_covar * np.eye(d) + (nk[:, None] * delta).T @ delta
    else:
        pull = (nk * beta0 / beta)[:, None] * (diff**2 if covariance_type == "diag" else
                                              np.mean(diff**2, axis=1, keepdims=True))
        scatter = (cov * dof[:, None] if covariance_type == "diag" else
                   (cov * dof)[:, None]) - psi0 - pull - nk[:, None] * reg_covar
        second = np.broadcast_to(scatter, delta.shape) + nk[:, None] * delta**2
        second = np.where(used[:, None], second, 0.0)
    return gm.GaussianStats(1, 0.0, nk / total, nk[:, None] * delta / total,
                            second / total), total
