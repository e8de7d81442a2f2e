"""streammix's estimators under scikit-learn's own estimator checks and tools."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import streammix as sm

#: Checks expected to fail, with the reason (scikit-learn marks the same two
#: checks as expected failures for its own KMeans and MiniBatchKMeans).
SHUFFLED_REPEATS = (
    "the check repeats rows by their integer weights and then shuffles them; a random "
    "seeding draws other rows from shuffled data, so the fits agree in distribution, not per "
    "draw. From a fixed init, integer weights equal repeated rows exactly "
    "(tests/estimators/test_sample_weight.py)")
EXPECTED_FAILURES = {
    "KMeans": {"check_sample_weight_equivalence_on_dense_data": SHUFFLED_REPEATS,
               "check_sample_weight_equivalence_on_sparse_data": SHUFFLED_REPEATS},
    "MiniBatchKMeans": {"check_sample_weight_equivalence_on_dense_data": SHUFFLED_REPEATS,
                        "check_sample_weight_equivalence_on_sparse_data": SHUFFLED_REPEATS},
}


@parametrize_with_checks(
    [sm.GaussianMixture(), sm.BayesianGaussianMixture(), sm.KMeans(), sm.MiniBatchKMeans()],
    expected_failed_checks=lambda est: EXPECTED_FAILURES.get(type(est).__name__, {}))
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_exceptions_are_scikit_learn_exceptions():
    from sklearn.exceptions import ConvergenceWarning, NotFittedError

    with pytest.raises(NotFittedError):
        sm.KMeans().predict(np.zeros((2, 2)))
    X = np.random.default_rng(0).normal(size=(200, 2))
    with pytest.warns(ConvergenceWarning):
        sm.GaussianMixture(3, max_iter=1, random_state=0).fit(X)


def test_grid_search_over_n_components_scored_by_the_mean_log_likelihood():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.5, (150, 2)) for c in (0, 4, 8)])
    search = GridSearchCV(sm.GaussianMixture(random_state=0),
                          {"n_components": [1, 2, 3, 4]}, cv=3).fit(rng.permutation(X))
    assert search.best_params_["n_components"] >= 3
    # score is the held-out mean log-likelihood, as scikit-learn's GaussianMixture scores
    fold_scores = [search.cv_results_[f"split{i}_test_score"] for i in range(3)]
    assert np.all(np.isfinite(fold_scores))
    assert isinstance(search.best_estimator_, sm.GaussianMixture)


def test_cross_val_score_and_pipelines_with_kmeans():
    rng = np.random.default_rng(1)
    X = rng.permutation(np.concatenate([rng.normal(c, 0.5, (100, 3)) for c in (0, 5)]))
    scores = cross_val_score(sm.KMeans(2, random_state=0), X, cv=4)
    assert scores.shape == (4,) and np.all(scores < 0)  # minus the held-out inertia
    pipeline = make_pipeline(StandardScaler(), sm.KMeans(2, random_state=0)).fit(X)
    assert pipeline.predict(X).shape == (200,)
    names = make_pipeline(sm.KMeans(3, random_state=0)).fit(X).get_feature_names_out()
    assert list(names) == ["kmeans0", "kmeans1", "kmeans2"]


def test_set_output_pandas():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.default_rng(2).normal(size=(50, 2)), columns=["a", "b"])
    out = sm.KMeans(2, random_state=0).set_output(transform="pandas").fit(X).transform(X)
    assert list(out.columns) == ["kmeans0", "kmeans1"]


@pytest.mark.slow
def test_scikit_learn_own_test_files_pass(tmp_path):
    """sklearn/mixture/tests/test_gaussian_mixture.py, test_bayesian_mixture.py and
    sklearn/cluster/tests/test_k_means.py, pointed at streammix: no test fails or errors
    but the expected differences (non-strict xfails, each with its reason)."""
    script = Path(__file__).with_name("sklearn_suite.py")
    result = subprocess.run([sys.executable, str(script), "--report", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=600)
    shown = result.stdout[-5000:] + result.stderr[-2000:]
    assert (tmp_path / "r.json").exists(), shown
    report = json.loads((tmp_path / "r.json").read_text())
    outcomes = report["outcomes"]
    broken = sorted(test for test, outcome in outcomes.items() if outcome in ("failed", "error"))
    assert not broken, shown
    assert result.returncode == 0, shown
    # each file ran; each expected difference ran (and may pass where rounding allows)
    for name in ("test_gaussian_mixture.py", "test_bayesian_mixture.py", "test_k_means.py"):
        assert any(test.startswith(f"{name}::") and outcome == "passed"
                   for test, outcome in outcomes.items()), name
    for test in report["differences"]:
        assert outcomes.get(test) in ("xfailed", "xpassed"), (test, outcomes.get(test))


def test_dataframe_input_names_a_non_numeric_column_and_takes_nullable_ones():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": ["x", "y", "z", "w"]})
    with pytest.raises(sm.DataError, match=r"column 'b': is not numeric"):
        sm.KMeans(2).fit(frame)
    frame = pd.DataFrame({"a": [1.0, 2, 3, 4], "c": pd.array([1, 2, 3, 4], dtype="Int64")})
    model = sm.KMeans(2, random_state=0).fit(frame)
    assert list(model.feature_names_in_) == ["a", "c"]
