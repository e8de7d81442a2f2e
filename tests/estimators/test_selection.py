"""Model selection: criteria equal scikit-learn's, the textbook picks, passes are shared."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
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
                       init_params="k-means++", n_init=1, random_state=0, chunk_size=250,
                       cache=False)
    longest = max(row["n_iter"] for row in result.table)
    # one sampling pass, one pass per iteration of the longest run, one criterion pass
    assert set(read_counter.values()) == {1 + longest + 1}


def test_screening_reads_the_data_once(tmp_path, read_counter):
    from tests.conftest import write_table

    path = write_table(tmp_path / "t.parquet", textbook(2), 250)
    result = sm.select(path, n_components=range(1, 5), covariance_types=["full", "diag"],
                       screen_size=300, random_state=0, chunk_size=250, cache=False)
    longest = max(row["n_iter"] for row in result.table)
    # the 10 starts per candidate run on the in-memory sample: one pass draws it, then
    # one pass per full-data iteration of the longest candidate, one criterion pass
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


def geron():
    """Geron's model-selection data (Hands-On ML, chapter 9): k=3 full is the answer."""
    from sklearn.datasets import make_blobs

    X1, _ = make_blobs(n_samples=1000, centers=((4, -4), (0, 0)), random_state=42)
    X1 = X1 @ np.array([[0.374, 0.95], [0.732, 0.598]])
    X2, _ = make_blobs(n_samples=250, centers=1, random_state=42)
    return np.concatenate([X1, X2 + np.array([6, -8])])


@pytest.mark.slow
def test_geron_data_gives_three_full_for_every_seed_with_the_defaults():
    X = geron()
    picks = []
    for seed in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("error", sm.SelectionWarning)  # 3 is inside 1..6: no warning
            result = sm.select(X, n_components=range(1, 7), random_state=seed)
        picks.append((result.best_.n_components, result.best_.covariance_type))
        assert result.n_init == 10 and result.screen_rows is None
    assert picks == [(3, "full")] * 20


def test_screened_candidates_equal_scikit_learn_from_their_start():
    X = geron()
    result = sm.select(X, n_components=[2, 3, 4], covariance_types=["full", "diag", "tied"],
                       screen_size=400, random_state=0)
    assert result.screen_rows == 400 and result.seconds > 0
    assert "screened on 400 sampled rows" in str(result)
    for model in result.models:
        # The full-data fit starts from the screened start the model carries: scikit-learn
        # from that start is the oracle of the parameters and of the iteration count.
        assert model.n_init == 1 and model.means_init is not None
        oracle = SkGMM(model.n_components, covariance_type=model.covariance_type,
                       weights_init=model.weights_init, means_init=model.means_init,
                       precisions_init=model.precisions_init).fit(X)
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_allclose(getattr(model, name), getattr(oracle, name),
                                       rtol=1e-6, atol=1e-9)
        # another library's rounding can cross tol one iteration apart: not a bit pattern
        assert abs(model.n_iter_ - oracle.n_iter_) <= 1
        np.testing.assert_allclose(model.lower_bound_, oracle.lower_bound_, rtol=1e-9)
        # and the candidate is its own standalone fit (clone keeps the start)
        alone = sm.GaussianMixture(**clone(model).get_params()).fit(X)
        np.testing.assert_allclose(alone.means_, model.means_, rtol=1e-12, atol=1e-12)
        assert alone.n_iter_ == model.n_iter_


def test_screened_start_is_the_best_of_n_init_fits_on_the_seeded_sample():
    X = geron()
    rng = np.random.default_rng(0)
    big = np.concatenate([X, X + rng.normal(0, 0.05, X.shape)])
    result = sm.select(big, n_components=[2, 3], covariance_types=["full", "diag"],
                       screen_size=600, random_state=3)
    # the sample: 600 rows drawn uniformly (in row order) with the seed apart from the fit's
    sample_rng = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(2**32 - 1,)))
    rows = np.sort(sample_rng.choice(len(big), size=600, replace=False))
    for model in result.models:
        # each start is what a standalone n_init=10 fit on the sample keeps (its best restart)
        screen = sm.GaussianMixture(model.n_components, covariance_type=model.covariance_type,
                                    n_init=10, random_state=3).fit(big[rows])
        np.testing.assert_allclose(model.means_init, screen.means_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(model.weights_init, screen.weights_, rtol=1e-10)
        np.testing.assert_allclose(model.precisions_init, screen.precisions_, rtol=1e-8)


def test_best_on_the_grids_edge_warns_in_python():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, (150, 2)) for c in ((0, 0), (5, 0), (0, 5), (5, 5))])
    with pytest.warns(sm.SelectionWarning, match=r"best k \(3 full\) is the largest"):
        sm.select(X, n_components=[1, 2, 3], covariance_types=["full"], random_state=0)
    with pytest.warns(sm.SelectionWarning, match=r"best k \(6 full\) is the smallest"):
        sm.select(X, n_components=[6, 7], covariance_types=["full"], random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sm.SelectionWarning)
        result = sm.select(X, n_components=range(1, 7), covariance_types=["full"],
                           random_state=0)
    assert result.best_.n_components == 4


def test_candidates_with_more_parameters_than_rows_are_left_out_by_default():
    from sklearn.datasets import load_wine

    X = load_wine().data[:80, [0, 6, 9]]  # 80 rows, 3 features
    d = X.shape[1]

    def free(k, kind):  # scikit-learn's count, written out
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k}[kind]
        return cov + k * d + k - 1

    kinds = ["full", "diag", "spherical"]
    grid = [(k, kind) for kind in kinds for k in range(1, 11)]
    over = [c for c in grid if free(*c) > len(X)]
    assert over == [(9, "full"), (10, "full")]  # the closed form: 10 k - 1 > 80
    with pytest.warns(sm.SelectionWarning, match=r"left out 2 candidate"):
        result = sm.select(X, n_components=range(1, 11), covariance_types=kinds,
                           random_state=0)
    assert result.skipped == over
    fitted = [(r["n_components"], r["covariance_type"]) for r in result.table]
    assert fitted == [c for c in grid if c not in over]
    forced = sm.select(X, n_components=range(1, 11), covariance_types=kinds, random_state=0,
                       allow_overparameterized=True)
    assert forced.skipped == [] and len(forced.table) == len(grid)
    with pytest.raises(ValueError, match=r"every candidate has more free parameters"):
        sm.select(X[:20], n_components=[3, 4], covariance_types=["full"], random_state=0)


def test_no_widen_upwards_advice_when_larger_k_were_left_out_for_the_rows():
    from sklearn.datasets import load_wine

    X = load_wine().data[:80]  # 13 features: diag has 27 k - 1 parameters, > 80 from k = 4
    X = (X - X.mean(0)) / X.std(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sm.select(X, n_components=range(1, 9), covariance_types=["diag"],
                           random_state=0)
    assert result.skipped == [(k, "diag") for k in range(4, 9)]
    messages = [str(w.message) for w in caught if issubclass(w.category, sm.SelectionWarning)]
    assert len(messages) == 1 and messages[0].startswith("left out 5 candidate(s)")
    # the same data and a grid that stops at 3 by choice: the edge warning is given
    with pytest.warns(sm.SelectionWarning, match="widen n_components"):
        narrow = sm.select(X, n_components=range(1, 4), covariance_types=["diag"],
                           random_state=0)
    assert narrow.best_.n_components == result.best_.n_components == 3


def test_select_is_deterministic_given_random_state():
    X = geron()
    a = sm.select(X, n_components=[2, 3], covariance_types=["full", "diag"], screen_size=500,
                  random_state=7)
    b = sm.select(X, n_components=[2, 3], covariance_types=["full", "diag"], screen_size=500,
                  random_state=7)
    np.testing.assert_allclose([r["bic"] for r in a.table], [r["bic"] for r in b.table],
                               rtol=1e-12)
