"""The variational M-step, E-step and lower bound against scikit-learn on the same
responsibilities (its private steps, called directly)."""

from functools import reduce

import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SkBGM

from streammix.core import bayesian as vb
from streammix.core import gaussian as gm
from tests.conftest import make_blobs

KINDS = ["full", "tied", "diag", "spherical"]


def _priors(sk, prior_type):
    return vb.Priors(prior_type, float(sk.weight_concentration_prior_),
                     float(sk.mean_precision_prior_), np.asarray(sk.mean_prior_, float),
                     float(sk.degrees_of_freedom_prior_),
                     np.asarray(sk.covariance_prior_, float))


def _m_step(stats, shift, priors, kind, reg_covar=1e-6):
    _, xk, sk = gm.estimate_parameters(stats, shift, reg_covar, kind)
    return vb.update(stats.resp_sum + 10 * np.finfo(float).eps, xk, sk, priors, kind)


def _check_posterior(posterior, sk, kind):
    concentration = np.asarray(sk.weight_concentration_)
    np.testing.assert_allclose(posterior.weight_concentration, concentration, rtol=1e-10)
    np.testing.assert_allclose(posterior.mean_precision, sk.mean_precision_, rtol=1e-10)
    np.testing.assert_allclose(posterior.means, sk.means_, rtol=1e-10, atol=1e-12)
    dof = posterior.degrees_of_freedom[0] if kind == "tied" else posterior.degrees_of_freedom
    np.testing.assert_allclose(dof, sk.degrees_of_freedom_, rtol=1e-10)
    np.testing.assert_allclose(posterior.covariances, sk.covariances_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(posterior.precisions_cholesky, sk.precisions_cholesky_,
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prior_type", vb.PRIOR_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_one_iteration_equals_sklearn_from_the_same_responsibilities(kind, prior_type):
    X = make_blobs()
    resp = np.random.default_rng(3).random((len(X), 4))
    resp /= resp.sum(axis=1, keepdims=True)
    sk = SkBGM(n_components=4, covariance_type=kind, weight_concentration_prior_type=prior_type)
    sk._check_parameters(X)
    priors = _priors(sk, prior_type)
    moments = vb.moments(kind in ("full", "tied"), X[:250]).merge(
        vb.moments(kind in ("full", "tied"), X[250:]))
    np.testing.assert_allclose(moments.mean, sk.mean_prior_, rtol=1e-12)
    np.testing.assert_allclose(moments.covariance(kind), sk.covariance_prior_, rtol=1e-12)

    sk._initialize(X, resp)  # the M-step on the given responsibilities
    shift = np.tile(X[0], (4, 1))
    posterior = _m_step(gm.resp_stats(resp, X, shift, kind), shift, priors, kind)
    _check_posterior(posterior, sk, kind)

    # the E-step's weighted log densities, then one variational iteration
    params = vb.estep_params(posterior, prior_type, kind)
    np.testing.assert_allclose(gm.weighted_log_prob(params, X),
                               sk._estimate_weighted_log_prob(X), rtol=1e-9)
    log_prob_norm, log_resp = sk._e_step(X)
    sk._m_step(X, log_resp)
    bound = sk._compute_lower_bound(log_resp, log_prob_norm)
    stats = reduce(gm.GaussianStats.merge, (gm.estep_stats(params, X[a:a + 97])
                                            for a in range(0, len(X), 97)))
    entropy = vb.entropy(stats, params)
    np.testing.assert_allclose(entropy, -np.sum(np.exp(log_resp) * log_resp), rtol=1e-9)
    posterior = _m_step(stats, params.shift(), priors, kind)
    _check_posterior(posterior, sk, kind)
    np.testing.assert_allclose(vb.lower_bound(entropy, posterior, priors, kind), bound,
                               rtol=1e-10)


def test_moments_merge_exactly_far_from_the_origin():
    X = make_blobs() + 1e6
    merged = vb.moments(True, X[:1]).merge(vb.moments(True, X[1:333])).merge(
        vb.moments(True, X[333:]))
    exact = np.cov((X - 1e6).T)
    np.testing.assert_allclose(merged.covariance("full"), exact, rtol=1e-9)
    np.testing.assert_allclose(merged.mean - 1e6, (X - 1e6).mean(axis=0), atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_the_statistics_a_posterior_implies_give_it_back(kind):
    X = make_blobs()
    resp = np.random.default_rng(4).random((len(X), 4))
    resp /= resp.sum(axis=1, keepdims=True)
    sk = SkBGM(n_components=4, covariance_type=kind)
    sk._check_parameters(X)
    priors = _priors(sk, "dirichlet_process")
    shift = np.tile(X.mean(axis=0), (4, 1))
    posterior = _m_step(gm.resp_stats(resp, X, shift, kind), shift, priors, kind)
    implied, total = vb.implied_stats(posterior, priors, kind, shift, 1e-6)
    assert total == pytest.approx(len(X))
    again = vb.update(implied.resp_sum * total + 10 * np.finfo(float).eps,
                      *gm.estimate_parameters(implied, shift, 1e-6, kind)[1:], priors, kind)
    for name in ("means", "covariances", "mean_precision", "degrees_of_freedom"):
        np.testing.assert_allclose(getattr(again, name), getattr(posterior, name), rtol=1e-10,
                                   atol=1e-12, err_msg=name)
