"""Model selection: criteria equal scikit-learn's, the textbook picks, passes are shared."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

import streammix as sm


def textbook(seed=0):
    """scikit-learn's GMM-selection example: two elongated blobs and a round one, 1250 rows."""
    rng = np.random.default_rng(seed)
    stretched = rng.standard_normal((500, 2)) @ np.array([[0.0, -0.1], [1.7, 0.4]])
    round_ = 0.7 * rng.standard_normal((500, 2)) + np.array([-4, 1])
    rotated = rng.standard_normal((250, 2)) @ np.array([[0.3, 0.8], [-0.8, 0.1]]) + [4, 4]
    return np.concatenate([stretched, round_, rotated])


def test_textbook_dataset_picks_three_full_components():
    result = sm.select(textbook(), n_components=range(1, 7), random_state=0)
    assert (result.best_.n_components, result.best_.covariance_type) == (3, "full")
    assert len(result.table) == 6 * 4
    assert "3 full" in str(result).replace("  ", " ")


def test_every_criterion_equals_sklearn_on_that_candidates_parameters():
    X = textbook(1)
    result = sm.select(X, n_components=[1, 2, 4], covariance_types=["full", "tied", "diag",
                                                                     "spherical"],
                       random_state=0, chunk_size=200)
    for row, model in zip(result.table, result.models, strict=True):
        assert (row["n_components"], row["covariance_type"]) == (
            model.n_components, model.covariance_type)
        oracle = SkGMM(model.n_components, covariance_type=model.covariance_type, max_iter=1)
        oracle.fit(X[:50])  # to have a fitted object; its parameters are replaced next
        oracle._set_parameters((model.weights_, model.means_, model.covariances_,
                                model.precisions_cholesky_))
        np.testing.assert_allclose(row["bic"], oracle.bic(X), rtol=1e-9)
        np.testing.assert_allclose(row["aic"], oracle.aic(X), rtol=1e-9)
    best = int(np.argmin([row["bic"] for row in result.table]))
    assert result.best_ is result.models[best]


def test_the_grid_shares_every_pass(tmp_path, read_counter):
    from tests.conftest import write_table

    path = write_table(tmp_path / "t.parquet", textbook(2), 250)
    result = sm.select(path, n_components=range(1, 5), covariance_types=["full", "diag"],
                       init_params="k-means++", random_state=0, chunk_size=250, cache=False)
    longest = max(row["n_iter"] for row in result.table)
    # one sampling pass, one pass per iteration of the longest run, one criterion pass
    assert set(read_counter.values()) == {1 + longest + 1}


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"criterion must be one of"):
        sm.select(textbook(), criterion="icl")
    with pytest.raises(ValueError, match=r"covariance type must be one of"):
        sm.select(textbook(), covariance_types=["round"])
    with pytest.raises(ValueError, match=r"cannot be set for a model-selection grid"):
        sm.select(textbook(), n_components=[2], means_init=np.zeros((2, 2)))


@pytest.mark.parametrize("init_params, chunk_size", [("kmeans", None), ("k-means++", 300),
                                                     ("random_from_data", None)])
def test_every_candidate_equals_a_standalone_fit_with_its_parameters(init_params, chunk_size):
    from sklearn.base import clone

    X = textbook(3)
    result = sm.select(X, n_components=range(1, 5), covariance_types=["full", "diag"],
                       init_params=init_params, n_init=2, random_state=0, chunk_size=chunk_size)
    for model in result.models:  # every candidate, not only the best
        # A candidate's statistics come from its own step on the same chunks (the grid only
        # shares the reads): the same computation as alone, so the same bits.
        alone = clone(model).fit(X)
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_array_equal(getattr(alone, name), getattr(model, name))
        assert (alone.lower_bound_, alone.n_iter_) == (model.lower_bound_, model.n_iter_)


def test_every_kmeans_candidate_equals_a_standalone_fit():
    from sklearn.base import clone

    X = textbook(4)
    for init, n_init in (("k-means++", 1), ("random", 3), ("k-means||", 1)):
        result = sm.select_kmeans(X, n_clusters=range(2, 6), init=init, n_init=n_init,
                                  random_state=0)
        for model in result.models:
            alone = clone(model).fit(X)  # the same computation (see above): the same bits
            np.testing.assert_array_equal(alone.cluster_centers_, model.cluster_centers_)
            assert (alone.inertia_, alone.n_iter_) == (model.inertia_, model.n_iter_)
