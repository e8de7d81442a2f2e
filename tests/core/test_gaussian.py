"""The per-chunk EM algebra: merge laws, chunking invariance, equality with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.mixture import GaussianMixture as SkGMM

from streammix.core import gaussian as gm
from tests.conftest import make_blobs

X = make_blobs(300, seed=3)


def sklearn_start(kind, n_components=3):
    """A fitted-for-one-iteration scikit-learn model: a realistic, shared start."""
    with pytest.warns(Warning):
        return SkGMM(n_components, covariance_type=kind, max_iter=1, random_state=0).fit(X)


def params_of(sk, kind):
    return gm.GaussianParams(sk.weights_, sk.means_, sk.precisions_cholesky_, kind)


def assert_stats_close(a, b, rtol=1e-10):
    assert a.n_rows == b.n_rows
    np.testing.assert_allclose(a.log_lik, b.log_lik, rtol=rtol)
    for name in ("resp_sum", "first", "second"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("kind", gm.COVARIANCE_TYPES)
def test_one_em_step_equals_sklearn(kind):
    sk = sklearn_start(kind)
    params = params_of(sk, kind)
    stats = gm.estep_stats(params, X)
    weights, means, covariances = gm.estimate_parameters(stats, params.shift(), 1e-6, kind)
    log_prob_norm, log_resp = sk._e_step(X)
    sk._m_step(X, log_resp)
    np.testing.assert_allclose(stats.log_lik / len(X), log_prob_norm, rtol=1e-12)
    np.testing.assert_allclose(weights, sk.weights_, rtol=1e-10)
    np.testing.assert_allclose(means, sk.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(covariances, sk.covariances_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gm.precision_cholesky(covariances, kind), sk.precisions_cholesky_,
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", gm.COVARIANCE_TYPES)
def test_log_prob_equals_sklearn(kind):
    sk = sklearn_start(kind)
    log_norm, log_resp = gm.log_prob_resp(params_of(sk, kind), X)
    np.testing.assert_allclose(log_norm, sk.score_samples(X), rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_resp), sk.predict_proba(X), atol=1e-12)


cuts = st.lists(st.integers(1, len(X) - 1), min_size=2, max_size=6, unique=True).map(sorted)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(gm.COVARIANCE_TYPES), cuts=cuts)
def test_chunking_invariance_and_associativity(kind, cuts):
    params = gm.GaussianParams(np.full(3, 1 / 3), X[[0, 100, 200]], _identity_chol(kind), kind)
    whole = gm.estep_stats(params, X)
    parts = [gm.estep_stats(params, part) for part in np.split(X, cuts)]
    left = parts[0]
    for part in parts[1:]:
        left = left.merge(part)
    right = parts[-1]
    for part in reversed(parts[:-1]):
        right = part.merge(right)
    assert_stats_close(left, whole)
    assert_stats_close(right, whole)
    zero = gm.GaussianStats.zero(3, 3, kind)
    assert_stats_close(zero.merge(whole), whole, rtol=0)


def _identity_chol(kind):
    return {"full": np.tile(np.eye(3), (3, 1, 1)), "tied": np.eye(3),
            "diag": np.ones((3, 3)), "spherical": np.ones(3)}[kind]


@pytest.mark.parametrize("kind", gm.COVARIANCE_TYPES)
def test_centred_moments_keep_precision_far_from_origin(kind):
    """M-step on data shifted by 1e6 gives the same covariances (scikit-learn's do not)."""
    sk = sklearn_start(kind)
    params = params_of(sk, kind)
    shifted = gm.GaussianParams(params.weights, params.means + 1e6,
                                params.precisions_cholesky, kind)
    near = gm.estimate_parameters(gm.estep_stats(params, X), params.shift(), 1e-6, kind)
    far = gm.estimate_parameters(gm.estep_stats(shifted, X + 1e6), shifted.shift(), 1e-6, kind)
    np.testing.assert_allclose(far[1] - 1e6, near[1], atol=1e-8)
    np.testing.assert_allclose(far[2], near[2], rtol=1e-7)


def test_collapsed_component_raises_clear_error():
    covariances = np.stack([np.eye(2), np.zeros((2, 2))])
    with pytest.raises(gm.CollapsedComponentError, match=r"reg_covar.*component 1"):
        gm.precision_cholesky(covariances, "full")
    with pytest.raises(gm.CollapsedComponentError, match=r"reg_covar"):
        gm.precision_cholesky(np.array([1.0, 0.0]), "spherical")


@pytest.mark.parametrize("kind", gm.COVARIANCE_TYPES)
def test_precision_round_trips(kind):
    sk = sklearn_start(kind)
    chol = gm.precision_cholesky_from_precisions(sk.precisions_, kind)
    np.testing.assert_allclose(chol, sk.precisions_cholesky_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_from_cholesky(chol, kind), sk.covariances_,
                               rtol=1e-9)
    np.testing.assert_allclose(gm.precisions_from_cholesky(chol, kind), sk.precisions_, rtol=1e-10)


def test_float32_arithmetic_accumulates_in_float64():
    params = gm.GaussianParams(np.full(3, 1 / 3), X[[0, 100, 200]], _identity_chol("full"), "full")
    exact = gm.estep_stats(params, X)
    single = gm.estep_stats(params, X.astype(np.float32))
    assert single.first.dtype == np.float64 and single.second.dtype == np.float64
    np.testing.assert_allclose(single.second, exact.second, rtol=1e-4)
