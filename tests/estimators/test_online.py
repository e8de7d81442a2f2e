"""GaussianMixture.partial_fit: stepwise online EM against batch EM and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import streammix as sm
from streammix.core import gaussian as gm
from streammix.core import online
from streammix.datasets import mixture_blocks
from tests.conftest import write_table

KINDS = ("full", "tied", "diag", "spherical")


def stream(n=60_000, d=4, k=4, seed=3):
    X = np.concatenate([x for x, _ in mixture_blocks(n, d, k, seed=seed)])
    return np.random.default_rng(0).permutation(X)  # a stationary stream


def start(X, kind, k=4):
    d = X.shape[1]
    precisions = {"full": np.tile(np.eye(d) * 0.5, (k, 1, 1)), "tied": np.eye(d) * 0.5,
                  "diag": np.full((k, d), 0.5), "spherical": np.full(k, 0.5)}[kind]
    return {"weights_init": np.full(k, 1 / k), "means_init": X[:k] + 0.5,
            "precisions_init": precisions, "covariance_type": kind}


@pytest.mark.parametrize("kind", KINDS)
def test_one_online_pass_ends_within_1_percent_of_batch_em(kind):
    X = stream()
    batch = sm.GaussianMixture(4, tol=1e-6, max_iter=500, **start(X, kind)).fit(X)
    model = sm.GaussianMixture(4, **start(X, kind))
    for first in range(0, len(X), 1000):
        model.partial_fit(X[first : first + 1000])
    assert model.n_steps_ == len(X) // 1000
    assert model.score(X) == pytest.approx(batch.score(X), rel=0.01)


def test_out_of_core_batches_are_the_chunks_and_give_the_in_memory_result(tmp_path):
    X = stream(n=20_000)
    write_table(tmp_path / "s.parquet", X, 1000)
    in_memory = sm.GaussianMixture(4, **start(X, "full"))
    for first in range(0, len(X), 1000):
        in_memory.partial_fit(X[first : first + 1000])
    chunked = sm.GaussianMixture(4, chunk_size=1000, **start(X, "full"))
    chunked.partial_fit(tmp_path / "s.parquet")  # one step per chunk, in order
    assert chunked.n_steps_ == in_memory.n_steps_ == 20
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(in_memory, name),
                                   rtol=1e-12, atol=1e-14)
    again = sm.GaussianMixture(4, chunk_size=1000, **start(X, "full"))
    np.testing.assert_array_equal(again.partial_fit(tmp_path / "s.parquet").means_,
                                  chunked.means_)  # deterministic given the batch order


def test_float32_batches_accumulate_in_float64():
    X = stream(n=20_000)
    doubles, singles = (sm.GaussianMixture(4, **start(X, "diag")) for _ in range(2))
    for first in range(0, len(X), 1000):
        doubles.partial_fit(X[first : first + 1000])
        singles.partial_fit(X[first : first + 1000].astype(np.float32))
    assert singles.means_.dtype == np.float32
    np.testing.assert_allclose(singles.means_, doubles.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(singles.covariances_, doubles.covariances_, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_is_the_m_step_of_the_blended_statistics(kind):
    """Closed forms: gamma = 1 is the batch's own M-step; gamma = 0 keeps the model."""
    X = stream(n=5000)
    model = sm.GaussianMixture(4, covariance_type=kind, random_state=0).fit(X)
    params = model._gaussian()
    batch = X[:700]
    stats = gm.estep_stats(params, batch)
    own = gm.estimate_parameters(stats, params.shift(), model.reg_covar, kind)
    for got, want in zip(online.step(params, stats, 1.0, model.reg_covar), own, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    kept = online.step(params, stats, 0.0, model.reg_covar)
    for got, want in zip(kept, (params.weights, params.means, params.covariances), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_step_sizes_and_tracking_a_drifting_stream():
    assert online.step_size(1, decay=0.7, offset=10.0) == pytest.approx(11**-0.7)
    assert online.step_size(5, decay=1.0, offset=0.0) == pytest.approx(0.2)
    assert online.step_size(99, decay=0.7, offset=10, forgetting_factor=0.9) == \
        pytest.approx(0.1)
    rng = np.random.default_rng(1)
    assert online.step_size(3, decay=0.7, offset=10, forgetting_factor=0.99, weight=100) == \
        pytest.approx(1 - 0.99**100)
    tracking = sm.GaussianMixture(1, forgetting_factor=0.999)  # a memory of ~1,000 rows
    averaging = sm.GaussianMixture(1)
    for t in range(60):  # the mean moves from 0 to 10 half-way
        batch = rng.normal(0.0 if t < 30 else 10.0, 1.0, (500, 2))
        tracking.partial_fit(batch)
        averaging.partial_fit(batch)
    np.testing.assert_allclose(tracking.means_[0], [10, 10], atol=0.1)
    assert np.all(averaging.means_[0] < 9.5)  # decaying steps remember the past longer


def test_a_fitted_or_loaded_model_continues(tmp_path):
    X = stream(n=10_000)
    model = sm.GaussianMixture(4, random_state=0).fit(X[:5000])
    model.save(tmp_path / "m.npz")
    loaded = sm.load(tmp_path / "m.npz")
    assert loaded.n_steps_ == 0
    for continued in (model, loaded):
        continued.partial_fit(X[5000:6000])
    np.testing.assert_array_equal(loaded.means_, model.means_)
    assert model.n_steps_ == 1
    with pytest.raises(ValueError, match=r"X has 3 features, but GaussianMixture is expecting"):
        model.partial_fit(X[:10, :3])
    with pytest.raises(ValueError, match=r"learning_decay must be in \(0.5, 1\]"):
        sm.GaussianMixture(2, learning_decay=0.4).partial_fit(X)


def test_the_first_call_initialises_as_fit_would():
    X = stream(n=3000)
    first = sm.GaussianMixture(4, random_state=0, init_params="k-means++").partial_fit(X[:1000])
    fitted = sm.GaussianMixture(4, random_state=0, init_params="k-means++").fit(X[:1000])
    np.testing.assert_array_equal(first.means_, fitted.means_)  # it runs fit: the same bits
    assert first.n_steps_ == 1 and first.n_iter_ == fitted.n_iter_


@pytest.mark.parametrize(("kind", "within"), [("full", 0.01), ("tied", 0.03), ("diag", 0.03),
                                             ("spherical", 0.03)])
def test_bayesian_streaming_updates_end_near_the_batch_fit(kind, within):
    X = stream(n=60_000)
    options = {"covariance_type": kind, "random_state": 0, "max_iter": 500,
               "init_params": "random_from_data"}
    batch = sm.BayesianGaussianMixture(8, **options).fit(X)
    model = sm.BayesianGaussianMixture(8, **options)
    for first in range(0, len(X), 1000):
        model.partial_fit(X[first : first + 1000])
    assert model.n_steps_ == 60
    assert model.score(X) == pytest.approx(batch.score(X), rel=within)
    # the posterior holds the rows it saw: its counts add up to them
    np.testing.assert_allclose((model.mean_precision_ - model.mean_precision_prior_).sum(),
                               len(X), rtol=1e-9)


def test_bayesian_partial_fit_tracks_with_a_forgetting_factor_and_continues(tmp_path):
    rng = np.random.default_rng(2)
    model = sm.BayesianGaussianMixture(3, forgetting_factor=0.998, random_state=0)
    for t in range(40):  # the mean moves from 0 to 10 half-way
        model.partial_fit(rng.normal(0.0 if t < 20 else 10.0, 1.0, (500, 2)))
    main = model.effective_components()
    assert len(main) >= 1
    np.testing.assert_allclose(np.average(model.means_, axis=0, weights=model.weights_),
                               [10, 10], atol=0.2)
    model.save(tmp_path / "b.npz")
    loaded = sm.load(tmp_path / "b.npz")
    batch = rng.normal(10.0, 1.0, (500, 2))
    np.testing.assert_allclose(loaded.partial_fit(batch).means_,
                               model.partial_fit(batch).means_, rtol=1e-12)
