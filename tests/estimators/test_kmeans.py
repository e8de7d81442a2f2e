"""KMeans: scikit-learn's numbers from the same init, k-means|| quality and cost."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs as sk_blobs

import streammix as sm
from streammix.exceptions import ConvergenceWarning
from tests._compare import assert_labels_agree, same_stop
from tests.conftest import make_blobs, write_table

X = make_blobs(3000, seed=2)
INIT = X[[0, 1, 2, 1500, 2999]] + 0.3  # a start that needs dozens of iterations


def assert_same(ours, theirs, labels=True):
    """``theirs``: scikit-learn's model fitted on ``X``; returns it, stopped where ours did."""
    theirs = same_stop(ours, theirs, X)  # within one iteration, compared at ours'
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-7,
                               atol=1e-9)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-7)
    if labels:
        assert_labels_agree(ours.labels_, theirs.labels_)
    return theirs


@pytest.mark.parametrize("chunk_size", [37, 500, None])
@pytest.mark.parametrize("tol", [1e-4, 0.0])
def test_equals_sklearn_in_memory(chunk_size, tol):
    theirs = SkKMeans(5, init=INIT, n_init=1, tol=tol).fit(X)
    ours = sm.KMeans(5, init=INIT, tol=tol, chunk_size=chunk_size).fit(X)
    assert theirs.n_iter_ >= 9  # dozens with tol=0
    assert_same(ours, theirs)


@pytest.mark.parametrize("row_group", [29, 400, 3000])
def test_equals_sklearn_from_parquet(tmp_path, row_group):
    path = write_table(tmp_path / "x.parquet", X, row_group)
    ours = sm.KMeans(5, init=INIT, tol=1e-6, chunk_size=100).fit(path)
    theirs = assert_same(ours, SkKMeans(5, init=INIT, n_init=1, tol=1e-6).fit(X), labels=False)
    assert not hasattr(ours, "labels_")  # out-of-core: no labels kept
    assert_labels_agree(ours.predict(path).compute(), theirs.labels_)
    np.testing.assert_allclose(ours.score(path), theirs.score(X), rtol=1e-9)


def test_column_major_rows_give_the_row_major_fit():
    # Column-major chunks (pandas, decoded Parquet) are copied row-major a group of
    # tiles at a time: the same tiles, in other buffers. Equal to rounding (a BLAS may
    # round by alignment); a misplaced group would move whole tiles of labels.
    rows = np.repeat(X, 14, axis=0)[:40_000]  # several groups of tiles, and a partial one
    ours = sm.KMeans(5, init=INIT, tol=0, max_iter=5).fit(rows)
    columns = sm.KMeans(5, init=INIT, tol=0, max_iter=5).fit(np.asfortranarray(rows))
    np.testing.assert_allclose(columns.cluster_centers_, ours.cluster_centers_, rtol=1e-12)
    assert_labels_agree(columns.labels_, ours.labels_)
    np.testing.assert_allclose(columns.inertia_, ours.inertia_, rtol=1e-12)


def test_predict_transform_score_equal_sklearn():
    ours = sm.KMeans(5, init=INIT, chunk_size=128).fit(X)
    theirs = same_stop(ours, SkKMeans(5, init=INIT, n_init=1).fit(X), X)
    assert_labels_agree(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-9)
    np.testing.assert_allclose(ours.score(X), theirs.score(X), rtol=1e-9)
    # fit_*: the labels and distances of the final centres, as scikit-learn's
    assert_labels_agree(ours.fit_predict(X), theirs.labels_)
    np.testing.assert_allclose(ours.fit_transform(X), theirs.transform(X), rtol=1e-9)


def test_empty_cluster_is_relocated_like_sklearn():
    # The last initial centre is far from every row, so its cluster starts empty.
    init = np.vstack([INIT[:4], [[1e3, 1e3, 1e3]]])
    theirs = SkKMeans(5, init=init, n_init=1).fit(X)
    ours = sm.KMeans(5, init=init, chunk_size=50).fit(X)
    assert_same(ours, theirs)
    assert np.abs(ours.cluster_centers_).max() < 100  # it did move


def test_kmeans_parallel_quality_from_parquet(tmp_path, read_counter):
    data, _ = sk_blobs(20_000, n_features=5, centers=20, random_state=0)
    pq.write_table(pa.table({f"x{i}": data[:, i] for i in range(5)}), tmp_path / "b.parquet",
                   row_group_size=1000)
    reference = SkKMeans(20, n_init=5, random_state=0).fit(data).inertia_
    ours = sm.KMeans(20, init="k-means||", max_iter=1, tol=0, random_state=0, chunk_size=2000,
                     cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(tmp_path / "b.parquet")
    # k-means||: 5 rounds + 1 weighting pass (+ one chunk for the first centre),
    # then 1 Lloyd pass and 1 final pass: at most rounds + 2 seeding passes.
    assert max(read_counter.values()) <= 5 + 2 + 2
    assert set(read_counter.values()) <= {8, 9}
    for seed in range(3):
        fitted = sm.KMeans(20, random_state=seed).fit(tmp_path / "b.parquet")  # auto: k-means||
        assert fitted.inertia_ <= 1.10 * reference


def test_kmeans_parallel_is_chunking_invariant():
    a = sm.KMeans(5, init="k-means||", random_state=3, chunk_size=41).fit(X)
    b = sm.KMeans(5, init="k-means||", random_state=3, chunk_size=1000).fit(X)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)


@pytest.mark.parametrize("init", ["k-means++", "random", "k-means||"])
def test_inits_reach_a_good_clustering_and_are_deterministic(init):
    reference = SkKMeans(3, n_init=10, random_state=0).fit(X).inertia_
    ours = sm.KMeans(3, init=init, n_init=3, random_state=1).fit(X)
    assert ours.inertia_ <= 1.01 * reference
    again = sm.KMeans(3, init=init, n_init=3, random_state=1).fit(X)
    # the same seed, the same computation replayed: the same bits
    np.testing.assert_array_equal(again.cluster_centers_, ours.cluster_centers_)


def test_callable_init_and_n_init_auto():
    calls = []

    def init(data, k, random_state):  # scikit-learn's call: a RandomState, by keyword
        assert isinstance(random_state, np.random.RandomState)
        calls.append(len(data))
        return data[:k]

    sm.KMeans(3, init=init, n_init=2, random_state=0).fit(X)
    assert calls == [len(X), len(X)]
    calls.clear()
    sm.KMeans(3, init=init, random_state=0).fit(X)  # n_init="auto" is 10 for callables
    assert len(calls) == 10


def test_n_init_restarts_share_the_passes(tmp_path, read_counter):
    path = write_table(tmp_path / "x.parquet", X, 200)
    reads = {}
    for n_init in (1, 4):
        read_counter.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sm.KMeans(5, init="random", n_init=n_init, max_iter=4, tol=0, random_state=0,
                      chunk_size=400, cache=False).fit(path)
        reads[n_init] = dict(read_counter)
    # one sampling pass, 4 Lloyd passes, one pass for the final inertia
    assert reads[1] == reads[4] and set(reads[4].values()) == {6}


def test_fewer_distinct_clusters_warns():
    data = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 10, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(2\)"):
        sm.KMeans(3, random_state=0).fit(data)


def test_bad_input_raises_like_sklearn():
    with pytest.raises(ValueError, match=r"n_samples=3 should be >= n_clusters=5"):
        sm.KMeans(5).fit(X[:3])
    with pytest.raises(ValueError, match=r"does not match the number of clusters 5"):
        sm.KMeans(5, init=INIT[:4]).fit(X)
    with pytest.raises(ValueError, match=r"number of features of the data 3"):
        sm.KMeans(5, init=INIT[:, :2]).fit(X)
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 7"):
        sm.KMeans(5, random_state=0).fit(bad)
    with pytest.warns(RuntimeWarning, match=r"only one init"):
        sm.KMeans(5, init=INIT, n_init=3).fit(X)


def test_save_load_and_clone(tmp_path):
    model = sm.KMeans(4, random_state=0).fit(X)
    model.save(tmp_path / "k.npz")
    loaded = sm.load(tmp_path / "k.npz")
    np.testing.assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.inertia_ == model.inertia_ and loaded.n_iter_ == model.n_iter_
    # the same centres, the same assignment: the labels the fit left
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    assert clone(model).get_params() == model.get_params()


def test_equals_sklearn_from_zarr_and_dask(tmp_path):
    import dask.array as da
    import zarr

    store = str(tmp_path / "x.zarr")
    zarr.create_array(store=store, shape=X.shape, chunks=(333, 3), dtype="f8")[:] = X
    fitted = SkKMeans(5, init=INIT, n_init=1, tol=1e-6).fit(X)
    for data in (store, da.from_array(X, chunks=(700, 3))):
        ours = sm.KMeans(5, init=INIT, tol=1e-6).fit(data)
        theirs = assert_same(ours, fitted, labels=False)
        assert_labels_agree(np.asarray(ours.predict(data)), theirs.labels_)
