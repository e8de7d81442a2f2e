"""sample_weight: against scikit-learn, against repeated rows, and from a Parquet column."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.cluster import KMeans as SkKMeans

import streammix as sm
from streammix.exceptions import CheckpointError
from tests._compare import assert_labels_agree, same_stop

rng = np.random.default_rng(7)
X = rng.permutation(np.concatenate([rng.normal(0, 1, (400, 3)), rng.normal(5, 1, (400, 3)),
                                    rng.normal((0, 6, 0), 1, (400, 3))]))
W = rng.integers(0, 4, len(X)).astype(float)  # integer weights, zeros included
INIT = X[:3]
PRECISIONS = {"full": np.stack([np.eye(3)] * 3), "tied": np.eye(3), "diag": np.ones((3, 3)),
              "spherical": np.ones(3)}


def weighted_parquet(path, weights=W, row_group_size=97):
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "w": weights})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("chunk_size", [None, 61])
def test_kmeans_weights_match_scikit_learn_from_the_same_init(chunk_size):
    ours = sm.KMeans(3, init=INIT, n_init=1, chunk_size=chunk_size).fit(X, sample_weight=W)
    theirs = SkKMeans(3, init=INIT, n_init=1).fit(X, sample_weight=W)
    theirs = same_stop(ours, theirs, X, sample_weight=W)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-10)
    assert_labels_agree(ours.labels_, theirs.labels_)
    np.testing.assert_allclose(ours.score(X, sample_weight=W), theirs.score(X, sample_weight=W),
                               rtol=1e-10)


def test_kmeans_weight_column_of_parquet_equals_the_weight_array(tmp_path):
    path = weighted_parquet(tmp_path / "w.parquet")
    source = sm.read_parquet(path, weight_column="w")
    ours = sm.KMeans(3, init=INIT, n_init=1).fit(source)
    theirs = SkKMeans(3, init=INIT, n_init=1).fit(X, sample_weight=W)
    assert list(ours.feature_names_in_) == ["a", "b", "c"]  # the weight is not a feature
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-10)


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
def test_gmm_integer_weights_equal_repeated_rows(kind):
    start = {"weights_init": [0.3, 0.3, 0.4], "means_init": INIT,
             "precisions_init": PRECISIONS[kind]}
    weighted = sm.GaussianMixture(3, covariance_type=kind, chunk_size=53, **start).fit(
        X, sample_weight=W)
    repeated_rows = np.repeat(X, W.astype(int), axis=0)
    repeated = sm.GaussianMixture(3, covariance_type=kind, **start).fit(repeated_rows)
    repeated = same_stop(weighted, repeated, repeated_rows)  # other sums: within one iteration
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_, rtol=1e-10)


def test_gmm_weights_from_a_parquet_column_and_zarr_with_an_aligned_array(tmp_path):
    import zarr

    start = {"weights_init": [0.3, 0.3, 0.4], "means_init": INIT,
             "precisions_init": PRECISIONS["full"]}
    reference = sm.GaussianMixture(3, **start).fit(X, sample_weight=W)
    from_column = sm.GaussianMixture(3, **start).fit(
        sm.read_parquet(weighted_parquet(tmp_path / "w.parquet"), weight_column="w"))
    store = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=X.shape, chunks=(101, 3),
                              dtype="f8")
    store[:] = X
    from_zarr = sm.GaussianMixture(3, **start).fit(str(tmp_path / "x.zarr"), sample_weight=W)
    for model in (from_column, from_zarr):
        np.testing.assert_allclose(model.means_, reference.means_, rtol=1e-10)
        np.testing.assert_allclose(model.lower_bound_, reference.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random", "k-means||"])
def test_weighted_seeding_ignores_rows_of_weight_zero(init):
    # Rows of weight 0 far away: a weighted seeding never puts a centre there.
    far = np.concatenate([X, np.full((50, 3), 1000.0)])
    weights = np.concatenate([np.ones(len(X)), np.zeros(50)])
    model = sm.KMeans(3, init=init, random_state=0).fit(far, sample_weight=weights)
    assert np.abs(model.cluster_centers_).max() < 20
    reference = SkKMeans(3, n_init=10, random_state=0).fit(X).inertia_
    assert model.inertia_ <= 1.01 * reference


def test_minibatch_weights_stay_close_to_weighted_kmeans():
    theirs = SkKMeans(3, n_init=10, random_state=0).fit(X, sample_weight=W).inertia_
    ours = sm.MiniBatchKMeans(3, batch_size=100, random_state=0, n_workers=1).fit(
        X, sample_weight=W)
    assert ours.inertia_ <= 1.02 * theirs
    ones = sm.MiniBatchKMeans(3, batch_size=100, random_state=0, n_workers=1)
    np.testing.assert_allclose(ones.fit(X, sample_weight=np.ones(len(X))).cluster_centers_,
                               ones.fit(X).cluster_centers_, rtol=1e-12)


@pytest.mark.parametrize("weights, message", [
    (np.where(np.arange(len(X)) == 4, -1.0, 1.0), r"row 4: Negative values in data passed to "
                                                  r"sample_weight"),
    (np.where(np.arange(len(X)) == 3, np.nan, 1.0), r"row 3: Input sample_weight contains NaN"),
    (np.zeros(len(X)), r"at least one non-zero"),
    (W[:5], r"sample_weight.shape == \(5,\), expected \(1200,\)"),
    (np.ones((len(X), 1)), r"1D array or scalar"),
])
@pytest.mark.parametrize("Model", [sm.KMeans, sm.MiniBatchKMeans, sm.GaussianMixture])
def test_bad_weights_get_scikit_learn_errors(Model, weights, message):
    with pytest.raises(ValueError, match=message):
        Model(3).fit(X, sample_weight=weights)


def test_a_bad_weight_in_parquet_is_located(tmp_path):
    weights = W.copy()
    weights[250] = -2.0
    path = weighted_parquet(tmp_path / "bad.parquet", weights)
    with pytest.raises(sm.DataError, match=r"bad.parquet, row group 2, column 'w', row 250: "
                                           r"Negative values"):
        sm.KMeans(3).fit(sm.read_parquet(path, weight_column="w"))
    with pytest.raises(sm.DataError, match=r"column 'w': is the weight column"):
        sm.read_parquet(path, columns=["a", "w"], weight_column="w")


def test_other_weights_are_another_fit_for_a_checkpoint(tmp_path):
    sm.KMeans(3, init=INIT, n_init=1, checkpoint=tmp_path / "c").fit(X, sample_weight=W)
    with pytest.raises(CheckpointError, match=r"different data"):
        sm.KMeans(3, init=INIT, n_init=1, checkpoint=tmp_path / "c").fit(
            X, sample_weight=W + 1)
