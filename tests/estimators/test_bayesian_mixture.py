"""BayesianGaussianMixture: scikit-learn's numbers from the same start, on every input
and chunking; one pass per iteration; model files; the scorer."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SkBGM

import streammix as sm
from streammix.estimators.base import check_random_state, restart_seeds
from streammix.estimators.mixture import BaseMixture, random_responsibilities
from streammix.exceptions import ConvergenceWarning
from tests._compare import assert_labels_agree, same_stop
from tests.conftest import make_blobs

KINDS = ("full", "tied", "diag", "spherical")
PRIORS = ("dirichlet_process", "dirichlet_distribution")
ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
              "mean_precision_", "degrees_of_freedom_", "mean_prior_", "covariance_prior_",
              "weight_concentration_prior_", "mean_precision_prior_", "degrees_of_freedom_prior_")


def random_start(random_state, n_rows, k):
    """The responsibilities streammix's ``init_params="random"`` starts from (the same
    for every chunking: a function of the seed and the row)."""
    seed = restart_seeds(check_random_state(random_state), 1)[0]
    return random_responsibilities(int(np.random.default_rng(seed).integers(2**63)), 0,
                                   n_rows, k)


class SkFromResp(SkBGM):
    """scikit-learn's model started from given responsibilities.

    (Not from ``random_from_data`` or ``k-means++`` rows: for ``tied``,
    scikit-learn's initial covariance then counts every row as if its
    responsibilities summed to 1, though only k rows have any.)
    """

    resp: ClassVar[list] = []

    def _initialize_parameters(self, X, random_state, *args, **kwargs):
        self._initialize(X, self.resp)


def twins(X, data, kind, prior_type, k=4, **extra):
    """Ours fitted on ``data`` and scikit-learn's on ``X``, from the same start; scikit-learn's
    stopped where ours stopped when the two stop one iteration apart (see ``same_stop``)."""
    params = {"n_components": k, "covariance_type": kind, "tol": 1e-8, "max_iter": 500,
              "weight_concentration_prior_type": prior_type, **extra}
    ours = sm.BayesianGaussianMixture(**params, init_params="random", random_state=5)
    ours.fit(data)
    SkFromResp.resp = random_start(5, len(X), k)
    theirs = SkFromResp(**params).fit(X)
    assert ours.converged_ == theirs.converged_
    return ours, same_stop(ours, theirs, X)


def assert_same_model(ours, theirs, rtol=1e-6):
    for name in ATTRIBUTES:
        a, b = np.asarray(getattr(ours, name)), np.asarray(getattr(theirs, name))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)
    for a, b in zip(np.atleast_2d(ours.weight_concentration_),
                    np.atleast_2d(theirs.weight_concentration_), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol)
    assert type(ours.weight_concentration_) is type(theirs.weight_concentration_)
    assert np.ndim(ours.degrees_of_freedom_) == np.ndim(theirs.degrees_of_freedom_)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=rtol)
    # (scikit-learn keeps the bounds of a tied model as arrays of one value)
    np.testing.assert_allclose(ours.lower_bounds_, np.ravel(theirs.lower_bounds_), rtol=rtol)


@pytest.mark.parametrize("prior_type", PRIORS)
@pytest.mark.parametrize("kind", KINDS)
def test_equals_sklearn_in_memory(blobs, kind, prior_type):
    ours, theirs = twins(blobs, blobs, kind, prior_type)
    assert theirs.n_iter_ > 5
    assert_same_model(ours, theirs)
    np.testing.assert_allclose(ours.score_samples(blobs), theirs.score_samples(blobs),
                               rtol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(blobs), theirs.predict_proba(blobs),
                               atol=1e-6)
    assert_labels_agree(ours.predict(blobs), theirs.predict(blobs))


@pytest.mark.parametrize("prior_type", PRIORS)
@pytest.mark.parametrize("kind", KINDS)
def test_equals_sklearn_from_parquet_with_odd_row_groups(blobs, blobs_parquet, kind,
                                                         prior_type):
    data = sm.read_parquet(blobs_parquet, chunk_size=37)
    ours, theirs = twins(blobs, data, kind, prior_type)
    assert_same_model(ours, theirs)


def test_given_priors_equal_sklearn(blobs):
    priors = {"weight_concentration_prior": 0.05, "mean_precision_prior": 0.5,
              "mean_prior": np.array([1.0, -1.0, 2.0]), "degrees_of_freedom_prior": 4.5,
              "covariance_prior": np.diag([2.0, 1.0, 0.5])}
    ours, theirs = twins(blobs, blobs, "full", "dirichlet_process", **priors)
    assert_same_model(ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
def test_data_offset_by_1e6_keeps_its_digits(kind):
    """The model is translation-equivariant: far from the origin it must be the same."""
    X = make_blobs()
    near = sm.BayesianGaussianMixture(4, covariance_type=kind, init_params="random_from_data",
                                      random_state=2, tol=1e-8, max_iter=500).fit(X)
    far = sm.BayesianGaussianMixture(4, covariance_type=kind, init_params="random_from_data",
                                     random_state=2, tol=1e-8, max_iter=500).fit(X + 1e6)
    # Far from the origin the data keep ~1e-10 of their digits: the bound's last change
    # may cross tol=1e-8 one iteration apart (140 vs 141 on some CPUs).
    near = same_stop(far, near, X)
    np.testing.assert_allclose(far.means_ - 1e6, near.means_, atol=1e-6)
    for name in ("covariances_", "weights_", "mean_precision_", "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(far, name), getattr(near, name), rtol=1e-6,
                                   err_msg=name)
    np.testing.assert_allclose(far.lower_bound_, near.lower_bound_, rtol=1e-9)


def test_one_pass_per_iteration_and_restarts_share_them(blobs_parquet, read_counter):
    reads = {}
    for n_init in (1, 3):
        read_counter.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sm.BayesianGaussianMixture(3, n_init=n_init, tol=0.0, max_iter=5,
                                       init_params="random", random_state=0, chunk_size=60,
                                       cache=False).fit(blobs_parquet)
        reads[n_init] = dict(read_counter)
    assert reads[1] == reads[3]
    # the priors' pass, the random responsibilities' pass, then one pass an iteration
    # (+ the reference row of the random start, read from its chunk)
    assert set(reads[3].values()) - {2 + 5} <= {2 + 6}
    read_counter.clear()
    sm.BayesianGaussianMixture(3, max_iter=5, tol=0, init_params="random", random_state=0,
                               chunk_size=60, cache=False, mean_prior=np.zeros(3),
                               covariance_prior=np.eye(3)).fit(blobs_parquet)
    assert set(read_counter.values()) - {1 + 5} <= {1 + 6}  # given priors: no priors' pass


def test_the_data_chooses_the_number_of_components():
    X = make_blobs(n=1500)  # 3 clusters
    model = sm.BayesianGaussianMixture(10, random_state=0, max_iter=1000,
                                       weight_concentration_prior=1e-3).fit(X)
    assert len(model.effective_components()) == 3
    assert model.weights_[model.effective_components()].sum() > 0.99


def test_model_files_scorer_and_warm_start(tmp_path, blobs):
    for kind in KINDS:
        model = sm.BayesianGaussianMixture(3, covariance_type=kind, random_state=0,
                                           max_iter=300).fit(blobs)
        model.save(tmp_path / f"{kind}.npz")
        loaded = sm.load(tmp_path / f"{kind}.npz")
        assert type(loaded) is sm.BayesianGaussianMixture
        for name in (*ATTRIBUTES, "lower_bound_", "n_iter_"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
        assert type(loaded.degrees_of_freedom_) is type(model.degrees_of_freedom_)
        assert type(loaded.covariance_prior_) is type(model.covariance_prior_)
        assert type(loaded.weight_concentration_) is tuple
        np.testing.assert_array_equal(loaded.score_samples(blobs), model.score_samples(blobs))
    scorer = sm.AnomalyScorer(model, contamination=0.05).fit(blobs)
    assert (scorer.predict(blobs) == -1).mean() == pytest.approx(0.05, abs=0.005)
    # warm start continues the iterations: 3 then 3 more are the 6 of one fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = sm.BayesianGaussianMixture(3, random_state=0, max_iter=3, tol=0,
                                          warm_start=True).fit(blobs).fit(blobs)
        cold = sm.BayesianGaussianMixture(3, random_state=0, max_iter=6, tol=0).fit(blobs)
    assert warm.n_iter_ == 3
    for name in ("means_", "covariances_", "weights_"):
        np.testing.assert_allclose(getattr(warm, name), getattr(cold, name), rtol=1e-12)
    np.testing.assert_allclose(warm.lower_bound_, cold.lower_bound_, rtol=1e-12)


def test_a_sibling_of_gaussian_mixture_without_criteria(blobs):
    # As in scikit-learn: both are mixtures, and BIC/AIC are for maximum likelihood only.
    model = sm.BayesianGaussianMixture(2, random_state=0).fit(blobs)
    assert isinstance(model, BaseMixture) and not isinstance(model, sm.GaussianMixture)
    assert isinstance(sm.GaussianMixture(), BaseMixture)
    assert not hasattr(model, "bic") and not hasattr(model, "aic")
    assert not hasattr(SkBGM(), "bic") and not hasattr(SkBGM(), "aic")


def test_bad_priors_get_sklearn_s_messages(blobs):
    with pytest.raises(ValueError, match=r"'degrees_of_freedom_prior' should be greater than 2"):
        sm.BayesianGaussianMixture(2, degrees_of_freedom_prior=1.5).fit(blobs)
    with pytest.raises(ValueError, match=r"'means' should have the shape of \(3,\)"):
        sm.BayesianGaussianMixture(2, mean_prior=[0.0, 1.0]).fit(blobs)
    with pytest.raises(ValueError, match=r"'full precision' should be symmetric"):
        sm.BayesianGaussianMixture(2, covariance_prior=-np.eye(3)).fit(blobs)
    with pytest.raises(ValueError, match=r"weight_concentration_prior_type"):
        sm.BayesianGaussianMixture(2, weight_concentration_prior_type="x").fit(blobs)


def test_the_stream_scorer_explains_with_the_variational_density(blobs):
    model = sm.BayesianGaussianMixture(6, random_state=0, max_iter=500,
                                       init_params="random_from_data").fit(blobs)
    scorer = sm.AnomalyScorer(model, contamination=0.02).fit(blobs)
    far = blobs.mean(axis=0) + 1e3
    records = [{"id": 1, "x0": 0.0, "x1": 0.0, "x2": 0.0},
               {"id": 2, "x0": far[0], "x1": far[1], "x2": far[2]},
               {"id": 3, "x0": "not a number", "x1": 0.0, "x2": 0.0}]
    out = list(scorer.score_records(records, fields=["x0", "x1", "x2"]))
    assert [o["id"] for o in out] == [1, 2, 3]
    expected = model.score_samples(np.array([[0.0, 0.0, 0.0], far]))
    np.testing.assert_allclose([out[0]["score"], out[1]["score"]], expected, rtol=1e-12)
    assert out[1]["anomaly"] is True and np.isfinite(out[1]["score"])  # far: flagged, not NaN
    assert "error" in out[2]
    assert out[0]["cluster"] in model.effective_components()


def given_start(X, k, kind, seed=3):
    """A start of one's own: weights, means near some rows, precisions of the data's
    spread scaled per component, in ``kind``'s shape."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 5.0))
    means = X[rng.choice(len(X), k, replace=False)] + rng.normal(0, 0.3, (k, X.shape[1]))
    scale = rng.uniform(0.5, 2.0, k)
    inverse = np.linalg.inv(np.cov(X.T))
    precisions = {"full": scale[:, None, None] * inverse, "tied": inverse,
                  "diag": scale[:, None] / X.var(axis=0), "spherical": scale / X.var()}[kind]
    return {"weights_init": weights, "means_init": means, "precisions_init": precisions}


def sklearn_start_resp(X, k, kind, resp0, **given):
    """The responsibilities scikit-learn's GaussianMixture gives X from the given start,
    completed from ``resp0`` as its own ``_initialize`` completes it."""
    from sklearn.mixture import GaussianMixture as SkGM

    gmm = SkGM(k, covariance_type=kind, **given)
    gmm._initialize(X, resp0)
    _, log_resp = gmm._estimate_log_prob_resp(X)
    return np.exp(log_resp)


@pytest.mark.parametrize("given", ["all", "means"])
@pytest.mark.parametrize("prior_type", PRIORS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_given_start_equals_sklearn_from_the_same_responsibilities(blobs, blobs_parquet,
                                                                     kind, prior_type, given):
    """weights_init / means_init / precisions_init start a BayesianGaussianMixture where
    scikit-learn's starts from the responsibilities that mixture gives the rows, to 1e-8
    (read from Parquet in odd chunks)."""
    k = 4
    start = given_start(blobs, k, kind)
    if given == "means":  # the rest from init_params="random"'s start, as GaussianMixture
        start = {"means_init": start["means_init"]}
    params = {"n_components": k, "covariance_type": kind, "tol": 1e-10, "max_iter": 500,
              "weight_concentration_prior_type": prior_type}
    ours = sm.BayesianGaussianMixture(**params, **start, init_params="random", random_state=5)
    ours.fit(sm.read_parquet(blobs_parquet, chunk_size=37))
    SkFromResp.resp = sklearn_start_resp(blobs, k, kind, random_start(5, len(blobs), k),
                                         **start)
    theirs = same_stop(ours, SkFromResp(**params).fit(blobs), blobs)
    assert theirs.n_iter_ > 3
    assert_same_model(ours, theirs, rtol=1e-8)


def test_a_given_start_is_checked_as_gaussian_mixture_checks_it(blobs):
    with pytest.raises(ValueError, match="'weights' should be normalized"):
        sm.BayesianGaussianMixture(2, weights_init=[0.5, 0.6]).fit(blobs)
    with pytest.raises(ValueError, match="'means' should have the shape"):
        sm.BayesianGaussianMixture(2, means_init=np.zeros((3, 3))).fit(blobs)
    with pytest.raises(ValueError, match="symmetric, positive-definite"):
        sm.BayesianGaussianMixture(2, precisions_init=-np.ones((2, 3, 3))).fit(blobs)
