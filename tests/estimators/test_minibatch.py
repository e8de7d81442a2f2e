"""MiniBatchKMeans: streaming fit over any source, partial_fit, parallel steps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs as sk_blobs
from sklearn.metrics import v_measure_score

import streammix as sm
from tests.conftest import write_table

X, Y = sk_blobs(12_000, n_features=5, centers=3, random_state=0)


def test_partial_fit_in_300_row_calls_recovers_three_blobs():
    model = sm.MiniBatchKMeans(3, random_state=0)
    for start in range(0, len(X), 300):
        model.partial_fit(X[start : start + 300])
    assert model.n_steps_ == len(X) // 300
    assert v_measure_score(Y, model.predict(X)) > 0.95


def test_fit_streams_parquet_chunks_once_per_epoch(tmp_path, read_counter):
    path = write_table(tmp_path / "x.parquet", X, 500)
    model = sm.MiniBatchKMeans(3, batch_size=1000, max_iter=3, max_no_improvement=None,
                               random_state=0, n_workers=2, cache=False)
    model.fit(path)
    assert model.n_iter_ == 3 and not hasattr(model, "labels_")
    # a sampling pass, 3 epochs, and one pass for the final inertia
    assert set(read_counter.values()) == {1 + 3 + 1}
    # scikit-learn's count: mini-batches of batch_size rows, whatever the number of workers
    assert model.n_steps_ == 3 * len(X) // 1000
    one_worker = sm.MiniBatchKMeans(3, batch_size=1000, max_iter=3, max_no_improvement=None,
                                    random_state=0, n_workers=1, cache=False).fit(path)
    # counts set by max_iter (no early stop), not by rounding
    assert one_worker.n_steps_ == model.n_steps_ and one_worker.n_iter_ == model.n_iter_
    reference = SkKMeans(3, n_init=3, random_state=0).fit(X).inertia_
    assert model.inertia_ <= 1.01 * reference
    assert v_measure_score(Y, model.predict(path).compute()) > 0.95


def test_worker_count_keeps_quality_and_fits_are_deterministic():
    # (That one worker is exactly sequential mini-batch is tested in tests/core.)
    one = sm.MiniBatchKMeans(3, random_state=1, scheduler="synchronous").fit(X)
    two = sm.MiniBatchKMeans(3, random_state=1, n_workers=2).fit(X)
    again = sm.MiniBatchKMeans(3, random_state=1, n_workers=2).fit(X)
    # the same seed and workers, the same computation replayed: the same bits
    np.testing.assert_array_equal(two.cluster_centers_, again.cluster_centers_)
    assert abs(one.inertia_ - two.inertia_) <= 0.01 * one.inertia_
    assert v_measure_score(Y, one.labels_) > 0.95 and v_measure_score(Y, two.labels_) > 0.95


def test_starving_centres_are_reassigned():
    init = np.vstack([X[:2], [[500.0] * 5]])  # a centre no row will ever choose
    model = sm.MiniBatchKMeans(3, init=init, random_state=0, batch_size=300)
    model.partial_fit(X[:300])
    model.partial_fit(X[300:600])
    assert np.abs(model.cluster_centers_).max() < 100


def test_save_load_then_partial_fit_continues_identically(tmp_path):
    straight = sm.MiniBatchKMeans(3, random_state=2)
    resumed = sm.MiniBatchKMeans(3, random_state=2)
    for start in range(0, 3000, 300):
        straight.partial_fit(X[start : start + 300])
        if start == 1200:
            resumed.save(tmp_path / "m.npz")
            resumed = sm.load(tmp_path / "m.npz")
        resumed.partial_fit(X[start : start + 300])
    np.testing.assert_array_equal(resumed.cluster_centers_, straight.cluster_centers_)


def test_bad_input():
    with pytest.raises(ValueError, match=r"n_samples=2 should be >= n_clusters=3"):
        sm.MiniBatchKMeans(3).fit(X[:2])
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1"):
        sm.MiniBatchKMeans(3, batch_size=0).fit(X)
    bad = X[:600].copy()
    bad[5, 0] = np.inf
    with pytest.raises(sm.DataError, match=r"row 5"):
        sm.MiniBatchKMeans(3, random_state=0).fit(bad)
    assert clone(sm.MiniBatchKMeans(4, batch_size=7)).get_params()["batch_size"] == 7


@pytest.mark.parametrize("n_workers", [1, 2])
def test_rows_stored_sorted_give_scikit_learns_inertia(tmp_path, n_workers):
    # Two blobs stored one after the other, as a pipeline writes data sorted by group:
    # contiguous batches would see one blob at a time.
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(0, 1, (20_000, 2)), rng.normal(6, 1, (20_000, 2))])
    reference = SkKMeans(2, n_init=3, random_state=0).fit(data).inertia_
    path = write_table(tmp_path / "sorted.parquet", data, 2_000)
    for X in (data, path):
        model = sm.MiniBatchKMeans(2, random_state=0, n_workers=n_workers).fit(X)
        assert model.inertia_ <= 1.01 * reference
        np.testing.assert_allclose(np.sort(model.cluster_centers_[:, 0]), [0, 6], atol=0.05)
