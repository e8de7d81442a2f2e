"""GaussianMixture: scikit-learn's numbers from the same start, on every input and chunking."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.mixture import GaussianMixture as SkGMM

import streammix as sm
from streammix.exceptions import CollapsedComponentError, ConvergenceWarning, NotFittedError
from tests._compare import assert_labels_agree, same_stop
from tests.conftest import make_blobs

KINDS = ("full", "tied", "diag", "spherical")


def start_for(X, kind, k=3):
    """An explicit start some way from the optimum: perturbed data rows, broad precisions."""
    d = X.shape[1]
    precisions = {"full": np.tile(np.eye(d) * 0.3, (k, 1, 1)), "tied": np.eye(d) * 0.3,
                  "diag": np.full((k, d), 0.3), "spherical": np.full(k, 0.3)}[kind]
    rows = np.linspace(0, len(X) - 1, k).astype(int)
    return {"weights_init": np.full(k, 1 / k), "means_init": X[rows] + 0.7,
            "precisions_init": precisions, "covariance_type": kind}


def assert_same_model(ours, theirs, X, rtol=1e-6):
    """``theirs``: scikit-learn's model fitted on ``X`` (in memory)."""
    assert ours.converged_ == theirs.converged_
    theirs = same_stop(ours, theirs, X)  # within one iteration, compared at ours'
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        a, b = getattr(ours, name), getattr(theirs, name)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=rtol)
    np.testing.assert_allclose(ours.bic(X), theirs.bic(X), rtol=rtol)
    np.testing.assert_allclose(ours.aic(X), theirs.aic(X), rtol=rtol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [23, 1000])
def test_equals_sklearn_in_memory(blobs, kind, chunk_size):
    start = start_for(blobs, kind)
    theirs = SkGMM(3, tol=1e-6, max_iter=500, **start).fit(blobs)
    ours = sm.GaussianMixture(3, tol=1e-6, max_iter=500, chunk_size=chunk_size, **start).fit(blobs)
    assert theirs.n_iter_ > 3  # a real run, not a single step
    assert_same_model(ours, theirs, blobs)


@pytest.mark.parametrize("kind", KINDS)
def test_equals_sklearn_from_parquet_with_tiny_row_groups(blobs, blobs_parquet, kind):
    start = start_for(blobs, kind)
    theirs = SkGMM(3, tol=1e-6, max_iter=500, **start).fit(blobs)
    for chunk_size in (37, 150):
        ours = sm.GaussianMixture(3, tol=1e-6, max_iter=500, chunk_size=chunk_size, **start)
        ours.fit(blobs_parquet)
        assert_same_model(ours, theirs, blobs)
        np.testing.assert_array_equal(ours.feature_names_in_, ["f0", "f1", "f2"])


@pytest.mark.parametrize("kind", KINDS)
def test_equals_sklearn_from_zarr(blobs, blobs_zarr, kind):
    start = start_for(blobs, kind)
    theirs = SkGMM(3, tol=1e-6, max_iter=500, **start).fit(blobs)
    ours = sm.GaussianMixture(3, tol=1e-6, max_iter=500, chunk_size=50, **start).fit(blobs_zarr)
    assert_same_model(ours, theirs, blobs)


def test_predictions_equal_sklearn_and_are_lazy_out_of_core(blobs, blobs_parquet):
    start = start_for(blobs, "full")
    ours = sm.GaussianMixture(3, chunk_size=64, **start).fit(blobs)
    theirs = same_stop(ours, SkGMM(3, **start).fit(blobs), blobs)
    assert_labels_agree(ours.predict(blobs), theirs.predict(blobs))
    np.testing.assert_allclose(ours.predict_proba(blobs), theirs.predict_proba(blobs), atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(blobs), theirs.score_samples(blobs), rtol=1e-9)
    np.testing.assert_allclose(ours.score(blobs), theirs.score(blobs), rtol=1e-9)
    lazy = ours.predict(blobs_parquet)
    assert type(lazy).__module__.startswith("dask")
    # the same model and rows: a row's label does not depend on its chunk (by design)
    np.testing.assert_array_equal(lazy.compute(), ours.predict(blobs))
    # fit_predict: the labels of the final parameters, as scikit-learn's
    assert_labels_agree(ours.fit_predict(blobs), theirs.predict(blobs))


@pytest.mark.parametrize("kind", KINDS)
def test_offset_by_1e6_keeps_precision(kind):
    """Means shift by exactly 1e6, covariances change < 1e-6 relative (scikit-learn's do not)."""
    X = make_blobs(600, seed=5)
    start = start_for(X, kind)
    far_start = {**start, "means_init": start["means_init"] + 1e6}
    opts = {"tol": 0.0, "max_iter": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Warning)  # both libraries' ConvergenceWarning
        near = sm.GaussianMixture(3, chunk_size=97, **opts, **start).fit(X)
        far = sm.GaussianMixture(3, chunk_size=97, **opts, **far_start).fit(X + 1e6)
        sk_near = SkGMM(3, **opts, **start).fit(X)
        sk_far = SkGMM(3, **opts, **far_start).fit(X + 1e6)
    np.testing.assert_allclose(far.means_ - 1e6, near.means_, atol=1e-6)
    np.testing.assert_allclose(far.covariances_, near.covariances_, rtol=1e-6)
    sk_error = np.abs(sk_far.covariances_ - sk_near.covariances_).max() / np.abs(
        sk_near.covariances_).max()
    if kind != "full":  # scikit-learn's raw second moments: the test data is hard enough
        assert sk_error > 1e-6


def test_each_chunk_read_once_per_iteration(blobs, blobs_parquet, read_counter):
    model = sm.GaussianMixture(3, chunk_size=60, tol=1e-6, cache=False,
                               **start_for(blobs, "full"))
    model.fit(blobs_parquet)
    assert model.n_iter_ > 3
    assert set(read_counter.values()) == {model.n_iter_}
    read_counter.clear()
    cached = sm.GaussianMixture(3, chunk_size=60, tol=1e-6, cache=True,
                                **start_for(blobs, "full")).fit(blobs_parquet)
    assert set(read_counter.values()) == {1}  # iterations 2..n read memory
    # The same rows from another buffer (row-major views instead of fresh copies of
    # decoded columns): equal to rounding, not to the bit (a BLAS may round by alignment).
    np.testing.assert_allclose(cached.means_, model.means_, rtol=1e-12)


@pytest.mark.parametrize(("available", "reads"), [(1 << 40, {1}), (1 << 10, None)])
def test_auto_cache_follows_available_memory(blobs, blobs_parquet, read_counter, monkeypatch,
                                             available, reads):
    """cache="auto" keeps the chunks when they fit in half the available memory, else re-reads."""
    monkeypatch.setattr("streammix.engine.engine.available_memory", lambda: available)
    model = sm.GaussianMixture(3, chunk_size=60, tol=1e-6, **start_for(blobs, "full"))
    model.fit(blobs_parquet)
    assert set(read_counter.values()) == (reads or {model.n_iter_})


@pytest.mark.parametrize(("init_params", "init_passes"), [("random", 1), ("k-means++", 1)])
def test_n_init_restarts_share_the_passes(blobs_parquet, read_counter, init_params, init_passes):
    reads = {}
    for n_init in (1, 4):
        read_counter.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sm.GaussianMixture(3, n_init=n_init, tol=0.0, max_iter=5, init_params=init_params,
                               random_state=0, chunk_size=60, cache=False).fit(blobs_parquet)
        reads[n_init] = dict(read_counter)
    # The same reads for 1 or 4 restarts: initialisation, then one pass per iteration.
    assert reads[1] == reads[4]
    assert set(reads[4].values()) - {init_passes + 5} <= {init_passes + 6}  # + a reference row


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_finds_the_clusters(blobs, init_params):
    best = SkGMM(3, n_init=5, random_state=0).fit(blobs).lower_bound_
    ours = sm.GaussianMixture(3, init_params=init_params, n_init=3, random_state=1, max_iter=300)
    ours.fit(blobs)
    assert ours.lower_bound_ == pytest.approx(best, abs=1e-3)
    again = sm.GaussianMixture(3, init_params=init_params, n_init=3, random_state=1, max_iter=300)
    # the same seed, the same computation replayed: the same bits
    np.testing.assert_array_equal(again.fit(blobs).means_, ours.means_)


def test_init_is_chunking_invariant_for_random_resp(blobs):
    fits = [sm.GaussianMixture(3, init_params="random", random_state=3, max_iter=2, tol=0,
                               chunk_size=size) for size in (17, 600)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = (m.fit(blobs) for m in fits)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)


def test_warm_start_continues_like_sklearn(blobs):
    start = start_for(blobs, "diag")
    theirs = SkGMM(3, warm_start=True, max_iter=2, tol=1e-9, **start)
    ours = sm.GaussianMixture(3, warm_start=True, max_iter=2, tol=1e-9, chunk_size=50, **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Warning)
        for _ in range(3):
            theirs.fit(blobs)
            ours.fit(blobs)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-9)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-9)


def test_float32_stays_close_to_float64(blobs):
    start = start_for(blobs, "full")
    double = sm.GaussianMixture(3, **start).fit(blobs)
    single = sm.GaussianMixture(3, dtype="float32", **start).fit(blobs)
    np.testing.assert_allclose(single.means_, double.means_, atol=1e-4)
    np.testing.assert_allclose(single.covariances_, double.covariances_, atol=1e-4)
    # float32 arithmetic gives float32 attributes, as in scikit-learn (statistics add up in
    # float64, which is why the numbers stay this close).
    assert single.means_.dtype == single.covariances_.dtype == np.float32
    assert double.means_.dtype == np.float64
    auto = sm.GaussianMixture(3, **start).fit(blobs.astype(np.float32))  # dtype follows input
    assert auto.means_.dtype == np.float32
    np.testing.assert_allclose(auto.means_, single.means_, rtol=1e-6)


def test_float32_warns_when_clusters_are_far_apart_for_its_digits():
    """Centred on one reference, float32 moments cancel log10(separation^2) digits."""
    rng = np.random.default_rng(0)
    for separation, expect_warning in ((3, False), (100, True)):
        centers = rng.standard_normal((4, 8)) * separation
        X = centers[rng.integers(0, 4, 4000)] + rng.standard_normal((4000, 8))
        start = {"means_init": centers, "weights_init": np.full(4, 0.25), "max_iter": 5}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            single = sm.GaussianMixture(4, dtype="float32", **start).fit(X)
            double = sm.GaussianMixture(4, **start).fit(X)
        precision = [w for w in caught if issubclass(w.category, sm.PrecisionWarning)]
        assert len(precision) > 0 if expect_warning else not precision, separation
        error = np.abs(single.covariances_ - double.covariances_).max()
        # silent where float32 keeps within 1e-4 of float64; a warning where it misses
        assert (error > 1e-4) == expect_warning, (separation, error)


def test_collapsing_component_gives_a_clear_error():
    X = np.concatenate([np.random.default_rng(0).normal(size=(50, 2)), np.full((5, 2), 9.0)])
    for seed in range(3):  # whichever index the duplicates' component gets
        model = sm.GaussianMixture(2, reg_covar=0.0, random_state=seed,
                                   means_init=[[0.0, 0.0], [9.0, 9.0]])
        with pytest.raises(CollapsedComponentError,
                           match=r"ill-defined .*increase reg_covar.*component [01]"):
            model.fit(X)
    regularised = sm.GaussianMixture(2, random_state=0, means_init=[[0.0, 0.0], [9.0, 9.0]])
    assert regularised.fit(X).converged_


def test_save_and_load_round_trip(tmp_path, blobs_parquet, blobs):
    model = sm.GaussianMixture(3, covariance_type="tied", random_state=0).fit(blobs_parquet)
    model.save(tmp_path / "m.npz")
    loaded = sm.load(tmp_path / "m.npz")
    assert loaded.get_params() == model.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "feature_names_in_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert (loaded.n_iter_, loaded.converged_, loaded.lower_bound_) == (
        model.n_iter_, model.converged_, model.lower_bound_)
    np.testing.assert_array_equal(loaded.predict(blobs), model.predict(blobs))


def test_load_refuses_damaged_foreign_and_newer_files(tmp_path, blobs):
    import json
    import zipfile

    model = sm.GaussianMixture(2, random_state=0).fit(blobs)
    model.save(tmp_path / "m.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "m.npz").read_bytes()[:300])
    with pytest.raises(sm.ModelFileError, match=r"cut.npz: not a streammix model file"):
        sm.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", a=np.ones(3))
    with pytest.raises(sm.ModelFileError, match=r"foreign.npz"):
        sm.load(tmp_path / "foreign.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        meta = json.loads(bytes(np.load(z.open("__meta__.npy"))).decode())
    meta["version"] = 99
    np.savez(tmp_path / "new.npz", __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(sm.ModelFileError, match=r"version 99, newer"):
        sm.load(tmp_path / "new.npz")
    with pytest.raises(sm.ModelFileError, match=r"no such model file"):
        sm.load(tmp_path / "absent.npz")


def test_clone_get_params_and_not_fitted():
    model = sm.GaussianMixture(4, covariance_type="diag", chunk_size=10, random_state=3)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert "covariance_type='diag'" in repr(model)
    with pytest.raises(NotFittedError):
        model.predict(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Invalid parameter"):
        model.set_params(nope=1)


def test_bad_parameters_and_inputs(blobs):
    with pytest.raises(ValueError, match=r"n_samples >= n_components"):
        sm.GaussianMixture(5).fit(blobs[:3])
    with pytest.raises(ValueError, match=r"covariance_type"):
        sm.GaussianMixture(2, covariance_type="round").fit(blobs)
    with pytest.raises(ValueError, match=r"parameter 'means' should have the shape of \(2, 3\)"):
        sm.GaussianMixture(2, means_init=np.zeros((3, 3))).fit(blobs)
    model = sm.GaussianMixture(2, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match=r"X has 2 features, but GaussianMixture is expecting 3"):
        model.predict(blobs[:, :2])


def test_sample_follows_the_model(blobs):
    model = sm.GaussianMixture(3, random_state=0).fit(blobs)
    X, y = model.sample(60_000)
    assert X.shape == (60_000, 3) and np.all(np.diff(y) >= 0)
    for k in range(3):
        np.testing.assert_allclose(X[y == k].mean(0), model.means_[k], atol=0.05)
        np.testing.assert_allclose(np.cov(X[y == k].T), model.covariances_[k], atol=0.05)
    np.testing.assert_allclose(np.bincount(y) / len(y), model.weights_, atol=0.01)


def test_predict_after_named_fit_accepts_lists_frames_and_reads_fitted_columns(tmp_path, blobs):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame(blobs, columns=["a", "b", "c"])
    model = sm.GaussianMixture(3, random_state=0).fit(frame)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    expected = model.predict(blobs)  # other containers, the same per-row code: the same labels
    np.testing.assert_array_equal(model.predict(blobs[:5].tolist()), expected[:5])
    np.testing.assert_array_equal(model.predict(frame), expected)
    # Parquet with extra columns: only the fitted ones are read, in fitted order.
    table = pa.table({"c": blobs[:, 2], "id": np.arange(len(blobs)), "a": blobs[:, 0],
                      "b": blobs[:, 1]})
    pq.write_table(table, tmp_path / "more.parquet")
    np.testing.assert_array_equal(model.predict(tmp_path / "more.parquet").compute(), expected)
    with pytest.raises(ValueError, match=r"feature names should match those that were passed"):
        model.predict(pd.DataFrame(blobs, columns=["x", "y", "z"]))
