"""scipy.sparse input for k-means: scikit-learn's numbers, chunk by chunk, never densified."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans as SkKMeans

import streammix as sm
from tests._compare import assert_labels_agree, same_stop

X = sp.random(1500, 300, density=0.05, random_state=0, format="csr")
X.data = np.abs(X.data)
INIT = X[[0, 1, 2, 3]].toarray()


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("chunk_size", [None, 211])
def test_kmeans_on_sparse_input_matches_scikit_learn(fmt, chunk_size):
    data = X.asformat(fmt)
    weights = np.random.default_rng(0).integers(1, 4, X.shape[0]).astype(float)
    ours = sm.KMeans(4, init=INIT, n_init=1, chunk_size=chunk_size).fit(data, sample_weight=weights)
    theirs = SkKMeans(4, init=INIT, n_init=1).fit(data, sample_weight=weights)
    theirs = same_stop(ours, theirs, data, sample_weight=weights)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-10,
                               atol=1e-14)
    np.testing.assert_allclose(ours.inertia_, theirs.inertia_, rtol=1e-10)
    assert_labels_agree(ours.labels_, theirs.labels_)
    assert_labels_agree(ours.predict(data), theirs.predict(data))
    np.testing.assert_allclose(ours.transform(data), theirs.transform(data), atol=1e-7)
    np.testing.assert_allclose(ours.score(data), theirs.score(data), rtol=1e-10)
    # the same rows dense give the same model
    dense = sm.KMeans(4, init=INIT, n_init=1).fit(X.toarray(), sample_weight=weights)
    dense = same_stop(ours, dense, X.toarray(), sample_weight=weights)
    np.testing.assert_allclose(ours.cluster_centers_, dense.cluster_centers_, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random", "k-means||"])
def test_sparse_seedings_reach_scikit_learns_inertia(init):
    theirs = SkKMeans(4, n_init=10, random_state=0).fit(X).inertia_
    ours = sm.KMeans(4, init=init, n_init=3, random_state=0).fit(X).inertia_
    assert ours <= 1.02 * theirs


def test_minibatch_on_sparse_input_fit_and_partial_fit():
    theirs = SkKMeans(4, n_init=10, random_state=0).fit(X).inertia_
    ours = sm.MiniBatchKMeans(4, batch_size=300, random_state=0).fit(X)
    assert ours.inertia_ <= 1.05 * theirs
    streaming = sm.MiniBatchKMeans(4, batch_size=300, random_state=0)
    for start in range(0, X.shape[0], 300):
        streaming.partial_fit(X[start : start + 300])
    assert streaming.score(X) >= -1.1 * theirs


def test_wide_sparse_data_is_never_densified():
    # 2,000 x 500,000: 8 GB dense; a few centres and per-chunk statistics are all that is dense.
    rng = np.random.default_rng(1)
    nnz = 20_000
    wide = sp.csr_matrix((rng.random(nnz), (rng.integers(0, 2000, nnz),
                                            rng.integers(0, 500_000, nnz))), shape=(2000, 500_000))
    tracemalloc.start()
    try:
        model = sm.KMeans(3, random_state=0, chunk_size=500).fit(wide)
        model.predict(wide)
        model.transform(wide)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.cluster_centers_.shape == (3, 500_000)
    assert peak < 500e6  # bytes: centres-sized arrays only


def test_gaussian_mixture_refuses_sparse_input_as_scikit_learn_does():
    with pytest.raises(TypeError, match=r"Sparse data was passed .* dense data is required"):
        sm.GaussianMixture(2).fit(X)


def test_nan_in_sparse_input_is_located():
    bad = X.copy()
    bad.data[10] = np.nan
    row = int(np.searchsorted(bad.indptr, 10, side="right") - 1)
    with pytest.raises(sm.DataError, match=rf"row {row}: value nan is not finite"):
        sm.KMeans(4, random_state=0).fit(bad)
